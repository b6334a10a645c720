"""Coroutines on greenlet (util/qemu-coroutine.c, util/coroutine-*.c).

A :class:`Coroutine` wraps a greenlet.  Greenlets belong to the thread that
created them, which is QEMU's rule for coroutines too: entering one from
another thread is an error, and cross-thread wake-ups go through
``aio_co_schedule`` (util/aio.py), a bottom half in the coroutine's home
context.  A coroutine may not yield while it holds a mutex other than the BQL
(DESIGN.md invariant 1): the check runs at every yield.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING, Any, Callable, Optional

from greenlet import greenlet

from util.atomic import QAtomic
from util.lockdep import held_site, locks_held_by_current_greenlet
from util.sched import SCHED, sched_point
from util.trace import trace_event

if TYPE_CHECKING:
    from util.aio import AioContext

trace_qemu_coroutine_enter = trace_event("qemu_coroutine_enter", "from_", "to", "opaque")
trace_qemu_coroutine_yield = trace_event("qemu_coroutine_yield", "from_", "to")
trace_qemu_coroutine_terminate = trace_event("qemu_coroutine_terminate", "co")

CoroutineEntry = Callable[[Any], None]


class CoroutineError(AssertionError):
    """A coroutine rule was broken (QEMU aborts in these cases)."""


class Coroutine:
    """A coroutine: an entry point, its greenlet, and QEMU's bookkeeping."""

    def __init__(self, entry: Optional[CoroutineEntry], opaque: Any, name: str) -> None:
        self.entry = entry
        self.opaque = opaque
        self.name = name
        self.thread = threading.get_ident()
        self.greenlet: Optional[greenlet] = None
        #: who entered us; None while not running
        self.caller: Optional[Coroutine] = None
        #: the AioContext the coroutine last ran in (co->ctx)
        self.ctx: Optional[AioContext] = None
        #: name of the function that scheduled it, or None (co->scheduled)
        self.scheduled: QAtomic[Optional[str]] = QAtomic(None, "scheduled", name)
        #: coroutines to enter after this one yields (co->co_queue_wakeup)
        self.co_queue_wakeup: list[Coroutine] = []
        self.finished = False

    def __repr__(self) -> str:
        return f"<Coroutine {self.name}>"


class _ThreadCoroutines(threading.local):
    """Per thread: the running coroutine and the leader pseudo-coroutine."""

    def __init__(self) -> None:
        self.leader = Coroutine(None, None, f"leader:{threading.current_thread().name}")
        self.current: Optional[Coroutine] = None


_tls = _ThreadCoroutines()
#: live coroutines in creation order (deterministic, unlike a WeakSet)
_live: weakref.WeakKeyDictionary[Coroutine, None] = weakref.WeakKeyDictionary()


def qemu_coroutine_create(entry: CoroutineEntry, opaque: Any = None, name: str = "") -> Coroutine:
    """Create a coroutine that will run ``entry(opaque)`` when first entered."""
    co = Coroutine(entry, opaque, name or getattr(entry, "__qualname__", "coroutine"))

    def run() -> None:
        assert co.entry is not None
        co.entry(co.opaque)

    co.greenlet = greenlet(run)
    _live[co] = None
    return co


def qemu_coroutine_self() -> Coroutine:
    """The running coroutine, or the thread's leader outside coroutine context."""
    return _tls.current or _tls.leader


def qemu_coroutine_leader() -> Coroutine:
    """The calling thread's leader pseudo-coroutine, even inside a coroutine
    (what keys a per-thread property, e.g. the pre-5.2 current monitor)."""
    return _tls.leader


def qemu_in_coroutine() -> bool:
    return _tls.current is not None


def qemu_running_coroutine_name() -> Optional[str]:
    """The running coroutine's name, or None outside coroutine context
    (the explorer labels a thread's points with it)."""
    co = _tls.current
    return None if co is None else co.name


def coroutine_parked_name(g: Any) -> Optional[str]:
    """The name of the coroutine whose greenlet is ``g``, if it is not running
    (the explorer's deadlock report: a lock held by a parked coroutine)."""
    for co in list(_live):
        if co.greenlet is g and co.caller is None and not co.finished:
            return co.name
    return None


def qemu_coroutine_entered(co: Coroutine) -> bool:
    """True while ``co`` is running or waiting for a coroutine it entered."""
    return co.caller is not None


def qemu_aio_coroutine_enter(ctx: Optional[AioContext], co: Coroutine) -> None:
    """Switch to ``co`` in ``ctx`` until it yields or terminates.

    Then enter, in order, the coroutines it woke with ``aio_co_enter`` while
    running (co_queue_wakeup), as QEMU does.
    """
    _enter_one(ctx, co)
    if not co.co_queue_wakeup:
        return  # it woke nobody: the usual case
    pending = co.co_queue_wakeup
    co.co_queue_wakeup = []
    while pending:
        to = pending.pop(0)
        _enter_one(ctx, to)
        pending.extend(to.co_queue_wakeup)
        to.co_queue_wakeup = []


def _enter_one(ctx: Optional[AioContext], co: Coroutine) -> None:
    if co.thread != threading.get_ident():
        raise CoroutineError(f"{co.name} entered from thread {threading.current_thread().name}")
    if co.caller is not None:
        raise CoroutineError(f"Co-routine {co.name} re-entered recursively")
    if co.finished or co.greenlet is None:
        raise CoroutineError(f"Co-routine {co.name} entered after it terminated")
    where = co.scheduled.value
    if where is not None:
        raise CoroutineError(f"Co-routine {co.name} was already scheduled in '{where}'")
    if SCHED.active:
        sched_point("qemu_coroutine_enter", co)
    self = qemu_coroutine_self()
    co.caller = self
    co.ctx = ctx
    if trace_qemu_coroutine_enter.state:
        trace_qemu_coroutine_enter(self.name, co.name, co.opaque)
    g = co.greenlet
    here = greenlet.getcurrent()
    if g.parent is not here:  # setting it checks for cycles: only on change
        g.parent = here
    _tls.current = co
    try:
        g.switch()
    except BaseException:
        co.finished = True
        raise
    finally:
        _tls.current = None if self is _tls.leader else self
        if g.dead and not co.finished:
            co.finished = True
        if co.finished:
            co.caller = None
            co.greenlet = None
            trace_qemu_coroutine_terminate(co.name)


def qemu_coroutine_enter(co: Coroutine) -> None:
    """Enter ``co`` in the calling thread's current AioContext."""
    from util.aio import qemu_get_current_aio_context

    qemu_aio_coroutine_enter(qemu_get_current_aio_context(), co)


def qemu_coroutine_yield() -> None:
    """Switch back to whoever entered the running coroutine."""
    self = _tls.current
    if self is None:
        raise CoroutineError("Co-routine is yielding to no one")
    held = locks_held_by_current_greenlet()
    if held:
        names = ", ".join(f"{h[0].name} (taken at {held_site(h)})" for h in held)
        raise CoroutineError(f"Co-routine {self.name} yields while holding {names}")
    if SCHED.active:
        sched_point("qemu_coroutine_yield", self)
    to = self.caller
    assert to is not None
    self.caller = None
    if trace_qemu_coroutine_yield.state:
        trace_qemu_coroutine_yield(self.name, to.name)
    assert self.greenlet is not None and self.greenlet.parent is not None
    self.greenlet.parent.switch()


def live_coroutines() -> list[Coroutine]:
    """Coroutines created and not yet terminated (leak checks)."""
    return [co for co in list(_live) if not co.finished]
