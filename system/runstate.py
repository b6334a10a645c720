"""Run state, shutdown/reset/powerdown requests (system/runstate.c, cpus.c).

Runs in the main loop thread with the BQL: QMP handlers request a change, the
main loop acts on it in ``main_loop_should_exit``, as QEMU does, so a ``quit``
reply and its SHUTDOWN event may come in either order.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Optional

from monitor.monitor import qapi_event_send
from qapi.error import error_setg
from util.error_report import error_report
from util.main_loop import qemu_notify_event
from util.markers import requires_bql
from util.osdep import qemu_get_pid_name
from util.timer import cpu_disable_ticks, cpu_enable_ticks


class RunState(str, enum.Enum):
    """The RunState values a ``-machine none`` process can be in."""

    DEBUG = "debug"
    INMIGRATE = "inmigrate"
    INTERNAL_ERROR = "internal-error"
    IO_ERROR = "io-error"
    PAUSED = "paused"
    POSTMIGRATE = "postmigrate"
    PRELAUNCH = "prelaunch"
    FINISH_MIGRATE = "finish-migrate"
    RESTORE_VM = "restore-vm"
    RUNNING = "running"
    SAVE_VM = "save-vm"
    SHUTDOWN = "shutdown"
    SUSPENDED = "suspended"
    WATCHDOG = "watchdog"
    GUEST_PANICKED = "guest-panicked"
    COLO = "colo"


class ShutdownCause(str, enum.Enum):
    NONE = "none"
    HOST_ERROR = "host-error"
    HOST_QMP_QUIT = "host-qmp-quit"
    HOST_QMP_SYSTEM_RESET = "host-qmp-system-reset"
    HOST_SIGNAL = "host-signal"
    HOST_UI = "host-ui"
    GUEST_SHUTDOWN = "guest-shutdown"
    GUEST_RESET = "guest-reset"
    GUEST_PANIC = "guest-panic"
    SUBSYSTEM_RESET = "subsystem-reset"


class MachinePhase(enum.IntEnum):
    """hw/core/machine.c phases; --preconfig stops before MACHINE_INITIALIZED."""

    NO_MACHINE = 0
    MACHINE_CREATED = 1
    ACCEL_CREATED = 2
    MACHINE_INITIALIZED = 3
    MACHINE_READY = 4


class RunStateGlobals:
    """runstate.c's globals: the state and the pending requests.

    A plain class: a dataclass would compile its methods at every start-up.
    """

    def __init__(self, autostart: bool = True) -> None:
        self.state = RunState.PRELAUNCH
        self.phase = MachinePhase.NO_MACHINE
        self.shutdown_requested: Optional[ShutdownCause] = None
        self.reset_requested: Optional[ShutdownCause] = None
        self.powerdown_requested = False
        #: -S: do not start the VM when the machine is ready
        self.autostart = autostart
        #: the signal that asked for shutdown, reported when acted on
        self.shutdown_signal: Optional[int] = None
        #: the sender of shutdown_signal (si_pid; 0 when the kernel sent it)
        self.shutdown_pid = 0
        #: creates the vCPUs when the machine is initialised (qemu_init_board)
        self.board_init: Optional[Callable[[], None]] = None
        #: system/cpus.py's handshakes once there are vCPUs; without any,
        #: QEMU's loops over no CPU, and the module is not even loaded
        self.pause_all_vcpus: Callable[[], None] = _no_vcpus
        self.resume_all_vcpus: Callable[[], None] = _no_vcpus


def _no_vcpus() -> None:
    """pause_all_vcpus / resume_all_vcpus of a machine without vCPUs."""


class _Current:
    rs: Optional[RunStateGlobals] = None


_current = _Current()


def runstate_init(autostart: bool) -> RunStateGlobals:
    _current.rs = RunStateGlobals(autostart=autostart)
    return _current.rs


def runstate() -> RunStateGlobals:
    rs = _current.rs
    if rs is None:
        raise AssertionError("runstate_init() has not run")
    return rs


def phase_check(phase: MachinePhase) -> bool:
    return runstate().phase >= phase


def phase_advance(phase: MachinePhase) -> None:
    rs = runstate()
    assert phase == rs.phase + 1, f"phase {phase} after {rs.phase}"
    rs.phase = phase


def runstate_is_running() -> bool:
    return runstate().state == RunState.RUNNING


def runstate_needs_reset() -> bool:
    return runstate().state in (
        RunState.INTERNAL_ERROR,
        RunState.SHUTDOWN,
        RunState.GUEST_PANICKED,
    )


def runstate_set(new: RunState) -> None:
    runstate().state = new


@requires_bql
def vm_stop(state: RunState) -> None:
    """Stop the VM: STOP is sent before the caller replies (do_vm_stop).

    STOP goes out only once every vCPU has parked: pause_all_vcpus waits
    for them with the BQL dropped.
    """
    if not runstate_is_running():
        runstate_set(state)
        return
    cpu_disable_ticks()
    runstate_set(state)
    runstate().pause_all_vcpus()
    qapi_event_send("STOP")


@requires_bql
def vm_start() -> None:
    """Start the VM: RESUME, then running."""
    if runstate_is_running():
        return
    cpu_enable_ticks()
    qapi_event_send("RESUME")
    runstate_set(RunState.RUNNING)
    # vm_start: RESUME (vm_prepare_start) comes before the vCPUs are released
    runstate().resume_all_vcpus()


def qemu_system_shutdown_request(cause: ShutdownCause) -> None:
    """Ask the main loop to shut down; acted on in ``main_loop_should_exit``."""
    runstate().shutdown_requested = cause
    qemu_notify_event()


def qemu_system_killed(signum: int, pid: int = 0) -> None:
    """SIGINT/SIGTERM/SIGHUP: shut down with reason host-signal (no quit reply).

    Runs in the ``sigwait`` thread (util/compatfd.py): only records and kicks
    the main loop.  ``pid`` is the sender (0: the kernel, e.g. Ctrl-C).
    """
    state = runstate()
    state.shutdown_pid = pid
    state.shutdown_signal = signum
    qemu_system_shutdown_request(ShutdownCause.HOST_SIGNAL)


def qemu_system_reset_request(cause: ShutdownCause) -> None:
    runstate().reset_requested = cause
    qemu_notify_event()


def qemu_system_powerdown_request() -> None:
    runstate().powerdown_requested = True
    qemu_notify_event()


def _shutdown_event_data(cause: ShutdownCause) -> dict[str, Any]:
    guest = cause in (
        ShutdownCause.GUEST_SHUTDOWN,
        ShutdownCause.GUEST_RESET,
        ShutdownCause.GUEST_PANIC,
    )
    return {"guest": guest, "reason": cause.value}


def _terminating_message(signum: int, pid: int) -> str:
    """QEMU's words for a signal, naming the sender when the kernel told it."""
    if pid == 0:
        return f"terminating on signal {signum}"
    name = qemu_get_pid_name(pid)
    if name is None:
        name = "<unknown process>"
    return f"terminating on signal {signum} from pid {pid} ({name})"


