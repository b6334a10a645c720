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
import threading
from typing import Any

from greenlet import getcurrent

from util.sched import SCHED

#: The declared hierarchy (DESIGN.md "Locks"): lower ranks are taken first.
#: A mux chardev takes its own write lock, then its base chardev's, so its
#: class sits between the monitor's locks and chr_write_lock.  The leaves
#: guard chardev bookkeeping and the yank registry and nest nothing.
#: RCU's locks may be taken with the BQL held (synchronize_rcu); a force_rcu
#: notifier queues work on a vCPU with rcu_registry_lock held.
LOCK_RANKS: dict[str, int] = {
    "BQL": 1,
    "monitor_lock": 2,
    "rcu_sync_lock": 2,
    "rcu_thread_lock": 2,
    "rcu_registry_lock": 3,
    "cpu_work_mutex": 4,
    "qmp_queue_lock": 3,
    "mon_lock": 3,
    "mux_chr_write_lock": 4,
    "mon_fdsets_lock": 5,
    "chr_write_lock": 5,
    "chr_sources_lock": 6,
    "chr_pair_lock": 6,
    "yank_lock": 6,
}


class LockOrderError(AssertionError):
    """Two lock classes were taken in an order the hierarchy forbids."""


class Site:
    """Where a lock was acquired: source position and thread name.

    Read-only by convention.  A plain class, not a frozen dataclass: that
    would import ``dataclasses`` (and ``inspect``) at every start-up.
    """

    __slots__ = ("filename", "lineno", "thread")

    filename: str
    lineno: int
    thread: str

    def __init__(self, filename: str, lineno: int, thread: str) -> None:
        self.filename = filename
        self.lineno = lineno
        self.thread = thread

    def __str__(self) -> str:
        return f"{os.path.relpath(self.filename)}:{self.lineno} [{self.thread}]"


#: One entry of a thread's held-lock stack: ``(lock, code, lasti, owner)``,
#: the lock, the code object and bytecode offset that took it, and the
#: greenlet that did (a coroutine or the thread's root).  A plain tuple, and
#: an offset rather than a line number, because one is built on every
#: acquisition; :func:`held_site` turns it into a :class:`Site` for the rare
#: report.
Held = tuple[Any, Any, int, Any]


class _State:
    """Process-wide checker state: the observed graph and the violations."""

    def __init__(self) -> None:
        self.mutex = threading.Lock()
        self.edges: dict[tuple[str, str], tuple[Site, Site]] = {}
        self.violations: list[str] = []
        #: per inner class, the outer classes already ranked and recorded
        #: against it: the common nestings (everything under the BQL) cost
        #: one set lookup of a string whose hash is cached
        self.checked: dict[str, set[str]] = {}


_state = _State()


class HeldStack(list[Held]):
    """One thread's held locks, innermost last, with the thread's identity.

    A mutex records the stack of the thread that holds it as its owner: the
    object is fetched for the push anyway, so ownership costs no extra call.
    """

    __slots__ = ("ident", "name")

    def __init__(self) -> None:
        super().__init__()
        self.ident = threading.get_ident()
        self.name = threading.current_thread().name


class _ThreadState(threading.local):
    """Per thread: the held-lock stack."""

    def __init__(self) -> None:
        self.stack = HeldStack()


#: the calling thread's state; util/thread.py pushes and pops ``stack`` inline
lockdep_tls = _ThreadState()


def held_site(entry: Held) -> Site:
    """Where the held-stack ``entry`` was taken, in the calling thread."""
    return Site(entry[1].co_filename, code_line(entry[1], entry[2]), lockdep_tls.stack.name)


def code_line(code: Any, lasti: int) -> int:
    """The source line of bytecode offset ``lasti`` in ``code`` (a frame's f_lineno)."""
    for start, end, line in code.co_lines():
        if start <= lasti < end and line is not None:
            return int(line)
    return int(code.co_firstlineno)


#: code objects of util/'s own locking wrappers, skipped when naming a site
LOCKDEP_WRAPPER_CODES: set[Any] = set()


