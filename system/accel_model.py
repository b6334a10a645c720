"""The guest model: an emulator-only accelerator (accel/tcg/tcg-accel-ops-mttcg.c).

``-accel x-model[,exit-rate=R][,exit-cost=C][,rcu-section=on|off]`` gives
``-machine none`` the vCPUs of ``-smp N``, one thread each, named as MTTCG
names them (``CPU 0/TCG``).  Each vCPU runs the MTTCG thread loop: with the
BQL it waits for work or for the VM to run; without it, it executes the
guest.  The guest is a model, not code: it runs for ``1/R`` seconds of
guest time (``QEMU_CLOCK_VIRTUAL``), then makes an I/O exit that holds the
BQL for ``C`` microseconds, as a device access does, and so on until it is
kicked.  ``exit-rate=0`` (the default) is an idle guest: the vCPU is halted
and sleeps on its halt condition, so a default start-up behaves, and costs,
as one without vCPUs.

``rcu-section=on`` runs the guest inside one RCU read-side critical
section, as TCG's ``cpu_exec`` does, left only when the vCPU is kicked.  The
vCPU registers a force_rcu notifier that kicks it (an ``async_run_on_cpu``
of nothing) when ``drain_call_rcu`` waits for it; the bug switch
``vcpu_holds_rcu_read_lock`` (bugs.md entry 24) leaves the notifier out, as
QEMU 6.0 and 6.1 did.

Threads: the vCPU threads; ``mttcg_kick_vcpu_thread`` from any thread.
"""

from __future__ import annotations

from typing import Optional

from system.cpus import (
    cpu_can_run,
    cpu_thread_signal_created,
    cpu_thread_signal_destroyed,
    qemu_init_vcpu,
    qemu_wait_io_event,
)
from system.cpus_common import CPUState, async_run_on_cpu, cpu_globals
from util.atomic import qatomic_read, qatomic_set
from util.bugs import BUG
from util.main_loop import bql_lock, bql_unlock
from util.qemu_option import QemuOptDesc, QemuOpts, QemuOptsList, QemuOptType, qemu_opt_get
from util.rcu import (
    rcu_add_force_rcu_notifier,
    rcu_read_lock,
    rcu_read_unlock,
    rcu_register_thread,
    rcu_remove_force_rcu_notifier,
    rcu_unregister_thread,
)
from util.thread import g_usleep, qemu_thread_create
from util.timer import QEMU_CLOCK_VIRTUAL, qemu_clock_get_ns
from util.trace import trace_event

trace_vcpu_io_exit = trace_event("vcpu_io_exit", "cpu_index")

#: the largest -smp the model accepts (QEMU's TCG x86 limit is higher; the
#: host has far fewer CPUs than that anyway)
X_MODEL_MAX_CPUS = 64


class GuestModel:
    """The x-model accelerator's properties."""

    def __init__(self, exit_rate: int = 0, exit_cost: int = 0, rcu_section: bool = False) -> None:
        #: I/O exits per second of guest time, per vCPU; 0: an idle guest
        self.exit_rate = exit_rate
        #: microseconds each exit holds the BQL
        self.exit_cost = exit_cost
        #: run the guest inside an RCU read-side critical section
        self.rcu_section = rcu_section


def qemu_accel_opts() -> QemuOptsList:
    """-accel's option list (the subset of accel properties emulated)."""
    desc = (
        QemuOptDesc("accel", QemuOptType.QEMU_OPT_STRING),
        QemuOptDesc("exit-rate", QemuOptType.QEMU_OPT_NUMBER),
        QemuOptDesc("exit-cost", QemuOptType.QEMU_OPT_NUMBER),
        QemuOptDesc("rcu-section", QemuOptType.QEMU_OPT_BOOL),
    )
    return QemuOptsList("accel", desc, implied_opt_name="accel")


def guest_model_from_opts(opts: QemuOpts) -> Optional[GuestModel]:
    """The model -accel asks for; None for tcg (QEMU's own, no vCPUs here)."""
    accel = qemu_opt_get(opts, "accel")
    if accel == "tcg":
        return None
    if accel != "x-model":
        raise ValueError(f"invalid accelerator {accel}")
    return GuestModel(
        exit_rate=int(qemu_opt_get(opts, "exit-rate") or 0),
        exit_cost=int(qemu_opt_get(opts, "exit-cost") or 0),
        rcu_section=qemu_opt_get(opts, "rcu-section") == "on",
    )


