"""IOThread lifecycle and work handed to it."""

from __future__ import annotations

import threading

import pytest

from util.aio import aio_bh_schedule_oneshot, aio_co_schedule, qemu_get_current_aio_context
from util.coroutine import qemu_coroutine_create, qemu_coroutine_yield
from util.iothread import (
    IOThreadState,
    iothread_create,
    iothread_destroy,
    iothread_get_aio_context,
    iothread_stop,
    qemu_in_iothread,
)
from util.thread import QemuEvent


@pytest.fixture
def iothread():
    it = iothread_create("test_io")
    yield it
    iothread_destroy(it)


def test_bh_runs_in_the_iothread(iothread):
    done = QemuEvent()
    seen = {}

    def bh(opaque):
        seen["thread"] = threading.current_thread().name
        seen["ctx"] = qemu_get_current_aio_context()
        seen["in_iothread"] = qemu_in_iothread()
        done.set()

    aio_bh_schedule_oneshot(iothread_get_aio_context(iothread), bh, None, "probe")
    assert done.wait(5)
    assert seen == {"thread": "IO test_io", "ctx": iothread.ctx, "in_iothread": True}


def test_stop_joins_and_is_idempotent(iothread):
    assert iothread.state is IOThreadState.RUNNING
    iothread_stop(iothread)
    assert iothread.state is IOThreadState.JOINED
    iothread_stop(iothread)
    assert not any(t.name == "IO test_io" for t in threading.enumerate())


def test_aio_co_schedule_into_the_iothread(iothread):
    events = []
    done = QemuEvent()

    yielding = QemuEvent()

    def body(opaque):
        events.append(("first", threading.current_thread().name))
        yielding.set()  # the wake below is a BH in this thread: it runs after the yield
        qemu_coroutine_yield()
        events.append(("second", threading.current_thread().name))
        done.set()

    created = QemuEvent()
    holder = {}

    def create_there(opaque):
        holder["co"] = qemu_coroutine_create(body, None, "io-co")
        created.set()
        aio_co_schedule(iothread.ctx, holder["co"])

    aio_bh_schedule_oneshot(iothread.ctx, create_there, None, "create")
    assert created.wait(5)
    assert yielding.wait(5)
    assert events == [("first", "IO test_io")]
    aio_co_schedule(iothread.ctx, holder["co"])
    assert done.wait(5)
    assert events[1] == ("second", "IO test_io")