def lockdep_skip_frames_of(*functions: Any) -> None:
    """Declare wrappers (``__enter__``, ``bql_lock``) that are not a lock's site."""
    LOCKDEP_WRAPPER_CODES.update(fn.__code__ for fn in functions)


def lockdep_site_frame(frame: Any) -> Any:
    """The first frame from ``frame`` outwards that is not a locking wrapper."""
    while frame.f_code in LOCKDEP_WRAPPER_CODES and frame.f_back is not None:
        frame = frame.f_back
    return frame


def _violation(msg: str) -> None:
    with _state.mutex:
        _state.violations.append(msg)
    raise LockOrderError(msg)


def checked_outer(cls: str) -> set[str]:
    """The outer classes already ranked and recorded against class ``cls``.

    The same set object for the life of the process (a reset empties it), so
    each QemuMutex keeps a reference for its inline fast path.
    """
    with _state.mutex:
        return _state.checked.setdefault(cls, set())


def lockdep_acquire(lock: Any, entry: Held, stack: list[Held]) -> None:
    """Check taking ``lock`` (described by ``entry``) against the held ``stack``.

    Called before blocking on the lock, so an inversion is reported instead
    of deadlocking; the caller skips it when the stack is empty.
    """
    cls = lock.name
    checked = checked_outer(cls)
    for held in stack:
        held_lock = held[0]
        if held_lock is lock:
            if held[3] is not entry[3]:
                # another coroutine of this thread holds it (it is parked):
                # not recursion but a deadlock, which the explorer reports
                # with its cycle; outside it, fail here instead of hanging
                if SCHED.active:
                    return
                _violation(
                    f"deadlock: {cls} is held by a parked coroutine of this thread "
                    f"since {held_site(held)}; wanted again at {held_site(entry)}"
                )
            _violation(
                f"recursive locking of {cls}: held since {held_site(held)}, "
                f"again at {held_site(entry)}"
            )
        if held_lock.name not in checked:
            _check_pair(held, entry)


def _check_pair(held: Held, entry: Held) -> None:
    """Rank-check and record the edge (held class -> entry's class) once."""
    hcls, cls = held[0].name, entry[0].name
    rank, hrank = LOCK_RANKS.get(cls), LOCK_RANKS.get(hcls)
    if rank is not None and hrank is not None and hrank >= rank:
        _violation(
            f"lock order violation: {cls} (rank {rank}) acquired at {held_site(entry)} "
            f"while holding {hcls} (rank {hrank}) acquired at {held_site(held)}"
        )
    _record_edge(hcls, cls, held_site(held), held_site(entry))
    checked_outer(cls).add(hcls)


def _record_edge(outer: str, inner: str, outer_site: Site, inner_site: Site) -> None:
    key = (outer, inner)
    with _state.mutex:
        _state.edges.setdefault(key, (outer_site, inner_site))
        reverse = _state.edges.get((inner, outer))
    if reverse is not None and outer != inner:
        _violation(
            f"lock order inversion: {inner} acquired at {inner_site} while holding {outer} "
            f"(taken at {outer_site}), but {outer} was acquired at {reverse[1]} while "
            f"holding {inner} (taken at {reverse[0]})"
        )


def lockdep_release(lock: Any, stack: list[Held]) -> None:
    """Remove ``lock`` from the held ``stack`` at any position (out-of-order unlock)."""
    for i in range(len(stack) - 1, -1, -1):
        if stack[i][0] is lock:
            del stack[i]
            return
    raise LockOrderError(f"{lock.name} released by a thread that does not hold it")


def locks_held_by_current_greenlet(ignore: tuple[str, ...] = ("BQL",)) -> list[Held]:
    """Locks the running coroutine took itself (checked at every yield)."""
    stack = lockdep_tls.stack
    if not stack or (len(stack) == 1 and stack[0][0].name in ignore):
        return []  # the usual yield: nothing, or only the BQL, held
    me = getcurrent()
    return [h for h in stack if h[3] is me and h[0].name not in ignore]


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
        for outer in _state.checked.values():
            outer.clear()
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
