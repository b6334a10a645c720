"""AioContext stepped by hand: exact progress and callback counts (test-aio)."""

from __future__ import annotations

import os
import socket

import pytest

from util.aio import (
    AIO_WAIT_WHILE,
    AioContext,
    aio_bh_new,
    aio_bh_poll,
    aio_bh_schedule_oneshot,
    aio_context_finalize,
    aio_notify,
    aio_poll,
    aio_set_fd_handler,
    aio_timer_new,
    qemu_bh_cancel,
    qemu_bh_delete,
    qemu_bh_schedule,
)
from util.thread import QemuEvent, qemu_thread_create
from util.timer import (
    QEMU_CLOCK_REALTIME,
    QEMU_CLOCK_VIRTUAL,
    SCALE_MS,
    SCALE_NS,
    qemu_clock_get_ns,
    qemu_clock_step,
    timer_del,
    timer_mod_ns,
    timer_pending,
)


@pytest.fixture
def ctx():
    c = AioContext("test")
    yield c
    aio_context_finalize(c)


class Counter:
    def __init__(self):
        self.n = 0

    def __call__(self, opaque):
        self.n += 1


def test_bh_schedule_runs_once_and_is_idempotent(ctx):
    count = Counter()
    bh = aio_bh_new(ctx, count, None, "count")
    assert aio_poll(ctx, False) is False
    qemu_bh_schedule(bh)
    qemu_bh_schedule(bh)
    assert aio_poll(ctx, False) is True
    assert count.n == 1
    assert aio_poll(ctx, False) is False
    assert count.n == 1
    qemu_bh_delete(bh)
    aio_poll(ctx, False)


def test_bh_cancel(ctx):
    count = Counter()
    bh = aio_bh_new(ctx, count, None, "count")
    qemu_bh_schedule(bh)
    qemu_bh_cancel(bh)
    assert aio_poll(ctx, False) is False
    assert count.n == 0
    qemu_bh_schedule(bh)
    assert aio_poll(ctx, False) is True
    assert count.n == 1
    qemu_bh_delete(bh)
    aio_poll(ctx, False)


def test_bh_delete_is_deferred_and_never_runs(ctx):
    count = Counter()
    bh = aio_bh_new(ctx, count, None, "count")
    qemu_bh_schedule(bh)
    qemu_bh_delete(bh)
    assert bh in ctx.live_bhs
    assert aio_poll(ctx, False) is False
    assert count.n == 0
    assert bh not in ctx.live_bhs


def test_bh_delete_from_its_own_callback(ctx):
    runs = []

    def cb(opaque):
        runs.append(1)
        qemu_bh_delete(bh)

    bh = aio_bh_new(ctx, cb, None, "self-deleting")
    qemu_bh_schedule(bh)
    assert aio_poll(ctx, False) is True
    assert runs == [1]
    assert aio_poll(ctx, False) is False
    assert bh not in ctx.live_bhs


def test_bh_scheduled_during_a_pass_runs_in_the_next(ctx):
    order = []

    def second(opaque):
        order.append("second")

    def first(opaque):
        order.append("first")
        qemu_bh_schedule(bh2)

    bh1 = aio_bh_new(ctx, first, None, "first")
    bh2 = aio_bh_new(ctx, second, None, "second")
    qemu_bh_schedule(bh1)
    assert aio_bh_poll(ctx) is True
    assert order == ["first"]
    assert aio_bh_poll(ctx) is True
    assert order == ["first", "second"]
    qemu_bh_delete(bh1)
    qemu_bh_delete(bh2)
    aio_poll(ctx, False)


def test_bh_rescheduling_itself_runs_once_per_pass(ctx):
    count = Counter()

    def cb(opaque):
        count(opaque)
        if count.n < 3:
            qemu_bh_schedule(bh)

    bh = aio_bh_new(ctx, cb, None, "again")
    qemu_bh_schedule(bh)
    for expected in (1, 2, 3):
        assert aio_poll(ctx, False) is True
        assert count.n == expected
    assert aio_poll(ctx, False) is False
    qemu_bh_delete(bh)
    aio_poll(ctx, False)


def test_oneshot(ctx):
    got = []
    aio_bh_schedule_oneshot(ctx, got.append, "x", "oneshot")
    assert aio_poll(ctx, False) is True
    assert got == ["x"]
    assert aio_poll(ctx, False) is False
    assert not ctx.live_bhs - {ctx.co_schedule_bh}


