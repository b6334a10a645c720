"""The CPU object and work run on a vCPU (hw/core/cpu-common.c, cpus-common.c).

``CPUState`` keeps the fields QEMU's run-state handshakes use; the list of
CPUs is the ``cpus`` list of :class:`CpuGlobals` (QEMU's ``cpus_queue``).
``run_on_cpu`` queues a work item on a vCPU, kicks it and waits, with the
BQL dropped, on ``qemu_work_cond`` until the vCPU thread has run it;
``async_run_on_cpu`` queues and returns.  ``process_queued_cpu_work`` runs
in the vCPU thread with the BQL held.

Threads: the list and the ``stop``/``stopped``/``created``/``unplug`` flags
are protected by the BQL; the work list by the CPU's ``work_mutex``;
``exit_request`` and a work item's ``done`` are atomics, read without locks.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Callable, Optional

from util.atomic import QAtomic, qatomic_read, qatomic_set
from util.main_loop import main_loop
from util.thread import QemuCond, QemuEvent, QemuMutex, QemuThread

RunOnCpuFunc = Callable[["CPUState", Any], None]


class QemuWorkItem:
    """One queued function (struct qemu_work_item)."""

    __slots__ = ("data", "done", "free", "func")

    def __init__(self, func: RunOnCpuFunc, data: Any, free: bool) -> None:
        self.func = func
        self.data = data
        #: async items are dropped after running; sync ones signal ``done``
        self.free = free
        self.done: QAtomic[bool] = QAtomic(False, "qemu_work_item.done")


class CPUState:
    """A vCPU (struct CPUState), as far as threads and run state go."""

    def __init__(self, cpu_index: int) -> None:
        self.cpu_index = cpu_index
        self.thread: Optional[QemuThread] = None
        #: the host's id of the vCPU thread, set by the thread itself
        self.thread_id = 0
        #: where the vCPU thread sleeps while halted or stopped
        self.halt_cond: Optional[QemuCond] = None
        #: protected by the BQL
        self.created = False
        #: asked to stop (pause_all_vcpus); protected by the BQL
        self.stop = False
        #: parked; a new CPU starts stopped (cpu_common_initfn); protected by the BQL
        self.stopped = True
        #: asked to leave for good (cpu_remove_sync); protected by the BQL
        self.unplug = False
        #: the guest has nothing to do (an idle guest model)
        self.halted = True
        #: leave guest code at the next opportunity (cpu_exit)
        self.exit_request: QAtomic[int] = QAtomic(0, "exit_request", f"CPU {cpu_index}")
        #: what a guest-time wait sleeps on, so a kick cuts it short
        self.kick_event = QemuEvent(False, f"CPU {cpu_index} kick")
        self.work_mutex = QemuMutex("cpu_work_mutex", f"CPU {cpu_index}")
        #: protected by work_mutex
        self.work_list: deque[QemuWorkItem] = deque()
        #: the accelerator's per-CPU state (the guest model)
        self.accel: Any = None

    @property
    def qom_path(self) -> str:
        return f"/machine/unattached/device[{self.cpu_index}]"

    def __repr__(self) -> str:
        return f"<CPUState {self.cpu_index}>"


class CpuGlobals:
    """cpus.c's and cpus-common.c's statics: the CPU list and the conditions."""

    def __init__(self) -> None:
        #: protected by the BQL
        self.cpus: list[CPUState] = []
        #: signalled when a vCPU thread has started (cpu->created)
        self.qemu_cpu_cond = QemuCond("qemu_cpu_cond")
        #: broadcast when a vCPU parks
        self.qemu_pause_cond = QemuCond("qemu_pause_cond")
        #: broadcast when a vCPU has run its queued work
        self.qemu_work_cond = QemuCond("qemu_work_cond")
        #: makes a vCPU leave guest code (the accelerator's kick_vcpu_thread)
        self.kick_vcpu_thread: Callable[[CPUState], None] = _no_kick


def _no_kick(cpu: CPUState) -> None:
    """Before an accelerator is chosen there is no thread to kick."""


class _Current:
    cpus: CpuGlobals = CpuGlobals()


_current = _Current()


def cpu_globals() -> CpuGlobals:
    return _current.cpus


def cpu_globals_reset() -> CpuGlobals:
    """Fresh globals (start-up and tests)."""
    _current.cpus = CpuGlobals()
    return _current.cpus


def qemu_get_cpu(index: int) -> Optional[CPUState]:
    for cpu in _current.cpus.cpus:
        if cpu.cpu_index == index:
            return cpu
    return None


def qemu_cpu_is_self(cpu: CPUState) -> bool:
    return cpu.thread is not None and cpu.thread.is_self()


def qemu_cpu_kick(cpu: CPUState) -> None:
    """Wake a sleeping vCPU and make a running one leave guest code."""
    if cpu.halt_cond is not None:
        cpu.halt_cond.broadcast()
    _current.cpus.kick_vcpu_thread(cpu)


def queue_work_on_cpu(cpu: CPUState, wi: QemuWorkItem) -> None:
    with cpu.work_mutex:
        cpu.work_list.append(wi)
        qatomic_set(wi.done, False)
    qemu_cpu_kick(cpu)


def run_on_cpu(cpu: CPUState, func: RunOnCpuFunc, data: Any = None) -> None:
    """Run ``func(cpu, data)`` in ``cpu``'s thread and wait for it.

    Called with the BQL, which the wait drops (do_run_on_cpu): the vCPU
    needs it to reach its work.
    """
    if qemu_cpu_is_self(cpu):
        func(cpu, data)
        return
    wi = QemuWorkItem(func, data, free=False)
    queue_work_on_cpu(cpu, wi)
    bql = main_loop().bql
    while not qatomic_read(wi.done):
        _current.cpus.qemu_work_cond.wait(bql)


def async_run_on_cpu(cpu: CPUState, func: RunOnCpuFunc, data: Any = None) -> None:
    """Queue ``func(cpu, data)`` for ``cpu``'s thread without waiting."""
    queue_work_on_cpu(cpu, QemuWorkItem(func, data, free=True))


def cpu_has_queued_work(cpu: CPUState) -> bool:
    with cpu.work_mutex:
        return bool(cpu.work_list)


def process_queued_cpu_work(cpu: CPUState) -> None:
    """Run the queued items in the vCPU thread (BQL held), then wake waiters."""
    with cpu.work_mutex:
        if not cpu.work_list:
            return
    while True:
        with cpu.work_mutex:
            if not cpu.work_list:
                break
            wi = cpu.work_list.popleft()
        wi.func(cpu, wi.data)
        if not wi.free:
            qatomic_set(wi.done, True)
    _current.cpus.qemu_work_cond.broadcast()
