"""Coroutines on greenlet: enter/yield, nesting, wake-ups and the rules."""

from __future__ import annotations

import pytest

from util.aio import aio_co_enter, aio_co_schedule, aio_co_wake, aio_poll
from util.coroutine import (
    CoroutineError,
    qemu_coroutine_create,
    qemu_coroutine_enter,
    qemu_coroutine_self,
    qemu_coroutine_yield,
    qemu_in_coroutine,
)
from util.main_loop import qemu_get_aio_context
from util.thread import QemuMutex, qemu_thread_create


def test_enter_yield_reenter(main_loop):
    trail = []

    def body(opaque):
        trail.append(("start", opaque, qemu_in_coroutine()))
        qemu_coroutine_yield()
        trail.append(("resumed",))

    co = qemu_coroutine_create(body, 42, "body")
    assert not qemu_in_coroutine()
    qemu_coroutine_enter(co)
    assert trail == [("start", 42, True)]
    assert not qemu_in_coroutine()
    qemu_coroutine_enter(co)
    assert trail[-1] == ("resumed",)
    assert co.finished


def test_nested_coroutines_and_self(main_loop):
    trail = []

    def inner(opaque):
        trail.append(("inner", qemu_coroutine_self().name))
        qemu_coroutine_yield()
        trail.append(("inner-again", qemu_coroutine_self().name))

    def outer(opaque):
        trail.append(("outer", qemu_coroutine_self().name))
        qemu_coroutine_enter(opaque)
        trail.append(("back-in-outer", qemu_coroutine_self().name))
        qemu_coroutine_enter(opaque)

    co_in = qemu_coroutine_create(inner, None, "inner")
    co_out = qemu_coroutine_create(outer, co_in, "outer")
    qemu_coroutine_enter(co_out)
    assert trail == [
        ("outer", "outer"),
        ("inner", "inner"),
        ("back-in-outer", "outer"),
        ("inner-again", "inner"),
    ]
    assert co_in.finished and co_out.finished
    assert qemu_coroutine_self().name.startswith("leader:")


def test_yield_outside_a_coroutine_is_an_error(main_loop):
    with pytest.raises(CoroutineError, match="yielding to no one"):
        qemu_coroutine_yield()


def test_double_schedule_is_an_assertion(main_loop):
    def body(opaque):
        qemu_coroutine_yield()

    co = qemu_coroutine_create(body, None, "twice")
    qemu_coroutine_enter(co)
    ctx = qemu_get_aio_context()
    aio_co_schedule(ctx, co)
    with pytest.raises(CoroutineError, match="already scheduled"):
        aio_co_schedule(ctx, co)
    aio_poll(ctx, False)
    assert co.finished


def test_yield_while_holding_a_lock_is_an_assertion(main_loop):
    m = QemuMutex("mon_lock")
    caught = []

    def body(opaque):
        with m:
            try:
                qemu_coroutine_yield()
            except CoroutineError as e:
                caught.append(str(e))

    qemu_coroutine_enter(qemu_coroutine_create(body, None, "holder"))
    assert len(caught) == 1 and "mon_lock" in caught[0]


def test_yield_holding_only_the_bql_is_fine(main_loop):
    def body(opaque):
        qemu_coroutine_yield()

    co = qemu_coroutine_create(body, None, "bql-only")
    qemu_coroutine_enter(co)  # the test thread holds the BQL
    qemu_coroutine_enter(co)
    assert co.finished


def test_entering_from_a_wrong_thread_is_an_error(main_loop):
    def body(opaque):
        qemu_coroutine_yield()

    co = qemu_coroutine_create(body, None, "pinned")
    qemu_coroutine_enter(co)
    errors = []

    def elsewhere():
        try:
            qemu_coroutine_enter(co)
        except CoroutineError as e:
            errors.append(str(e))

    qemu_thread_create("intruder", elsewhere).join(5)
    assert errors and "entered from thread intruder" in errors[0]
    qemu_coroutine_enter(co)


def test_cross_thread_wake_via_aio_co_schedule(main_loop):
    trail = []

    def body(opaque):
        trail.append("yielding")
        qemu_coroutine_yield()
        trail.append("woken")

    co = qemu_coroutine_create(body, None, "sleeper")
    qemu_coroutine_enter(co)
    qemu_thread_create("waker", aio_co_wake, co).join(5)
    assert trail == ["yielding"]
    while len(trail) < 2:
        aio_poll(qemu_get_aio_context(), True)
    assert trail == ["yielding", "woken"]


def test_aio_co_enter_inside_a_coroutine_defers_until_it_yields(main_loop):
    trail = []

    def second(opaque):
        trail.append("second")

    def first(opaque):
        aio_co_enter(qemu_get_aio_context(), opaque)
        trail.append("first-continues")
        qemu_coroutine_yield()

    co2 = qemu_coroutine_create(second, None, "second")
    co1 = qemu_coroutine_create(first, co2, "first")
    qemu_coroutine_enter(co1)
    assert trail == ["first-continues", "second"]
    qemu_coroutine_enter(co1)
