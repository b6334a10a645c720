"""vCPU threads and the run-state handshakes (softmmu/cpus.c).

``qemu_init_vcpu`` asks the accelerator for a thread and waits, on
``qemu_cpu_cond`` with the BQL dropped, until the thread says it exists.
``pause_all_vcpus`` sets ``stop`` on every CPU, kicks it, and waits on
``qemu_pause_cond`` (BQL dropped) until every one has parked; only then
does ``vm_stop`` send STOP.  ``resume_all_vcpus`` clears the flags and kicks;
as in QEMU, ``vm_start`` sends RESUME just before (vm_prepare_start).

A vCPU thread's loop is the accelerator's (system/accel_model.py); the
helpers it shares with every accelerator (``qemu_wait_io_event``,
``cpu_can_run``, the created/destroyed signals) are here.

Threads: everything here runs with the BQL held, in the main loop thread
or in a vCPU thread.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from system.cpus_common import (
    CPUState,
    cpu_globals,
    cpu_has_queued_work,
    process_queued_cpu_work,
    qemu_cpu_is_self,
    qemu_cpu_kick,
)
from util.main_loop import bql_lock, bql_unlock, main_loop
from util.markers import requires_bql
from util.thread import QemuCond

#: the accelerator's create_vcpu_thread (AccelOpsClass)
CreateVcpuThread = Callable[[CPUState], None]


def cpu_is_stopped(cpu: CPUState) -> bool:
    # imported here: runstate calls pause_all_vcpus, so it imports this module
    from system.runstate import runstate_is_running

    return cpu.stopped or not runstate_is_running()


def cpu_can_run(cpu: CPUState) -> bool:
    return not cpu.stop and not cpu_is_stopped(cpu)


def cpu_thread_is_idle(cpu: CPUState) -> bool:
    """True when the vCPU thread has nothing to do but sleep."""
    if cpu.stop or cpu_has_queued_work(cpu):
        return False
    if cpu_is_stopped(cpu):
        return True
    return cpu.halted


def all_cpu_threads_idle() -> bool:
    return all(cpu_thread_is_idle(cpu) for cpu in cpu_globals().cpus)


def cpu_thread_signal_created(cpu: CPUState) -> None:
    cpu.created = True
    cpu_globals().qemu_cpu_cond.signal()


def cpu_thread_signal_destroyed(cpu: CPUState) -> None:
    cpu.created = False
    cpu_globals().qemu_cpu_cond.signal()


def qemu_cpu_stop(cpu: CPUState, exit: bool) -> None:
    """Park the calling vCPU: the pause handshake's vCPU side."""
    assert qemu_cpu_is_self(cpu)
    cpu.stop = False
    cpu.stopped = True
    if exit:
        cpu_globals().kick_vcpu_thread(cpu)
    cpu_globals().qemu_pause_cond.broadcast()


def qemu_wait_io_event_common(cpu: CPUState) -> None:
    if cpu.stop:
        qemu_cpu_stop(cpu, False)
    process_queued_cpu_work(cpu)


def qemu_wait_io_event(cpu: CPUState) -> None:
    """Sleep on the halt condition (BQL dropped) while there is nothing to do."""
    assert cpu.halt_cond is not None
    bql = main_loop().bql
    while cpu_thread_is_idle(cpu):
        cpu.halt_cond.wait(bql)
    qemu_wait_io_event_common(cpu)


@requires_bql
def qemu_init_vcpu(cpu: CPUState, create_vcpu_thread: CreateVcpuThread) -> None:
    """Start ``cpu``'s thread and wait until it is up (cpu->created)."""
    g = cpu_globals()
    cpu.stopped = True
    cpu.halt_cond = QemuCond(f"CPU {cpu.cpu_index} halt_cond")
    g.cpus.append(cpu)
    create_vcpu_thread(cpu)
    bql = main_loop().bql
    while not cpu.created:
        g.qemu_cpu_cond.wait(bql)


def all_vcpus_paused() -> bool:
    return all(cpu.stopped for cpu in cpu_globals().cpus)


@requires_bql
def pause_all_vcpus() -> None:
    """Ask every vCPU to stop and wait, BQL dropped, until all have parked."""
    g = cpu_globals()
    if not g.cpus:
        return
    for cpu in g.cpus:
        if qemu_cpu_is_self(cpu):
            qemu_cpu_stop(cpu, True)
        else:
            cpu.stop = True
            qemu_cpu_kick(cpu)
    bql = main_loop().bql
    while not all_vcpus_paused():
        g.qemu_pause_cond.wait(bql)
        for cpu in g.cpus:
            qemu_cpu_kick(cpu)


def cpu_resume(cpu: CPUState) -> None:
    cpu.stop = False
    cpu.stopped = False
    qemu_cpu_kick(cpu)


@requires_bql
def resume_all_vcpus() -> None:
    for cpu in cpu_globals().cpus:
        cpu_resume(cpu)


@requires_bql
def cpu_remove_sync(cpu: CPUState) -> None:
    """Make ``cpu``'s thread leave its loop and join it (BQL dropped)."""
    cpu.stop = True
    cpu.unplug = True
    qemu_cpu_kick(cpu)
    bql_unlock()
    try:
        assert cpu.thread is not None
        cpu.thread.join()
    finally:
        bql_lock()
    cpu_globals().cpus.remove(cpu)


@requires_bql
def cpus_cleanup() -> None:
    """Emulator only: join every vCPU thread at exit (QEMU just exits)."""
    for cpu in list(cpu_globals().cpus):
        cpu_remove_sync(cpu)


# ---------------------------------------------------------------- QMP


def _cpu_info_fast(cpu: CPUState) -> dict[str, Any]:
    return {
        "thread-id": cpu.thread_id,
        "props": {"core-id": cpu.cpu_index, "thread-id": 0, "socket-id": 0},
        "qom-path": cpu.qom_path,
        "cpu-index": cpu.cpu_index,
        "target": "x86_64",
    }


def query_cpus_fast() -> list[dict[str, Any]]:
    """Every vCPU with its host thread id, without interrupting it."""
    return [_cpu_info_fast(cpu) for cpu in cpu_globals().cpus]


def first_cpu() -> Optional[CPUState]:
    cpus = cpu_globals().cpus
    return cpus[0] if cpus else None
