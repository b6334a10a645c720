"""The main loop: two contexts, one wait, BQL dropped only while blocking."""

from __future__ import annotations

import os
import signal

from util.aio import aio_bh_schedule_oneshot
from util.main_loop import (
    bql_lock,
    bql_locked,
    bql_unlock,
    iohandler_get_aio_context,
    main_loop_wait,
    qemu_get_aio_context,
)
from util.thread import QemuEvent, qemu_thread_create


def test_main_loop_wait_polls_both_contexts(main_loop):
    got = []
    aio_bh_schedule_oneshot(qemu_get_aio_context(), got.append, "aio", "a")
    aio_bh_schedule_oneshot(iohandler_get_aio_context(), got.append, "iohandler", "b")
    assert main_loop_wait(nonblocking=True) is True
    assert sorted(got) == ["aio", "iohandler"]


def test_bql_is_held_in_callbacks_and_released_while_blocking(main_loop):
    assert bql_locked()
    seen = {}
    took_bql = QemuEvent()

    def other():
        bql_lock()  # only possible while the main loop blocks
        seen["other_had_bql"] = True
        aio_bh_schedule_oneshot(
            iohandler_get_aio_context(), lambda o: seen.update(cb_bql=bql_locked()), None, "chk"
        )
        bql_unlock()
        took_bql.set()

    t = qemu_thread_create("vcpu", other)
    while "cb_bql" not in seen:
        main_loop_wait()
    t.join(5)
    assert seen == {"other_had_bql": True, "cb_bql": True}
    assert took_bql.is_set()
    assert bql_locked()


def test_bql_guard_and_lock_name(main_loop):
    assert main_loop.bql.name == "BQL"
    bql_unlock()
    assert not bql_locked()
    bql_lock()
    assert bql_locked()


def test_a_host_signal_wakes_the_blocked_main_loop(main_loop):
    """qemu_signal_init: the handler below neither kicks the loop nor raises,
    yet the blocked main_loop_wait returns, because the signal wrote the
    wakeup fd the loop polls.  Without it a signal landing just before
    epoll_wait (or in another thread) leaves the loop asleep."""
    got = []
    old = signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))
    try:

        def send() -> None:
            bql_lock()  # only possible while the main loop blocks in its poll
            bql_unlock()
            os.kill(os.getpid(), signal.SIGUSR1)

        # from a thread started with signals blocked, as QEMU's are: the
        # signal is delivered to this (the main loop) thread
        sender = qemu_thread_create("sender", send)
        while not got:
            main_loop_wait()
        sender.join(5)
    finally:
        signal.signal(signal.SIGUSR1, old)
    assert got == [signal.SIGUSR1]


def test_threads_start_with_host_signals_blocked(main_loop):
    """qemu_thread_create blocks every signal in the new thread."""
    masks = []
    t = qemu_thread_create(
        "masked", lambda: masks.append(signal.pthread_sigmask(signal.SIG_BLOCK, []))
    )
    t.join(5)
    assert signal.SIGTERM in masks[0] and signal.SIGINT in masks[0]
    assert signal.SIGTERM not in signal.pthread_sigmask(signal.SIG_BLOCK, [])
