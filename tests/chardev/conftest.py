"""Chardev test fixtures: a fresh chardev registry on a fresh main loop,
a loop driver with a deadline, and a recording frontend."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any, Callable, Optional

import pytest

from chardev.char import Chardev, ChardevState, qemu_chr_cleanup, qemu_chr_state
from chardev.char_fe import (
    CharBackend,
    qemu_chr_fe_deinit,
    qemu_chr_fe_init,
    qemu_chr_fe_set_handlers,
)
from util.aio import AioContext, aio_bh_schedule_oneshot, aio_timer_new
from util.iothread import IOThread, iothread_create, iothread_destroy, iothread_get_aio_context
from util.main_loop import MainLoop, iohandler_get_aio_context, main_loop_wait
from util.thread import QemuEvent, qemu_thread_get_name
from util.timer import QEMU_CLOCK_REALTIME, SCALE_MS, qemu_clock_get_ms, timer_del, timer_mod

DEADLINE = 10.0


@pytest.fixture
def chr_state(main_loop: MainLoop) -> Iterator[ChardevState]:
    """A fresh chardev registry; every chardev is destroyed afterwards."""
    qemu_chr_cleanup()
    yield qemu_chr_state()
    qemu_chr_cleanup()


@pytest.fixture
def iothread(chr_state: ChardevState) -> Iterator[IOThread]:
    """An I/O thread; chardevs are destroyed before it (their sources live there)."""
    it = iothread_create("chr_test")
    yield it
    qemu_chr_cleanup()
    iothread_destroy(it)


def in_thread(it: IOThread, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` in a BH of ``it`` and return its result (as monitor setup BHs do)."""
    done = QemuEvent()
    result: list[Any] = []

    def bh(opaque: Any) -> None:
        result.append(fn())
        done.set()

    aio_bh_schedule_oneshot(iothread_get_aio_context(it), bh, None, "test_in_thread")
    assert done.wait(DEADLINE)
    return result[0]


def run_until(cond: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Run the main loop until ``cond()`` holds; fail after ``timeout`` seconds.

    A 20 ms timer bounds each blocking wait, so a condition changed by
    another thread without a notification is still seen.
    """
    tick = aio_timer_new(iohandler_get_aio_context(), QEMU_CLOCK_REALTIME, SCALE_MS, _nothing)
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            assert time.monotonic() < deadline, "condition not reached before the deadline"
            timer_mod(tick, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 20)
            main_loop_wait()
    finally:
        timer_del(tick)


def run_iterations(n: int) -> None:
    """Non-blocking passes of the main loop (for "nothing happens" checks)."""
    for _ in range(n):
        main_loop_wait(nonblocking=True)


def _nothing(opaque: Any) -> None:
    """Waking the loop is all the tick timer does."""


class Frontend:
    """A recording frontend: what it read, which events, in which thread.

    ``want`` is what can_read answers; ``take`` limits what read consumes
    (None: all).
    """

    def __init__(self, want: int = 1, take: Optional[int] = None) -> None:
        self.be = CharBackend()
        self.want = want
        self.take = take
        self.data = bytearray()
        self.chunks: list[bytes] = []
        self.events: list[int] = []
        self.threads: set[str] = set()

    def can_read(self, opaque: Any) -> int:
        self.threads.add(qemu_thread_get_name())
        return self.want

    def read(self, opaque: Any, data: bytes) -> Optional[int]:
        self.threads.add(qemu_thread_get_name())
        self.chunks.append(bytes(data))
        n = len(data) if self.take is None else min(self.take, len(data))
        self.data += data[:n]
        return n

    def event(self, opaque: Any, event: int) -> None:
        self.threads.add(qemu_thread_get_name())
        self.events.append(event)

    def attach(self, chr: Chardev, context: Optional[AioContext] = None) -> Frontend:
        qemu_chr_fe_init(self.be, chr)
        qemu_chr_fe_set_handlers(
            self.be, self.can_read, self.read, self.event, None, self, context, True
        )
        return self

    def detach(self) -> None:
        qemu_chr_fe_deinit(self.be, False)
