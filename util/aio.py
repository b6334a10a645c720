"""AioContext: QEMU's event loop core (include/block/aio.h, util/async.c,
util/aio-posix.c, util/aio-wait.c).

An AioContext owns fd handlers (polled with an epoll object), bottom halves,
timers and the coroutines scheduled into it.  ``aio_poll(ctx, blocking)`` is
the only place its callbacks run, always in the context's home thread: the
main loop thread for ``qemu_aio_context`` and ``iohandler_ctx``, the IOThread's
thread for an IOThread's context.  Other threads hand work over with
``qemu_bh_schedule`` / ``aio_co_schedule`` and wake the poller with
``aio_notify``, which writes an eventfd only when the poller is (about to be)
blocked, as QEMU's ``notify_me`` protocol does.

Bottom-half semantics follow async.c: scheduling is idempotent, a BH scheduled
while a pass runs is run by the next pass, deletion is deferred to the pass
that frees it, and finalising a context that still has a live BH names it.
"""

from __future__ import annotations

import os
import select
import threading
import weakref
from collections import deque
from typing import Any, Callable, Optional

from util.atomic import QAtomic
from util.coroutine import (
    Coroutine,
    CoroutineError,
    qemu_aio_coroutine_enter,
    qemu_coroutine_self,
    qemu_in_coroutine,
)
from util.error_report import report_callback_exception
from util.sched import SCHED, sched_point, sched_poll
from util.thread import QemuEvent
from util.timer import (
    QEMUClockType,
    QEMUTimer,
    TimerList,
    timer_new,
)
from util.trace import trace_event

trace_aio_bh_run = trace_event("aio_bh_run", "ctx", "bh")
trace_aio_co_schedule = trace_event("aio_co_schedule", "ctx", "co")
trace_aio_co_schedule_bh_cb = trace_event("aio_co_schedule_bh_cb", "ctx", "co")

Callback = Callable[[Any], None]
#: what one ``epoll.poll`` returns: (fd, event mask) pairs
Ready = list[tuple[int, int]]

# epoll reports errors and hang-ups whatever was asked; like ``selectors``,
# they count as both readable and writable, so the handler sees the EOF.
_READ_EVENTS = ~select.EPOLLOUT
_WRITE_EVENTS = ~select.EPOLLIN

# BH flags (async.c)
BH_PENDING = 1  # queued in the context's list
BH_SCHEDULED = 2  # will run when the list is next polled
BH_ONESHOT = 4  # freed after running
BH_DELETED = 8  # freed on the next pass, never run again
BH_IDLE = 16  # running it does not count as progress


class EventNotifier:
    """A wakeup fd (util/event_notifier-posix.c): an eventfd, or a pipe."""

    def __init__(self) -> None:
        if hasattr(os, "eventfd"):
            self.rfd = self.wfd = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        else:  # pragma: no cover - non-Linux fallback
            self.rfd, self.wfd = os.pipe()
            os.set_blocking(self.rfd, False)
            os.set_blocking(self.wfd, False)

    def set(self) -> None:
        try:
            os.write(self.wfd, b"\1\0\0\0\0\0\0\0")
        except BlockingIOError:
            pass  # already signalled

    def test_and_clear(self) -> None:
        try:
            os.read(self.rfd, 8 if self.rfd == self.wfd else 4096)
        except BlockingIOError:
            pass

    def close(self) -> None:
        os.close(self.rfd)
        if self.wfd != self.rfd:
            os.close(self.wfd)


class QEMUBH:
    """A bottom half: ``cb(opaque)`` run once per schedule, in ``ctx``."""

    __slots__ = ("cb", "ctx", "flags", "name", "opaque")

    def __init__(self, ctx: AioContext, cb: Callback, opaque: Any, name: str, flags: int) -> None:
        self.ctx = ctx
        self.cb = cb
        self.opaque = opaque
        self.name = name
        self.flags = flags

    def __repr__(self) -> str:
        return f"<QEMUBH {self.name} in {self.ctx.name}>"


class AioHandler:
    """The read/write callbacks registered for one fd, and its epoll events."""

    __slots__ = ("events", "fd", "io_read", "io_write", "opaque")

    def __init__(
        self,
        fd: int,
        io_read: Optional[Callback],
        io_write: Optional[Callback],
        opaque: Any,
        events: int,
    ) -> None:
        self.fd = fd
        self.io_read = io_read
        self.io_write = io_write
        self.opaque = opaque
        self.events = events


