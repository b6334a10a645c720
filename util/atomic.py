"""Atomic operations (include/qemu/atomic.h) on :class:`QAtomic` cells.

Shared flags such as ``suspend_cnt`` and ``qmp_dispatcher_co_busy`` are cells,
never bare attributes written from two threads, so every access is one
function call that can be found with grep, traced, and later scheduled by a
deterministic runner.  Read-modify-write operations are made indivisible with
a per-cell lock; plain reads and writes rely on the interpreter's atomic
attribute access.  The ``_mb`` variants are the same operations: the
interpreter already orders memory sequentially.
"""

from __future__ import annotations

import threading
from typing import Generic, TypeVar

T = TypeVar("T")


class QAtomic(Generic[T]):
    """A cell holding one value that several threads access atomically."""

    __slots__ = ("_lock", "value")

    def __init__(self, value: T) -> None:
        self.value = value
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"QAtomic({self.value!r})"


def qatomic_read(cell: QAtomic[T]) -> T:
    return cell.value


def qatomic_set(cell: QAtomic[T], value: T) -> None:
    cell.value = value


def qatomic_xchg(cell: QAtomic[T], value: T) -> T:
    """Store ``value`` and return the previous one."""
    with cell._lock:
        old, cell.value = cell.value, value
    return old


def qatomic_cmpxchg(cell: QAtomic[T], old: T, new: T) -> T:
    """Store ``new`` if the cell holds ``old``; return what it held."""
    with cell._lock:
        cur = cell.value
        if cur == old:
            cell.value = new
    return cur


def qatomic_fetch_inc(cell: QAtomic[int]) -> int:
    with cell._lock:
        old = cell.value
        cell.value = old + 1
    return old


def qatomic_fetch_dec(cell: QAtomic[int]) -> int:
    with cell._lock:
        old = cell.value
        cell.value = old - 1
    return old


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