# ---------------------------------------------------------------- the vCPU thread


class ModelCpu:
    """What the model keeps per vCPU."""

    def __init__(self, model: GuestModel) -> None:
        self.model = model
        #: guest time of the next I/O exit
        self.next_exit_ns = 0
        #: I/O exits made so far (read by tests and the benchmark)
        self.exits = 0


def mttcg_kick_vcpu_thread(cpu: CPUState) -> None:
    """cpu_exit: ask the vCPU to leave guest code, and wake a guest-time wait."""
    qatomic_set(cpu.exit_request, 1)
    cpu.kick_event.set()


def _do_nothing(cpu: CPUState, data: object) -> None:
    """The work item whose only effect is to make the vCPU leave cpu_exec."""


def cpu_exec(cpu: CPUState) -> None:
    """Run the guest until kicked: guest time, then an I/O exit, in turn."""
    m: ModelCpu = cpu.accel
    period_ns = 1_000_000_000 // m.model.exit_rate
    if m.model.rcu_section:
        rcu_read_lock()
    cpu.kick_event.reset()
    while not qatomic_read(cpu.exit_request):
        now = qemu_clock_get_ns(QEMU_CLOCK_VIRTUAL)
        if now < m.next_exit_ns:
            cpu.kick_event.wait((m.next_exit_ns - now) / 1e9)
            continue
        m.next_exit_ns = now + period_ns
        bql_lock()
        trace_vcpu_io_exit(cpu.cpu_index)
        m.exits += 1
        g_usleep(m.model.exit_cost)  # the device's work, BQL held
        bql_unlock()
    if m.model.rcu_section:
        rcu_read_unlock()


def mttcg_cpu_thread_fn(cpu: CPUState) -> None:
    """The vCPU thread: the MTTCG loop, the guest being the model."""

    def force_rcu() -> None:
        # called with rcu_registry_lock held: async_run_on_cpu cannot deadlock
        async_run_on_cpu(cpu, _do_nothing)

    rcu_register_thread()
    if BUG.vcpu_holds_rcu_read_lock:
        # bugs.md 24: QEMU 6.0/6.1 had no notifier, so drain_call_rcu waited
        # for a busy vCPU that never left its read-side section
        pass
    else:
        rcu_add_force_rcu_notifier(force_rcu)
    bql_lock()
    # qemu_init_vcpu set cpu.thread before it dropped the BQL
    assert cpu.thread is not None
    cpu.thread_id = cpu.thread.native_id or 0
    cpu_thread_signal_created(cpu)
    while True:
        if cpu_can_run(cpu):
            bql_unlock()
            cpu_exec(cpu)
            bql_lock()
        qatomic_set(cpu.exit_request, 0)
        qemu_wait_io_event(cpu)
        if cpu.unplug and not cpu_can_run(cpu):
            break
    cpu_thread_signal_destroyed(cpu)
    bql_unlock()
    if not BUG.vcpu_holds_rcu_read_lock:
        rcu_remove_force_rcu_notifier(force_rcu)
    rcu_unregister_thread()


def mttcg_start_vcpu_thread(cpu: CPUState) -> None:
    """create_vcpu_thread: the thread, named as MTTCG names it."""
    cpu.thread = qemu_thread_create(f"CPU {cpu.cpu_index}/TCG", mttcg_cpu_thread_fn, cpu)


def x_model_init_vcpus(model: GuestModel, ncpus: int) -> None:
    """Create ``ncpus`` vCPUs running ``model`` (machine init, BQL held)."""
    cpu_globals().kick_vcpu_thread = mttcg_kick_vcpu_thread
    for i in range(ncpus):
        cpu = CPUState(i)
        cpu.halted = model.exit_rate == 0
        cpu.accel = ModelCpu(model)
        qemu_init_vcpu(cpu, mttcg_start_vcpu_thread)