#: live contexts in creation order (deterministic, unlike a WeakSet)
_contexts: weakref.WeakKeyDictionary[AioContext, None] = weakref.WeakKeyDictionary()


class AioContext:
    """One event loop: fd handlers, bottom halves, timers, scheduled coroutines."""

    def __init__(self, name: str) -> None:
        self.name = name
        #: ident of the only thread allowed to poll; set by who owns the context
        self.home_thread: Optional[int] = None
        self.epoll = select.epoll()
        self.notifier = EventNotifier()
        self.epoll.register(self.notifier.rfd, select.EPOLLIN)
        self.list_lock = threading.Lock()  # fd handler table and epoll set
        self.handlers: dict[int, AioHandler] = {}
        self.bh_lock = threading.Lock()  # BH list and flags
        self.bh_list: list[QEMUBH] = []
        self.live_bhs: set[QEMUBH] = set()
        #: True while the home thread is blocked (or about to block) in poll
        self.notify_me: QAtomic[bool] = QAtomic(False, "notify_me", name)
        self.scheduled_coroutines: deque[Coroutine] = deque()
        self.tlg: dict[QEMUClockType, TimerList] = {
            clock: TimerList(clock, aio_notify, self) for clock in QEMUClockType
        }
        #: the same timer lists, for the per-pass scans
        self.timer_lists = tuple(self.tlg.values())
        self.finalized = False
        self.co_schedule_bh = aio_bh_new(self, co_schedule_bh_cb, self, "co_schedule_bh")
        _contexts[self] = None

    def fileno(self) -> int:
        """The fd that becomes readable when this context has work (its epoll fd)."""
        return self.epoll.fileno()

    def __repr__(self) -> str:
        return f"<AioContext {self.name}>"


def aio_context_finalize(ctx: AioContext) -> None:
    """Release the context; a BH still alive is a leak and is named."""
    if ctx.finalized:
        return
    qemu_bh_delete(ctx.co_schedule_bh)
    _free_deleted_bhs(ctx)
    leaked = sorted(bh.name for bh in ctx.live_bhs)
    ctx.finalized = True
    ctx.epoll.close()
    ctx.notifier.close()
    if leaked:
        raise AssertionError(f"AioContext {ctx.name} has leaked BH(s): {', '.join(leaked)}")
    if ctx.handlers:
        raise AssertionError(f"AioContext {ctx.name} has fd handlers left: {sorted(ctx.handlers)}")


def _free_deleted_bhs(ctx: AioContext) -> None:
    with ctx.bh_lock:
        for bh in [b for b in ctx.bh_list if b.flags & BH_DELETED]:
            ctx.bh_list.remove(bh)
            ctx.live_bhs.discard(bh)


def live_aio_contexts() -> list[AioContext]:
    """Contexts created and not finalised (leak checks)."""
    return [c for c in list(_contexts) if not c.finalized]


# ---------------------------------------------------------------- current context


class _CurrentContext(threading.local):
    ctx: Optional[AioContext] = None


_current = _CurrentContext()


def qemu_set_current_aio_context(ctx: Optional[AioContext]) -> None:
    """Declare ``ctx`` as the calling thread's context (IOThread and main loop)."""
    _current.ctx = ctx


def qemu_get_current_aio_context() -> Optional[AioContext]:
    """The calling thread's home context: an IOThread's, or qemu_aio_context."""
    return _current.ctx


# ---------------------------------------------------------------- notify


def aio_notify(ctx: AioContext) -> None:
    """Make the context's current poll return promptly.

    The eventfd is written only when the home thread is blocked or about to
    block (``notify_me``).  Otherwise nothing is needed: the poller sets
    ``notify_me`` before it computes its timeout, and the work that prompted
    the kick (a BH, a timer, an fd) is what that computation looks at.  So a
    kick while the loop is dispatching costs no extra pass, as in QEMU, where
    ``aio_compute_timeout`` ignores ``ctx->notified``.
    """
    notify_me = ctx.notify_me
    if SCHED.active:
        sched_point("aio_notify", ctx)
        sched_point("qatomic_read", notify_me)  # qatomic_read inlined (hot path)
    if notify_me.value:
        ctx.notifier.set()


# ---------------------------------------------------------------- bottom halves


