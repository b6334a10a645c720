"""Read-copy-update (util/rcu.c, include/qemu/rcu.h).

QEMU's RCU is the userspace "memory barrier" flavour: each thread has a
reader record whose counter is non-zero while it is inside a read-side
critical section; ``synchronize_rcu`` bumps the global grace-period counter
and waits until every registered reader has either left its section or
entered a new one.  ``call_rcu`` queues a callback for the ``call_rcu``
thread, which waits for a grace period and then runs the callbacks with the
BQL held.  ``drain_call_rcu`` waits for every callback queued so far,
dropping the BQL meanwhile, and asks readers that are still inside a
section to leave it (their *force_rcu* notifiers: for a TCG vCPU, a kick).
That last step is the fix of bugs.md entry 24 (Greg Kurz, "rcu: Introduce
force_rcu notifier" and "accel/tcg: Register a force_rcu notifier",
2021-11, gitlab issue 650).

Differences from QEMU, both about the process's life: the ``call_rcu``
thread starts with the first ``call_rcu`` instead of in a constructor, so a
process that never uses RCU has no extra thread; and ``rcu_cleanup`` stops
and joins it, so a test (or ``qemu_cleanup``) leaves no thread behind.

Threads: readers in any thread (vCPUs here); ``synchronize_rcu`` in any
thread that is not a reader; callbacks in the ``call_rcu`` thread with the
BQL.  Every wait and flag goes through util/, so the explorer schedules the
grace period like everything else.
"""

from __future__ import annotations

from collections import deque
from typing import Callable, Optional

from util.atomic import QAtomic, qatomic_dec, qatomic_inc, qatomic_read, qatomic_set, qatomic_sub
from util.main_loop import bql_lock, bql_locked, bql_unlock
from util.thread import (
    QemuEvent,
    QemuMutex,
    QemuThread,
    QemuThreadLocal,
    g_usleep,
    qemu_thread_create,
    qemu_thread_get_name,
)
from util.trace import trace_event

#: bit 0 of the grace-period counter is always set: a reader's counter is
#: non-zero exactly while it is inside a critical section
RCU_GP_LOCKED = 1
RCU_GP_CTR = 2
#: the call_rcu thread waits (up to five times 10 ms) for this many callbacks
RCU_CALL_MIN_SIZE = 30

trace_synchronize_rcu = trace_event("synchronize_rcu", "readers")
trace_call_rcu_thread_run = trace_event("call_rcu_thread_run", "callbacks")

ForceRcuNotifier = Callable[[], None]


class RcuReaderData:
    """One thread's reader record (struct rcu_reader_data)."""

    def __init__(self, thread: str) -> None:
        self.thread = thread
        #: the grace-period counter seen at rcu_read_lock, 0 outside a section
        self.ctr: QAtomic[int] = QAtomic(0, "rcu_reader.ctr", thread)
        #: synchronize_rcu waits for this reader and wants an rcu_gp_event
        self.waiting: QAtomic[bool] = QAtomic(False, "rcu_reader.waiting", thread)
        #: nesting depth, touched by the owning thread only
        self.depth = 0
        #: called when a drain waits for this reader; protected by rcu_registry_lock
        self.force_rcu: list[ForceRcuNotifier] = []


class _ReaderTLS(QemuThreadLocal):
    reader: Optional[RcuReaderData] = None


class RcuGlobals:
    """util/rcu.c's statics, in one object a test can build fresh."""

    def __init__(self) -> None:
        self.rcu_gp_ctr: QAtomic[int] = QAtomic(RCU_GP_LOCKED, "rcu_gp_ctr")
        self.rcu_gp_event = QemuEvent(True, "rcu_gp_event")
        self.in_drain_call_rcu: QAtomic[int] = QAtomic(0, "in_drain_call_rcu")
        self.rcu_registry_lock = QemuMutex("rcu_registry_lock")
        self.rcu_sync_lock = QemuMutex("rcu_sync_lock")
        #: registered readers; protected by rcu_registry_lock
        self.registry: list[RcuReaderData] = []
        #: queued callbacks (QEMU's lock-free queue; deque appends are atomic)
        self.queue: deque[Callable[[], None]] = deque()
        self.rcu_call_count: QAtomic[int] = QAtomic(0, "rcu_call_count")
        self.rcu_call_ready_event = QemuEvent(False, "rcu_call_ready_event")
        self.thread: Optional[QemuThread] = None
        #: emulator only: rcu_cleanup asks the call_rcu thread to finish
        self.exiting: QAtomic[bool] = QAtomic(False, "rcu_exiting")
        self.thread_lock = QemuMutex("rcu_thread_lock")


class _Current:
    rcu: RcuGlobals = RcuGlobals()


_current = _Current()
_tls = _ReaderTLS()


def rcu_globals() -> RcuGlobals:
    return _current.rcu


def get_ptr_rcu_reader() -> RcuReaderData:
    """The calling thread's reader record, made on first use."""
    reader = _tls.reader
    if reader is None:
        reader = _tls.reader = RcuReaderData(qemu_thread_get_name())
    return reader


# ---------------------------------------------------------------- readers


def rcu_read_lock() -> None:
    """Enter a read-side critical section (nests)."""
    reader = get_ptr_rcu_reader()
    reader.depth += 1
    if reader.depth == 1:
        qatomic_set(reader.ctr, qatomic_read(_current.rcu.rcu_gp_ctr))


def rcu_read_unlock() -> None:
    """Leave it; the outermost unlock wakes a waiting synchronize_rcu."""
    reader = get_ptr_rcu_reader()
    assert reader.depth > 0, "rcu_read_unlock without rcu_read_lock"
    reader.depth -= 1
    if reader.depth:
        return
    qatomic_set(reader.ctr, 0)
    if qatomic_read(reader.waiting):
        qatomic_set(reader.waiting, False)
        _current.rcu.rcu_gp_event.set()


