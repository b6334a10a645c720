"""The main loop and the BQL (util/main-loop.c, system/cpus.c).

The main loop thread polls two AioContexts: ``qemu_aio_context`` (the one
nested loops such as ``AIO_WAIT_WHILE`` poll) and ``iohandler_ctx`` (polled
only here, never by a nested loop: the QMP dispatcher and monitor work live
there).  It holds the BQL except while it blocks.  Both contexts' epoll fds
sit in one outer epoll, so one blocking wait covers both, as glib's
single poll does in QEMU.

QEMU's globals for this layer live in one :class:`MainLoop` object created by
``qemu_init_main_loop`` and dropped by ``qemu_main_loop_cleanup``, so each
test can build a fresh one.
"""

from __future__ import annotations

import select
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

from util.aio import (
    AioContext,
    aio_bh_new,
    aio_bh_schedule_oneshot,
    aio_compute_timeout,
    aio_context_finalize,
    aio_dispatch,
    aio_set_fd_handler,
    aio_wait_has_waiters,
    qemu_bh_delete,
    qemu_bh_schedule,
    qemu_set_current_aio_context,
)
from util.lockdep import lockdep_skip_frames_of
from util.sched import SCHED, sched_point, sched_poll
from util.thread import QemuMutex
from util.trace import trace_event

trace_main_loop_wait = trace_event("main_loop_wait", "timeout")
trace_bql_handoff = trace_event("bql_handoff", "released")


class MainLoop:
    """The main loop's state: its two contexts, the BQL and its thread."""

    name = "main_loop"

    def __init__(self) -> None:
        self.thread = threading.get_ident()
        self.bql = QemuMutex("BQL")
        self.qemu_aio_context = AioContext("qemu_aio_context")
        self.iohandler_ctx = AioContext("iohandler_ctx")
        for ctx in (self.qemu_aio_context, self.iohandler_ctx):
            ctx.home_thread = self.thread
        self.contexts = (self.qemu_aio_context, self.iohandler_ctx)
        #: what qemu_notify_event schedules: pending work that the loop's
        #: timeout computation sees, so a kick just before it blocks is not lost
        self.notify_bh = aio_bh_new(self.qemu_aio_context, _notify_event_cb, None, "qemu_notify_bh")
        #: the contexts' epoll fds, as the outer epoll reports them
        self.context_fds = tuple(ctx.fileno() for ctx in self.contexts)
        self.epoll = select.epoll()
        for fd in self.context_fds:
            self.epoll.register(fd, select.EPOLLIN)
        #: (read end, write end) of the signal wakeup socket, if installed
        self.signal_wakeup: Optional[tuple[socket.socket, socket.socket]] = None


class _Current:
    loop: Optional[MainLoop] = None


_current = _Current()


def qemu_init_main_loop() -> MainLoop:
    """Make the calling thread the main loop thread, holding the BQL."""
    if _current.loop is not None:
        raise AssertionError("main loop already initialised")
    loop = MainLoop()
    _current.loop = loop
    qemu_set_current_aio_context(loop.qemu_aio_context)
    qemu_signal_init(loop)
    bql_lock()
    return loop


def qemu_signal_init(loop: MainLoop) -> None:
    """Host signals wake the main loop through an fd it polls.

    QEMU polls a signalfd.  Here the interpreter's C-level handler writes a
    byte to a wakeup socket (``signal.set_wakeup_fd``) the moment a signal
    lands, in whichever thread, so a signal that arrives just before the
    main loop blocks in epoll_wait still wakes it; the Python handler then
    runs in the main thread as soon as the poll returns.  Only the process's
    main thread can install it (a test may run a loop elsewhere).
    """
    if threading.current_thread() is not threading.main_thread():
        return
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    wsock.setblocking(False)
    signal.set_wakeup_fd(wsock.fileno(), warn_on_full_buffer=False)
    loop.signal_wakeup = (rsock, wsock)
    aio_set_fd_handler(loop.qemu_aio_context, rsock.fileno(), _sigfd_handler, None, rsock)


def _sigfd_handler(rsock: socket.socket) -> None:
    """Drain the wakeup bytes (sigfd_handler); the Python handlers did the work."""
    try:
        while rsock.recv(4096):
            pass
    except BlockingIOError:
        pass


def _qemu_signal_cleanup(loop: MainLoop) -> None:
    if loop.signal_wakeup is None:
        return
    rsock, wsock = loop.signal_wakeup
    signal.set_wakeup_fd(-1)
    aio_set_fd_handler(loop.qemu_aio_context, rsock.fileno(), None, None)
    rsock.close()
    wsock.close()
    loop.signal_wakeup = None