def aio_bh_new(ctx: AioContext, cb: Callback, opaque: Any = None, name: str = "") -> QEMUBH:
    """Create a BH (not scheduled); it must be deleted with ``qemu_bh_delete``."""
    bh = QEMUBH(ctx, cb, opaque, name or getattr(cb, "__qualname__", "bh"), 0)
    with ctx.bh_lock:
        ctx.live_bhs.add(bh)
    return bh


def _aio_bh_enqueue(bh: QEMUBH, new_flags: int) -> None:
    ctx = bh.ctx
    if SCHED.active:
        sched_point("qemu_bh_delete" if new_flags & BH_DELETED else "qemu_bh_schedule", bh)
    with ctx.bh_lock:
        old = bh.flags
        if old & BH_DELETED:
            raise AssertionError(f"BH {bh.name} used after qemu_bh_delete")
        bh.flags = old | BH_PENDING | new_flags
        if not old & BH_PENDING:
            ctx.bh_list.append(bh)
    aio_notify(ctx)


def qemu_bh_schedule(bh: QEMUBH) -> None:
    """Run the BH once in the next pass of its context; idempotent."""
    _aio_bh_enqueue(bh, BH_SCHEDULED)


def qemu_bh_schedule_idle(bh: QEMUBH) -> None:
    """Like ``qemu_bh_schedule`` but running it does not count as progress."""
    _aio_bh_enqueue(bh, BH_SCHEDULED | BH_IDLE)


def aio_bh_schedule_oneshot(
    ctx: AioContext, cb: Callback, opaque: Any = None, name: str = ""
) -> None:
    """Run ``cb(opaque)`` once in ``ctx``, then forget it."""
    bh = QEMUBH(
        ctx,
        cb,
        opaque,
        name or getattr(cb, "__qualname__", "oneshot"),
        BH_PENDING | BH_SCHEDULED | BH_ONESHOT,
    )
    if SCHED.active:
        sched_point("aio_bh_schedule_oneshot", f"{bh.name}@{ctx.name}")
    with ctx.bh_lock:  # created, then enqueued as _aio_bh_enqueue would
        ctx.live_bhs.add(bh)
        ctx.bh_list.append(bh)
    aio_notify(ctx)


def qemu_bh_cancel(bh: QEMUBH) -> None:
    """Unschedule; the BH stays valid and may be scheduled again."""
    with bh.ctx.bh_lock:
        bh.flags &= ~BH_SCHEDULED


def qemu_bh_delete(bh: QEMUBH) -> None:
    """Delete the BH; it never runs again and is freed by the next pass."""
    if bh.flags & BH_DELETED:
        return
    _aio_bh_enqueue(bh, BH_DELETED)


#: flags a BH loses when a pass takes it off the list (aio_bh_dequeue)
_BH_DEQUEUE_CLEARS = ~(BH_PENDING | BH_SCHEDULED | BH_IDLE)


def aio_bh_poll(ctx: AioContext) -> bool:
    """Run the BHs scheduled before this call; BHs scheduled meanwhile wait."""
    lock = ctx.bh_lock
    with lock:
        bhs, ctx.bh_list = ctx.bh_list, []
    progress = False
    for bh in bhs:
        with lock:
            flags = bh.flags
            bh.flags = flags & _BH_DEQUEUE_CLEARS
            if flags & (BH_DELETED | BH_ONESHOT):
                ctx.live_bhs.discard(bh)
        if flags & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED:
            if not flags & BH_IDLE:
                progress = True
            if trace_aio_bh_run.state:
                trace_aio_bh_run(ctx.name, bh.name)
            try:
                bh.cb(bh.opaque)
            except Exception as exc:
                report_callback_exception(f"BH {bh.name} in {ctx.name}", exc)
    return progress


def _bh_deadline_zero(ctx: AioContext) -> bool:
    """Is a live BH scheduled?  Read without bh_lock, as QEMU reads the flags
    with qatomic_read: a BH queued just after the scan also kicked the
    context (its poller set ``notify_me`` first), so the poll returns."""
    for bh in ctx.bh_list:
        if bh.flags & (BH_SCHEDULED | BH_DELETED) == BH_SCHEDULED:
            return True
    return False


# ---------------------------------------------------------------- fd handlers


