"""Atomic operations (include/qemu/atomic.h) on :class:`QAtomic` cells.

Shared flags such as ``suspend_cnt`` and ``qmp_dispatcher_co_busy`` are cells,
never bare attributes written from two threads, so every access is one
function call that can be found with grep, traced, and later scheduled by a
deterministic runner.  Read-modify-write operations are made indivisible with
a per-cell lock; plain reads and writes rely on the interpreter's atomic
attribute access.  The ``_mb`` variants are the same operations: the
interpreter already orders memory sequentially.

Every operation is a point of the explorer's scheduler (util/sched.py): a
flag read by one thread and written by another is exactly where an
interleaving can go wrong, so the cell's ``name`` says which flag it is.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

from util.sched import SCHED, sched_point

T = TypeVar("T")


class QAtomic(Generic[T]):
    """A cell holding one value that several threads access atomically."""

    __slots__ = ("_lock", "label", "name", "value")

    def __init__(self, value: T, name: str = "atomic", label: str = "") -> None:
        self.value = value
        #: the flag's name and, for per-instance flags, whose it is
        self.name = name
        self.label = label
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"QAtomic({self.name}={self.value!r})"


def qatomic_read(cell: QAtomic[T]) -> T:
    if SCHED.active:
        sched_point("qatomic_read", cell)
    return cell.value


def qatomic_set(cell: QAtomic[T], value: T) -> None:
    if SCHED.active:
        sched_point("qatomic_set", cell)
    cell.value = value


def qatomic_xchg(cell: QAtomic[T], value: T) -> T:
    """Store ``value`` and return the previous one."""
    if SCHED.active:
        sched_point("qatomic_xchg", cell)
    with cell._lock:
        old, cell.value = cell.value, value
    return old


def qatomic_cmpxchg(cell: QAtomic[T], old: T, new: T) -> T:
    """Store ``new`` if the cell holds ``old``; return what it held."""
    if SCHED.active:
        sched_point("qatomic_cmpxchg", cell)
    with cell._lock:
        cur = cell.value
        if cur == old:
            cell.value = new
    return cur


def qatomic_fetch_inc(cell: QAtomic[int]) -> int:
    if SCHED.active:
        sched_point("qatomic_inc", cell)
    with cell._lock:
        old = cell.value
        cell.value = old + 1
    return old


def qatomic_fetch_dec(cell: QAtomic[int]) -> int:
    if SCHED.active:
        sched_point("qatomic_dec", cell)
    with cell._lock:
        old = cell.value
        cell.value = old - 1
    return old


def qatomic_sub(cell: QAtomic[int], n: int) -> None:
    if SCHED.active:
        sched_point("qatomic_sub", cell)
    with cell._lock:
        cell.value -= n


def qatomic_inc_fetch(cell: QAtomic[int]) -> int:
    return qatomic_fetch_inc(cell) + 1


def qatomic_dec_fetch(cell: QAtomic[int]) -> int:
    return qatomic_fetch_dec(cell) - 1


def qatomic_inc(cell: QAtomic[int]) -> None:
    qatomic_fetch_inc(cell)


def qatomic_dec(cell: QAtomic[int]) -> None:
    qatomic_fetch_dec(cell)


qatomic_mb_read = qatomic_read
qatomic_mb_set = qatomic_set
qatomic_load_acquire = qatomic_read
qatomic_store_release = qatomic_set