def rcu_register_thread() -> None:
    """Make the calling thread's sections count for grace periods."""
    reader = get_ptr_rcu_reader()
    assert qatomic_read(reader.ctr) == 0
    g = _current.rcu
    with g.rcu_registry_lock:
        g.registry.append(reader)


def rcu_unregister_thread() -> None:
    g = _current.rcu
    with g.rcu_registry_lock:
        g.registry.remove(get_ptr_rcu_reader())


def rcu_add_force_rcu_notifier(notify: ForceRcuNotifier) -> None:
    """Called, with rcu_registry_lock held, when a drain waits for this thread."""
    g = _current.rcu
    with g.rcu_registry_lock:
        get_ptr_rcu_reader().force_rcu.append(notify)


def rcu_remove_force_rcu_notifier(notify: ForceRcuNotifier) -> None:
    g = _current.rcu
    with g.rcu_registry_lock:
        get_ptr_rcu_reader().force_rcu.remove(notify)


# ---------------------------------------------------------------- writers


def _rcu_gp_ongoing(g: RcuGlobals, reader: RcuReaderData) -> bool:
    """True while ``reader`` is in a section begun before this grace period."""
    v = qatomic_read(reader.ctr)
    return bool(v) and v != qatomic_read(g.rcu_gp_ctr)


def wait_for_readers(g: RcuGlobals) -> None:
    """Wait until every registered reader crossed a quiescent state.

    Called with rcu_registry_lock held; dropped while waiting, so threads can
    (un)register meanwhile.
    """
    pending = list(g.registry)
    while True:
        g.rcu_gp_event.reset()
        for reader in pending:
            qatomic_set(reader.waiting, True)
        still = []
        for reader in pending:
            if not _rcu_gp_ongoing(g, reader):
                qatomic_set(reader.waiting, False)
            else:
                still.append(reader)
                if qatomic_read(g.in_drain_call_rcu):
                    for notify in list(reader.force_rcu):
                        notify()
        # an unregistered reader is no longer waited for
        pending = [r for r in still if r in g.registry]
        if not pending:
            return
        g.rcu_registry_lock.unlock()
        g.rcu_gp_event.wait()
        g.rcu_registry_lock.lock()


def synchronize_rcu() -> None:
    """Wait for a full grace period: every section begun before has ended."""
    g = _current.rcu
    assert get_ptr_rcu_reader().depth == 0, "synchronize_rcu inside a read-side section"
    with g.rcu_sync_lock, g.rcu_registry_lock:
        if g.registry:
            qatomic_set(g.rcu_gp_ctr, qatomic_read(g.rcu_gp_ctr) + RCU_GP_CTR)
            trace_synchronize_rcu(len(g.registry))
            wait_for_readers(g)


def call_rcu1(func: Callable[[], None]) -> None:
    """Run ``func`` in the call_rcu thread, with the BQL, after a grace period."""
    g = _current.rcu
    _rcu_thread_start(g)
    g.queue.append(func)
    qatomic_inc(g.rcu_call_count)
    g.rcu_call_ready_event.set()


def drain_call_rcu() -> None:
    """Wait until every callback queued so far has run.

    Drops the BQL while waiting, as QEMU does, so the callbacks (which take
    it) can run; while it waits, readers that stay inside a section are
    forced out through their notifiers.
    """
    g = _current.rcu
    done = QemuEvent(False, "drain_complete_event")
    locked = bql_locked()
    if locked:
        bql_unlock()
    qatomic_inc(g.in_drain_call_rcu)
    call_rcu1(done.set)
    done.wait()
    qatomic_dec(g.in_drain_call_rcu)
    if locked:
        bql_lock()


# ---------------------------------------------------------------- the thread


def _rcu_thread_start(g: RcuGlobals) -> None:
    with g.thread_lock:
        if g.thread is None:
            g.thread = qemu_thread_create("call_rcu", call_rcu_thread, g)


def _wait_for_callbacks(g: RcuGlobals) -> int:
    """How many callbacks to run now, batching as QEMU does; -1 to exit."""
    tries = 0
    n = qatomic_read(g.rcu_call_count)
    while n == 0 or (n < RCU_CALL_MIN_SIZE and tries < 5):
        tries += 1
        g_usleep(10000)
        if n == 0:
            g.rcu_call_ready_event.reset()
            n = qatomic_read(g.rcu_call_count)
            if n == 0:
                if qatomic_read(g.exiting):
                    return -1
                g.rcu_call_ready_event.wait()
        n = qatomic_read(g.rcu_call_count)
    return n


def call_rcu_thread(g: RcuGlobals) -> None:
    """Wait for callbacks, a grace period, then run them under the BQL."""
    rcu_register_thread()
    while True:
        n = _wait_for_callbacks(g)
        if n < 0:
            break
        qatomic_sub(g.rcu_call_count, n)
        synchronize_rcu()
        trace_call_rcu_thread_run(n)
        bql_lock()
        for _ in range(n):
            g.queue.popleft()()
        bql_unlock()
    rcu_unregister_thread()


def rcu_cleanup() -> None:
    """Emulator only: finish pending callbacks and join the call_rcu thread."""
    g = _current.rcu
    thread = g.thread
    if thread is None:
        return
    locked = bql_locked()
    if locked:
        bql_unlock()
    qatomic_set(g.exiting, True)
    g.rcu_call_ready_event.set()
    thread.join()
    if locked:
        bql_lock()
    _current.rcu = RcuGlobals()
