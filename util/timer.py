"""Clocks and timers (util/qemu-timer.c, include/qemu/timer.h).

Two clocks matter here: ``QEMU_CLOCK_REALTIME`` (host monotonic time, always
running) and ``QEMU_CLOCK_VIRTUAL`` (guest time: it stops while the VM is
stopped, and in tests it is *manual*: it moves only when the test steps it,
like QEMU's qtest clock).  Each AioContext owns one :class:`TimerList` per
clock; a timer fires from ``aio_poll`` in that context's thread.  Arming a
timer from another thread kicks the owning context so its poll timeout is
recomputed.

Under the explorer (util/sched.py) host time is the scheduler's virtual
time, which moves only when every thread is blocked, so timers and
timeouts fire in a chosen, repeatable order.
"""

from __future__ import annotations

import bisect
import enum
import threading
import time
import weakref
from typing import Any, Callable, Optional

from util.sched import SCHED, VIRTUAL_EPOCH_NS

SCALE_NS = 1
SCALE_US = 1000
SCALE_MS = 1000000


class QEMUClockType(enum.IntEnum):
    QEMU_CLOCK_REALTIME = 0
    QEMU_CLOCK_VIRTUAL = 1


QEMU_CLOCK_REALTIME = QEMUClockType.QEMU_CLOCK_REALTIME
QEMU_CLOCK_VIRTUAL = QEMUClockType.QEMU_CLOCK_VIRTUAL


def _host_ns() -> int:
    """Host monotonic time, or the explorer's virtual time while it runs."""
    return SCHED.now_ns if SCHED.active else time.monotonic_ns()


#: the explorer's wall clock starts at 2026-01-01T00:00:00Z
_VIRTUAL_REAL_EPOCH_NS = 1_767_225_600 * 1_000_000_000


def g_get_real_time() -> int:
    """Wall-clock time in microseconds (glib's g_get_real_time).

    Under the explorer it follows the virtual clock from a fixed date, so
    event timestamps are the same in every replay of a schedule.
    """
    if SCHED.active:
        return (_VIRTUAL_REAL_EPOCH_NS + SCHED.now_ns - VIRTUAL_EPOCH_NS) // 1000
    return time.time_ns() // 1000