@requires_bql
def main_loop_should_exit() -> bool:
    """Act on pending requests; True when the process should leave the loop."""
    rs = runstate()
    if rs.shutdown_requested is not None:
        cause = rs.shutdown_requested
        rs.shutdown_requested = None
        if rs.shutdown_signal is not None:
            error_report(_terminating_message(rs.shutdown_signal, rs.shutdown_pid))
            rs.shutdown_signal = None
        qapi_event_send("SHUTDOWN", _shutdown_event_data(cause))
        return True
    if rs.reset_requested is not None:
        cause = rs.reset_requested
        rs.reset_requested = None
        qapi_event_send("RESET", _shutdown_event_data(cause))
    if rs.powerdown_requested:
        rs.powerdown_requested = False
        qapi_event_send("POWERDOWN")
    return False


# ---------------------------------------------------------------- QMP commands


def qmp_query_status() -> dict[str, Any]:
    """QEMU 7.2's StatusInfo still carries ``singlestep`` (always false here)."""
    return {"running": runstate_is_running(), "singlestep": False, "status": runstate().state.value}


def qmp_stop() -> None:
    """Pause the VM; while an incoming migration waits, just cancel autostart."""
    if runstate().state == RunState.INMIGRATE:
        runstate().autostart = False
    else:
        vm_stop(RunState.PAUSED)


def qmp_cont() -> None:
    state = runstate().state
    if runstate_needs_reset():
        raise error_setg("Resetting the Virtual Machine is required")
    if state == RunState.SUSPENDED:
        return
    if state == RunState.FINISH_MIGRATE:
        raise error_setg("Migration is not finalized yet")
    if state == RunState.INMIGRATE:
        runstate().autostart = True
    else:
        vm_start()


def qmp_system_reset() -> None:
    qemu_system_reset_request(ShutdownCause.HOST_QMP_SYSTEM_RESET)


def qmp_system_powerdown() -> None:
    qemu_system_powerdown_request()


def qmp_quit() -> None:
    qemu_system_shutdown_request(ShutdownCause.HOST_QMP_QUIT)


def qmp_x_exit_preconfig() -> None:
    """Leave --preconfig: finish machine creation and start (unless -S)."""
    if phase_check(MachinePhase.MACHINE_INITIALIZED):
        raise error_setg("The command is permitted only before machine initialization")
    qemu_machine_creation_done()


def qemu_machine_creation_done() -> None:
    """Finish the machine (qmp_x_exit_preconfig / qemu_init's tail)."""
    board_init = runstate().board_init
    if board_init is not None:
        board_init()
    phase_advance(MachinePhase.MACHINE_INITIALIZED)
    phase_advance(MachinePhase.MACHINE_READY)
    if runstate().autostart:
        vm_start()
