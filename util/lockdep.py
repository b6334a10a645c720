"""Lock-order checking keyed by lock class, in the spirit of Linux lockdep.

QEMU has no such checker; its lock order lives in comments
(monitor-internal.h).  Here the order is one table and every acquisition of a
:class:`util.thread.QemuMutex` is checked against it, in whatever thread it
happens:

* each thread keeps a stack of the locks it holds, with the site where each
  was taken;
* acquiring a lock whose rank is not greater than the rank of a held lock is a
  violation (classes of equal rank must not nest);
* every (held class -> acquired class) edge is recorded with its first site, so
  classes missing from the table are still checked: acquiring B while holding A
  after some thread once acquired A while holding B is an inversion, reported
  with both sites even if the run never deadlocks.

A violation raises :class:`LockOrderError` in the offending thread and is also
kept in a list, so an error swallowed by a callback still fails the test.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass
from typing import Any, Optional

from greenlet import getcurrent

#: The declared hierarchy (DESIGN.md "Locks"): lower ranks are taken first.
LOCK_RANKS: dict[str, int] = {
    "BQL": 1,
    "monitor_lock": 2,
    "qmp_queue_lock": 3,
    "mon_lock": 3,
    "mon_fdsets_lock": 4,
    "chr_write_lock": 4,
}

_UTIL_DIR = os.path.dirname(os.path.abspath(__file__))


class LockOrderError(AssertionError):
    """Two lock classes were taken in an order the hierarchy forbids."""


@dataclass(frozen=True)
class Site:
    """Where a lock was acquired: source position and thread name."""

    filename: str
    lineno: int
    thread: str

    def __str__(self) -> str:
        return f"{os.path.relpath(self.filename)}:{self.lineno} [{self.thread}]"


@dataclass
class Held:
    """One entry of a thread's held-lock stack."""

    lock: Any
    site: Site
    owner: Any  # the greenlet that took it (a coroutine or the thread's root)


class _State:
    """Process-wide checker state: the observed graph and the violations."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.edges: dict[tuple[str, str], tuple[Site, Site]] = {}
        self.violations: list[str] = []


_state = _State()
_tls = threading.local()


def held_stack() -> list[Held]:
    """The calling thread's stack of held locks (outermost first)."""
    stack: Optional[list[Held]] = getattr(_tls, "stack", None)
    if stack is None:
        stack = _tls.stack = []
    return stack


def acquisition_site() -> Site:
    """The first frame outside util/'s lock code, for reports."""
    frame = sys._getframe(1)
    while (
        frame.f_back is not None
        and frame.f_code.co_filename.startswith(_UTIL_DIR)
        and (frame.f_code.co_filename.endswith(("lockdep.py", "thread.py", "main_loop.py")))
    ):
        frame = frame.f_back
    return Site(frame.f_code.co_filename, frame.f_lineno, threading.current_thread().name)


def _violation(msg: str) -> None:
    with _state.mutex:
        _state.violations.append(msg)
    raise LockOrderError(msg)


def lockdep_acquire(lock: Any, site: Site) -> None:
    """Check taking ``lock`` against every lock this thread holds.

    Called before blocking on the lock, so an inversion is reported instead
    of deadlocking.
    """
    cls = lock.name
    rank = LOCK_RANKS.get(cls)
    for held in held_stack():
        if held.lock is lock:
            _violation(f"recursive locking of {cls}: held since {held.site}, again at {site}")
        hcls = held.lock.name
        hrank = LOCK_RANKS.get(hcls)
        if rank is not None and hrank is not None and hrank >= rank:
            _violation(
                f"lock order violation: {cls} (rank {rank}) acquired at {site} "
                f"while holding {hcls} (rank {hrank}) acquired at {held.site}"
            )
        _record_edge(hcls, cls, held.site, site)


def _record_edge(outer: str, inner: str, outer_site: Site, inner_site: Site) -> None:
    key = (outer, inner)
    if key in _state.edges:
        return
    with _state.mutex:
        _state.edges.setdefault(key, (outer_site, inner_site))
        reverse = _state.edges.get((inner, outer))
    if reverse is not None and outer != inner:
        _violation(
            f"lock order inversion: {inner} acquired at {inner_site} while holding {outer} "
            f"(taken at {outer_site}), but {outer} was acquired at {reverse[1]} while "
            f"holding {inner} (taken at {reverse[0]})"
        )


def lockdep_acquired(lock: Any, site: Site) -> None:
    """Push ``lock`` on the calling thread's held stack."""
    held_stack().append(Held(lock, site, getcurrent()))


def lockdep_release(lock: Any) -> None:
    """Pop ``lock`` from the calling thread's held stack (any position)."""
    stack = held_stack()
    for i in range(len(stack) - 1, -1, -1):
        if stack[i].lock is lock:
            del stack[i]
            return
    raise LockOrderError(f"{lock.name} released by a thread that does not hold it")


def locks_held_by_current_greenlet(ignore: tuple[str, ...] = ("BQL",)) -> list[Held]:
    """Locks the running coroutine took itself (checked at every yield)."""
    me = getcurrent()
    return [h for h in held_stack() if h.owner is me and h.lock.name not in ignore]


def lockdep_violations() -> list[str]:
    """Every violation seen since the last reset."""
    with _state.mutex:
        return list(_state.violations)


def lockdep_reset_violations() -> None:
    """Forget recorded violations (tests that provoke one on purpose)."""
    with _state.mutex:
        _state.violations.clear()


def lockdep_reset() -> None:
    """Forget the observed graph and the violations."""
    with _state.mutex:
        _state.edges.clear()
        _state.violations.clear()


def lockdep_edges() -> dict[tuple[str, str], tuple[Site, Site]]:
    """The observed (outer, inner) class edges with their first sites."""
    with _state.mutex:
        return dict(_state.edges)


def lockdep_dump() -> str:
    """The observed acquisition graph as text, one edge a line."""
    lines = ["lock classes (declared rank):"]
    for cls, rank in sorted(LOCK_RANKS.items(), key=lambda kv: (kv[1], kv[0])):
        lines.append(f"  {rank} {cls}")
    lines.append("observed edges (outer -> inner, first seen at):")
    for (outer, inner), (osite, isite) in sorted(lockdep_edges().items()):
        lines.append(f"  {outer} -> {inner}: {osite} -> {isite}")
    for v in lockdep_violations():
        lines.append(f"VIOLATION: {v}")
    return "\n".join(lines)