def aio_set_fd_handler(
    ctx: AioContext,
    fd: int,
    io_read: Optional[Callback],
    io_write: Optional[Callback],
    opaque: Any = None,
) -> None:
    """Install, change or (both None) remove the handlers of ``fd``.

    Safe from any thread: the poller is kicked so it sees the change.
    """
    events = (select.EPOLLIN if io_read else 0) | (select.EPOLLOUT if io_write else 0)
    with ctx.list_lock:
        had = ctx.handlers.get(fd)
        if not events:
            if had is not None:
                del ctx.handlers[fd]
                try:
                    ctx.epoll.unregister(fd)
                except OSError:
                    pass  # closed already: the kernel dropped it
        else:
            # register first: epoll refuses some fds (regular files), and a
            # refused fd must leave no handler behind
            if had is None:
                ctx.epoll.register(fd, events)
            elif had.events != events:
                ctx.epoll.modify(fd, events)
            ctx.handlers[fd] = AioHandler(fd, io_read, io_write, opaque, events)
    if ctx.home_thread != threading.get_ident():
        aio_notify(ctx)


def _aio_dispatch_handlers(ctx: AioContext, ready: Ready) -> bool:
    progress = False
    handlers = ctx.handlers
    notifier = ctx.notifier
    for fd, mask in ready:
        if fd == notifier.rfd:
            notifier.test_and_clear()  # aio_context_notifier_cb: not progress
            continue
        node = handlers.get(fd)
        if node is None:
            continue  # removed since the poll returned
        try:
            if mask & _READ_EVENTS and node.io_read is not None:
                node.io_read(node.opaque)
                progress = True
                node = handlers.get(fd)
            if node is not None and mask & _WRITE_EVENTS and node.io_write is not None:
                node.io_write(node.opaque)
                progress = True
        except Exception as exc:
            report_callback_exception(f"fd {fd} handler in {ctx.name}", exc)
    return progress


# ---------------------------------------------------------------- timers


def aio_timer_new(
    ctx: AioContext,
    clock: QEMUClockType,
    scale: int,
    cb: Callback,
    opaque: Any = None,
    name: str = "",
) -> QEMUTimer:
    """A timer whose callback runs in ``ctx`` (aio_timer_new)."""
    return timer_new(ctx.tlg[clock], scale, cb, opaque, name)


def _run_timers(ctx: AioContext, tl: TimerList) -> bool:
    try:
        return tl.run_timers()
    except Exception as exc:
        report_callback_exception(f"timer in {ctx.name}", exc)
        return True


def aio_compute_timeout(ctx: AioContext) -> Optional[float]:
    """Seconds the poll may block: 0 with work pending, None for ever."""
    if ctx.bh_list and _bh_deadline_zero(ctx):
        return 0.0
    deadline = -1
    for tl in ctx.timer_lists:
        if tl.active:
            d = tl.deadline_ns()
            if d >= 0 and (deadline < 0 or d < deadline):
                deadline = d
    return None if deadline < 0 else deadline / 1e9


# ---------------------------------------------------------------- polling


def aio_poll(ctx: AioContext, blocking: bool) -> bool:
    """One pass of the loop: fds, then BHs, then timers.  Returns progress.

    With ``blocking`` it waits until something can be done.  Only the
    context's home thread may poll it.
    """
    home = ctx.home_thread
    if home is not None and home != threading.get_ident():
        raise AssertionError(
            f"aio_poll({ctx.name}) from {threading.current_thread().name}, not its home thread"
        )
    if blocking:
        # qatomic_set(ctx.notify_me, ...) inlined: twice per pass of every
        # I/O thread; the explorer sees the same points
        notify_me = ctx.notify_me
        if SCHED.active:
            sched_point("qatomic_set", notify_me)
        notify_me.value = True
        timeout = aio_compute_timeout(ctx)
        if SCHED.active:
            ready = sched_poll(ctx.epoll, timeout, ctx)
            sched_point("qatomic_set", notify_me)
        else:
            ready = ctx.epoll.poll(-1 if timeout is None else timeout)
        notify_me.value = False
    else:
        if SCHED.active:
            sched_point("aio_poll", ctx)
        ready = ctx.epoll.poll(0)
    return aio_dispatch(ctx, ready)


def aio_dispatch(ctx: AioContext, ready: Ready) -> bool:
    """Run BHs, then what a poll found ready, then timers (aio-posix.c order).

    A pass with nothing to do runs every test and no callee: the main loop
    makes three passes per request over two contexts.
    """
    # The eventfd is drained by its handler in this pass (as QEMU's
    # aio_context_notifier_cb does): only notify_me pollers get it written.
    # A BH queued just after this test also notified the context: next pass
    progress = aio_bh_poll(ctx) if ctx.bh_list else False
    if ready:
        progress |= _aio_dispatch_handlers(ctx, ready)
    for tl in ctx.timer_lists:
        if tl.active:  # nothing armed: not even a clock read
            progress |= _run_timers(ctx, tl)
    return progress