def test_finalize_names_a_leaked_bh():
    c = AioContext("leaky")
    aio_bh_new(c, Counter(), None, "forgotten_bh")
    with pytest.raises(AssertionError, match="forgotten_bh"):
        aio_context_finalize(c)


def test_timers_on_virtual_clock(ctx, virtual_clock):
    count = Counter()
    t = aio_timer_new(ctx, QEMU_CLOCK_VIRTUAL, SCALE_NS, count, None, "vt")
    timer_mod_ns(t, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + 1000)
    assert timer_pending(t)
    assert aio_poll(ctx, False) is False
    qemu_clock_step(999)
    assert aio_poll(ctx, False) is False
    qemu_clock_step(1)
    assert aio_poll(ctx, False) is True
    assert count.n == 1
    assert not timer_pending(t)
    timer_mod_ns(t, qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL) + 5)
    timer_del(t)
    qemu_clock_step(10)
    assert aio_poll(ctx, False) is False
    assert count.n == 1


def test_realtime_timer_bounds_a_blocking_poll(ctx):
    ctx.home_thread = None
    count = Counter()
    t = aio_timer_new(ctx, QEMU_CLOCK_REALTIME, SCALE_MS, count, None, "rt")
    timer_mod_ns(t, qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + 2 * SCALE_MS)
    while count.n == 0:
        aio_poll(ctx, True)
    assert count.n == 1


def test_fd_handlers_on_a_socketpair(ctx):
    a, b = socket.socketpair()
    got = []

    def on_read(opaque):
        got.append(opaque.recv(100))

    try:
        aio_set_fd_handler(ctx, a.fileno(), on_read, None, a)
        assert aio_poll(ctx, False) is False
        b.send(b"ping")
        assert aio_poll(ctx, True) is True
        assert got == [b"ping"]
        writes = Counter()
        aio_set_fd_handler(ctx, a.fileno(), None, writes, a)
        assert aio_poll(ctx, False) is True
        assert writes.n == 1
        aio_set_fd_handler(ctx, a.fileno(), None, None)
        b.send(b"more")
        assert aio_poll(ctx, False) is False
    finally:
        a.close()
        b.close()


def test_notify_from_another_thread_wakes_a_blocking_poll(ctx):
    ready = QemuEvent()
    got = []

    def other():
        ready.wait(5)
        aio_bh_schedule_oneshot(ctx, got.append, "from-thread", "cross")

    t = qemu_thread_create("notifier", other)
    ready.set()
    while not got:
        aio_poll(ctx, True)
    t.join(5)
    assert got == ["from-thread"]


def test_plain_notify_is_not_progress_and_does_not_spin(ctx):
    aio_notify(ctx)
    assert aio_poll(ctx, False) is False
    os.write(ctx.notifier.wfd, (1).to_bytes(8, "little"))
    assert aio_poll(ctx, False) is False
    assert ctx.epoll.poll(0) == []


def test_exception_in_a_bh_goes_to_the_sink(ctx, hygiene):
    def boom(opaque):
        raise ValueError("boom")

    aio_bh_schedule_oneshot(ctx, boom, None, "boom")
    aio_poll(ctx, False)
    assert [w for w, _ in hygiene] == ["BH boom in test"]
    hygiene.clear()


def test_aio_wait_while_polls_only_that_context(ctx):
    other = AioContext("other")
    try:
        state = {"done": False}
        aio_bh_schedule_oneshot(other, lambda o: state.update(done=True), None, "elsewhere")
        aio_bh_schedule_oneshot(ctx, lambda o: state.update(done=True), None, "here")
        assert AIO_WAIT_WHILE(ctx, lambda: not state["done"]) is True
        assert other.bh_list, "the other context must not have been polled"
        aio_poll(other, False)
    finally:
        aio_context_finalize(other)


def test_poll_from_the_wrong_thread_is_refused(ctx):
    ctx.home_thread = -1
    with pytest.raises(AssertionError, match="not its home thread"):
        aio_poll(ctx, False)
    ctx.home_thread = None


def test_a_refused_fd_leaves_no_handler(ctx, tmp_path):
    path = tmp_path / "regular"
    path.write_bytes(b"x")
    fd = os.open(path, os.O_RDONLY)
    try:
        with pytest.raises(PermissionError):
            aio_set_fd_handler(ctx, fd, Counter(), None)
        assert fd not in ctx.handlers
        aio_set_fd_handler(ctx, fd, None, None)  # removing nothing is fine
    finally:
        os.close(fd)