class _VirtualClock:
    """Guest time: host time minus the time spent stopped, or manual."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.manual: Optional[int] = None  # ns, when driven by a test
        self.offset = 0  # subtracted from host time
        self.stopped_at: Optional[int] = None

    def now(self) -> int:
        if self.manual is not None:
            return self.manual
        stopped = self.stopped_at
        if stopped is not None:
            return stopped - self.offset
        return _host_ns() - self.offset


_virtual = _VirtualClock()
#: live timer lists per clock, in creation order (a WeakSet's order would
#: follow addresses, and the explorer needs the same notifications each run)
_lists: dict[QEMUClockType, weakref.WeakKeyDictionary[TimerList, None]] = {
    QEMU_CLOCK_REALTIME: weakref.WeakKeyDictionary(),
    QEMU_CLOCK_VIRTUAL: weakref.WeakKeyDictionary(),
}


def qemu_clock_get_ns(clock: QEMUClockType) -> int:
    """Current time of ``clock`` in nanoseconds."""
    if clock == QEMU_CLOCK_VIRTUAL:
        return _virtual.now()
    return SCHED.now_ns if SCHED.active else time.monotonic_ns()


def qemu_clock_get_ms(clock: QEMUClockType) -> int:
    return qemu_clock_get_ns(clock) // SCALE_MS


def qemu_clock_set_manual(start_ns: Optional[int] = 0) -> None:
    """Drive the virtual clock by hand (tests), or give it back to the host."""
    with _virtual.lock:
        _virtual.manual = start_ns


def qemu_clock_step(delta_ns: int) -> int:
    """Advance the manual virtual clock (qtest ``clock_step``); return the new time."""
    with _virtual.lock:
        if _virtual.manual is None:
            raise RuntimeError("the virtual clock is not manual")
        _virtual.manual += delta_ns
        now = _virtual.manual
    qemu_clock_notify(QEMU_CLOCK_VIRTUAL)
    return now


def cpu_disable_ticks() -> None:
    """Freeze the virtual clock while the VM is stopped (vm_stop)."""
    with _virtual.lock:
        if _virtual.stopped_at is None:
            _virtual.stopped_at = _host_ns()


def cpu_enable_ticks() -> None:
    """Let the virtual clock run again, skipping the stopped time (vm_start)."""
    with _virtual.lock:
        if _virtual.stopped_at is not None:
            _virtual.offset += _host_ns() - _virtual.stopped_at
            _virtual.stopped_at = None
    qemu_clock_notify(QEMU_CLOCK_VIRTUAL)


def qemu_clock_notify(clock: QEMUClockType) -> None:
    """Kick every context with timers on ``clock`` so expired ones run."""
    for tl in list(_lists[clock]):
        tl.notify_cb(tl.notify_opaque)


class QEMUTimer:
    """One timer: ``cb(opaque)`` runs once when ``clock`` reaches the expiry."""

    __slots__ = ("cb", "expire_time", "name", "opaque", "scale", "timer_list")

    def __init__(
        self, timer_list: TimerList, scale: int, cb: Callable[[Any], None], opaque: Any, name: str
    ) -> None:
        self.timer_list = timer_list
        self.scale = scale
        self.cb = cb
        self.opaque = opaque
        self.name = name
        self.expire_time = -1  # ns; -1 when not pending

    def __lt__(self, other: QEMUTimer) -> bool:
        return self.expire_time < other.expire_time

    def __repr__(self) -> str:
        return f"<QEMUTimer {self.name} expire={self.expire_time}>"


class TimerList:
    """The pending timers of one clock in one AioContext, sorted by expiry."""

    def __init__(
        self, clock: QEMUClockType, notify_cb: Callable[[Any], None], notify_opaque: Any
    ) -> None:
        self.clock = clock
        self.notify_cb = notify_cb
        self.notify_opaque = notify_opaque
        self.lock = threading.Lock()
        self.active: list[QEMUTimer] = []
        _lists[clock][self] = None

    def deadline_ns(self) -> int:
        """Nanoseconds until the first expiry, 0 if overdue, -1 if none.

        A manual clock never advances by itself, so only an overdue timer
        bounds the wait; stepping the clock kicks the context.
        """
        with self.lock:
            if not self.active:
                return -1
            first = self.active[0].expire_time
        delta = first - qemu_clock_get_ns(self.clock)
        if delta <= 0:
            return 0
        frozen = _virtual.manual is not None or _virtual.stopped_at is not None
        if self.clock == QEMU_CLOCK_VIRTUAL and frozen:
            return -1
        return delta

    def run_timers(self) -> bool:
        """Run every expired timer (timerlist_run_timers); True if any ran."""
        progress = False
        while self.active:  # nothing armed: not even a clock read
            now = qemu_clock_get_ns(self.clock)
            with self.lock:
                if not self.active or self.active[0].expire_time > now:
                    return progress
                ts = self.active.pop(0)
                ts.expire_time = -1
            ts.cb(ts.opaque)
            progress = True
        return progress


def timer_new(
    timer_list: TimerList, scale: int, cb: Callable[[Any], None], opaque: Any = None, name: str = ""
) -> QEMUTimer:
    """A timer on ``timer_list`` (see ``aio_timer_new`` for the usual entry)."""
    return QEMUTimer(timer_list, scale, cb, opaque, name or getattr(cb, "__qualname__", "timer"))


def timer_mod_ns(ts: QEMUTimer, expire_ns: int) -> None:
    """(Re)arm ``ts`` to fire when its clock reaches ``expire_ns``."""
    tl = ts.timer_list
    with tl.lock:
        if ts.expire_time >= 0:
            tl.active.remove(ts)
        ts.expire_time = max(expire_ns, 0)
        bisect.insort(tl.active, ts)
        first = tl.active[0] is ts
    if first:
        tl.notify_cb(tl.notify_opaque)


def timer_mod(ts: QEMUTimer, expire: int) -> None:
    """Arm ``ts`` with an expiry in the timer's own scale."""
    timer_mod_ns(ts, expire * ts.scale)


def timer_del(ts: QEMUTimer) -> None:
    """Disarm ``ts``; harmless when it is not pending."""
    tl = ts.timer_list
    with tl.lock:
        if ts.expire_time >= 0:
            tl.active.remove(ts)
            ts.expire_time = -1


def timer_pending(ts: QEMUTimer) -> bool:
    return ts.expire_time >= 0


def timer_expire_time_ns(ts: QEMUTimer) -> int:
    return ts.expire_time
