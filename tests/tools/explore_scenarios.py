"""Scenarios for the explorer's own tests (loaded with ``--scenarios``).

Each one makes the scheduler meet one kind of failure on purpose, so the
tests can check the report: a deadlock through a join, a lock
order inversion, a hang with every thread blocked, a host call that blocks
outside the scheduler, and virtual time that jumps an hour without waiting.
"""

from __future__ import annotations

import os

from tools.explore.harness import Setup, fail, scenario
from util.thread import QemuEvent, QemuMutex, QemuThread
from util.timer import QEMU_CLOCK_REALTIME, qemu_clock_get_ns

HOUR_S = 3600.0


@scenario("test-join-cycle", "a thread joins another while holding the lock that one needs")
def join_cycle(s: Setup) -> None:
    lock = QemuMutex("test_lock")

    def child() -> None:
        with lock:
            pass

    def c0() -> None:
        with lock:
            QemuThread("t2", child).join()

    s.client("c0", c0)


@scenario("test-abba", "two threads take two locks in opposite orders")
def abba(s: Setup) -> None:
    a, b = QemuMutex("test_lock_a"), QemuMutex("test_lock_b")

    def take(first: QemuMutex, second: QemuMutex) -> None:
        with first:
            with second:
                pass

    s.client("t1", lambda: take(a, b))
    s.client("t2", lambda: take(b, a))


@scenario("test-hang", "a thread holds a lock and waits for an event only a lock holder sets")
def hang(s: Setup) -> None:
    lock = QemuMutex("test_lock")
    ev = QemuEvent(name="test_event")

    def waiter() -> None:
        with lock:
            ev.wait()

    def setter() -> None:
        with lock:
            ev.set()

    s.client("waiter", waiter)
    s.client("setter", setter)


@scenario("test-uncontrolled", "a client blocks in a host call no util primitive wraps")
def uncontrolled(s: Setup) -> None:
    rfd, wfd = os.pipe()

    def c0() -> None:
        os.read(rfd, 1)  # nothing will ever be written
        os.close(wfd)

    s.client("c0", c0)


@scenario("test-virtual-time", "an hour-long timed wait ends at once, an hour later")
def virtual_time(s: Setup) -> None:
    ev = QemuEvent(name="never_set")

    def c0() -> None:
        start = qemu_clock_get_ns(QEMU_CLOCK_REALTIME)
        if ev.wait(HOUR_S):
            fail("wrong reply: an event nobody sets was set")
        waited = (qemu_clock_get_ns(QEMU_CLOCK_REALTIME) - start) / 1e9
        if waited < HOUR_S:
            fail(f"wrong reply: the timed wait ended after {waited} virtual seconds")

    s.client("c0", c0)