def qemu_main_loop_cleanup() -> None:
    """Tear the main loop down (the BQL must be held by the caller)."""
    loop = main_loop()
    if loop.bql.locked_by_me():
        bql_unlock()
    _qemu_signal_cleanup(loop)
    qemu_bh_delete(loop.notify_bh)
    loop.epoll.close()
    _current.loop = None
    qemu_set_current_aio_context(None)
    aio_context_finalize(loop.iohandler_ctx)
    aio_context_finalize(loop.qemu_aio_context)


def main_loop() -> MainLoop:
    loop = _current.loop
    if loop is None:
        raise AssertionError("main loop not initialised")
    return loop


def main_loop_initialised() -> bool:
    return _current.loop is not None


def qemu_get_aio_context() -> AioContext:
    """The main AioContext (qemu_aio_context)."""
    return main_loop().qemu_aio_context


def iohandler_get_aio_context() -> AioContext:
    """The context only the real main loop polls (iohandler_ctx)."""
    return main_loop().iohandler_ctx


def qemu_in_main_thread() -> bool:
    loop = _current.loop
    return loop is not None and loop.thread == threading.get_ident()


def qemu_notify_event() -> None:
    """Wake the main loop (qemu_notify_event) to look at its exit conditions.

    As in QEMU this schedules a BH rather than kicking the context: the
    condition the caller changed (a shutdown request) is checked before the
    loop computes its timeout, so a bare aio_notify landing between that
    check and ``notify_me`` would be lost and the loop would sleep on (the
    explorer finds that interleaving).  A scheduled BH makes the timeout 0.
    """
    qemu_bh_schedule(main_loop().notify_bh)


def _notify_event_cb(opaque: Any) -> None:
    """Running is the point: the loop wakes and checks its conditions."""


_NOTHING_FIRED: dict[int, int] = {}


def main_loop_wait(nonblocking: bool = False) -> bool:
    """Wait for work on both main contexts, then run it with the BQL held.

    The BQL is dropped only around the blocking wait.  Returns progress.
    """
    loop = main_loop()
    ctxs = loop.contexts
    timeout: Optional[float] = 0.0
    if not nonblocking:
        timeout = None
        for ctx in ctxs:
            # qatomic_set(ctx.notify_me, True) inlined: four per pass on the
            # hottest path; the explorer sees the same points
            if SCHED.active:
                sched_point("qatomic_set", ctx.notify_me)
            ctx.notify_me.value = True
            t = aio_compute_timeout(ctx)
            if t is not None and (timeout is None or t < timeout):
                timeout = t
                if t == 0.0:
                    break  # this pass will not block: the rest need not be asked
    if trace_main_loop_wait.state:
        trace_main_loop_wait(timeout)
    if timeout != 0.0:
        bql = loop.bql
        bql.unlock()
        if trace_bql_handoff.state:
            trace_bql_handoff(True)
        try:
            if SCHED.active:
                ready = sched_poll(loop.epoll, timeout, loop)
            else:
                ready = loop.epoll.poll(-1 if timeout is None else timeout)
        finally:
            bql.lock()
            if trace_bql_handoff.state:
                trace_bql_handoff(False)
    else:
        ready = loop.epoll.poll(0)
    fired = dict(ready) if ready else _NOTHING_FIRED
    progress = False
    for ctx, ctx_fd in zip(ctxs, loop.context_fds):
        if SCHED.active:  # qatomic_set(ctx.notify_me, False) inlined (above)
            sched_point("qatomic_set", ctx.notify_me)
        ctx.notify_me.value = False
        # the one outer epoll_wait tells which context has fd work, as QEMU's
        # one ppoll does; a context without any still runs its BHs and timers
        fds = ctx.epoll.poll(0) if ctx_fd in fired else []
        progress |= aio_dispatch(ctx, fds)
    return progress


def aio_wait_kick() -> None:
    """Wake an ``AIO_WAIT_WHILE`` in the main loop (schedules a dummy BH)."""
    if aio_wait_has_waiters():
        aio_bh_schedule_oneshot(qemu_get_aio_context(), _dummy_bh_cb, None, "aio_wait_kick")


def _dummy_bh_cb(opaque: Any) -> None:
    """Nothing: running it is what makes the waiting poll return."""


# ---------------------------------------------------------------- BQL


def bql_lock() -> None:
    """Take the Big QEMU Lock."""
    main_loop().bql.lock()


def bql_unlock() -> None:
    main_loop().bql.unlock()


def bql_locked() -> bool:
    """True when the calling thread holds the BQL."""
    loop = _current.loop
    return loop is not None and loop.bql.locked_by_me()


lockdep_skip_frames_of(bql_lock)


@contextmanager
def BQL_LOCK_GUARD() -> Iterator[None]:
    """Hold the BQL for a block unless the caller already does."""
    if bql_locked():
        yield
        return
    bql_lock()
    try:
        yield
    finally:
        bql_unlock()