# ---------------------------------------------------------------- coroutines


def co_schedule_bh_cb(ctx: AioContext) -> None:
    """Enter the coroutines scheduled into ``ctx`` before this pass (async.c).

    Ones scheduled while these run wait for the next pass, as QEMU takes the
    whole list first.
    """
    for _ in range(len(ctx.scheduled_coroutines)):
        co = ctx.scheduled_coroutines.popleft()
        if trace_aio_co_schedule_bh_cb.state:
            trace_aio_co_schedule_bh_cb(ctx.name, co.name)
        co.scheduled.value = None
        qemu_aio_coroutine_enter(ctx, co)


def aio_co_schedule(ctx: AioContext, co: Coroutine) -> None:
    """Enter ``co`` from a BH in ``ctx``; scheduling it twice is a bug."""
    if trace_aio_co_schedule.state:
        trace_aio_co_schedule(ctx.name, co.name)
    if SCHED.active:
        sched_point("aio_co_schedule", co)
    with co.scheduled._lock:
        old = co.scheduled.value
        if old is None:
            co.scheduled.value = "aio_co_schedule"
    if old is not None:
        raise CoroutineError(f"Co-routine {co.name} was already scheduled in '{old}'")
    ctx.scheduled_coroutines.append(co)
    qemu_bh_schedule(ctx.co_schedule_bh)


def aio_co_enter(ctx: AioContext, co: Coroutine) -> None:
    """Run ``co`` in ``ctx``: directly if that is our context, else schedule.

    Inside a coroutine the entry is deferred until the running one yields.
    """
    if ctx is not qemu_get_current_aio_context():
        aio_co_schedule(ctx, co)
    elif qemu_in_coroutine():
        qemu_coroutine_self().co_queue_wakeup.append(co)
    else:
        qemu_aio_coroutine_enter(ctx, co)


def aio_co_wake(co: Coroutine) -> None:
    """Wake ``co`` in the context it last ran in (aio_co_wake)."""
    ctx = co.ctx
    assert ctx is not None, f"{co.name} never ran"
    if SCHED.active:
        sched_point("aio_co_wake", co)
    aio_co_enter(ctx, co)


# ---------------------------------------------------------------- AIO_WAIT_WHILE


class _AioWait:
    num_waiters = 0


_aio_wait = _AioWait()


def AIO_WAIT_WHILE(ctx: AioContext, cond: Callable[[], bool]) -> bool:
    """Poll ``ctx`` (and only it) until ``cond()`` is false; True if it waited.

    Other threads that change what ``cond`` reads call ``aio_wait_kick``.
    """
    waited = False
    _aio_wait.num_waiters += 1
    try:
        while cond():
            aio_poll(ctx, True)
            waited = True
    finally:
        _aio_wait.num_waiters -= 1
    return waited


AIO_WAIT_WHILE_UNLOCKED = AIO_WAIT_WHILE


def aio_wait_has_waiters() -> bool:
    """True while some thread is inside ``AIO_WAIT_WHILE``."""
    return _aio_wait.num_waiters > 0


def run_in_context(ctx: AioContext, fn: Callable[[Any], None], opaque: Any) -> None:
    """Run ``fn(opaque)`` in ``ctx``'s thread and wait for it to finish.

    Directly when ``ctx`` is the calling thread's context (or has no thread
    yet); otherwise through a one-shot BH, waiting on an event.  The caller
    must not hold a lock that ``fn`` or the target thread needs.
    """
    if ctx.home_thread is None or ctx.home_thread == threading.get_ident():
        fn(opaque)
        return
    done = QemuEvent(name=f"run_in_context:{getattr(fn, '__name__', 'fn')}")
    failure: list[BaseException] = []

    def bh(_: Any) -> None:
        try:
            fn(opaque)
        except BaseException as exc:
            failure.append(exc)
        finally:
            done.set()

    aio_bh_schedule_oneshot(ctx, bh, None, f"run_in_context:{getattr(fn, '__name__', 'fn')}")
    done.wait()
    if failure:
        raise failure[0]
