"""HMP command parsing and output, through ``human-monitor-command``.

Every expected string was recorded from QEMU 7.2.22 (``qemu-system-x86_64
-nodefaults -machine none``) with the same command line; only the version
package string is the emulator's own.  :func:`hmp_globals` is also the setup
the other HMP test modules share.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Optional

import pytest

import monitor.hmp
import system.runstate
from monitor.hmp import handle_hmp_command, help_cmd
from monitor.hmp_cmds import HMPCommand
from monitor.monitor import (
    monitor_cleanup,
    monitor_cur,
    monitor_globals,
    monitor_init_globals,
    monitor_set_cur,
)
from monitor.monitor_internal import MonitorGlobals, MonitorHMP
from monitor.qmp_cmds_control import QEMU_PKGVERSION
from qapi.error import ErrorClass, QapiError
from qapi.qmp_registry import qmp_find_command
from qapi.schema import qapi_schema
from system.commands import qmp_init_commands
from system.machine import machine_init
from system.runstate import (
    MachinePhase,
    main_loop_should_exit,
    phase_advance,
    phase_check,
    qemu_machine_creation_done,
    runstate,
    runstate_init,
)
from util.coroutine import qemu_coroutine_self
from util.main_loop import MainLoop


@contextmanager
def hmp_globals(
    autostart: bool = True, name: Optional[str] = None, preconfig: bool = False
) -> Iterator[MonitorGlobals]:
    """Monitor globals with every QMP command bound as the emulator binds
    them (HMP runs them from the registry), and a machine that is running
    (without autostart: in prelaunch, as with ``-S``; with preconfig:
    waiting for ``exit_preconfig``)."""
    schema = qapi_schema()
    runstate_init(autostart)
    machine_init(name)
    g = monitor_init_globals(schema, lambda: phase_check(MachinePhase.MACHINE_READY))
    try:
        qmp_init_commands(g)
        phase_advance(MachinePhase.MACHINE_CREATED)
        phase_advance(MachinePhase.ACCEL_CREATED)
        if not preconfig:
            qemu_machine_creation_done()
        yield g
    finally:
        monitor_cleanup()


def hmc(command_line: str, cpu_index: Optional[int] = None) -> Any:
    """``human-monitor-command`` through its registered QMP handler."""
    args: dict[str, Any] = {"command-line": command_line}
    if cpu_index is not None:
        args["cpu-index"] = cpu_index
    cmd = qmp_find_command(monitor_globals().qmp_commands, "human-monitor-command")
    assert cmd is not None
    return cmd.fn(args)


@pytest.fixture
def hmp(main_loop: MainLoop) -> Iterator[MonitorGlobals]:
    with hmp_globals() as g:
        yield g


# ---------------------------------------------------------------- QEMU 7.2.22 texts

STOP_HELP = "stop|s  -- stop emulation\r\n"
INFO_STATUS_HELP = "info status  -- show the current VM status (running|paused)\r\n"

#: QEMU 7.2.22's ``help`` lines for the commands the emulator has, in its order
QEMU_HELP_LINES = [
    "cont|c  -- resume emulation",
    "cpu index -- set the default CPU",
    "device_add driver[,prop=value][,...] -- add device, like -device on the command line",
    "exit_preconfig  -- exit the preconfig state",
    "help|? [cmd] -- show the help",
    "info [subcommand] -- show various information about the system state",
    "quit|q  -- quit the emulator",
    "stop|s  -- stop emulation",
    "system_powerdown  -- send system power down event",
    "system_reset  -- reset the system",
]

#: QEMU 7.2.22's ``info`` lines for the subcommands the emulator has
QEMU_INFO_LINES = [
    "info chardev  -- show the character devices",
    "info cpus  -- show infos for each CPU",
    "info history  -- show the command line history",
    "info name  -- show the current VM name",
    "info status  -- show the current VM status (running|paused)",
    "info version  -- show the version of QEMU",
]
EMULATOR_INFO_MONITORS = "info monitors  -- show the monitors (emulator only: like query-monitors)"


@pytest.mark.parametrize(
    ("command_line", "output"),
    [
        ("info status", "VM status: running\r\n"),
        ("", ""),
        (" ", ""),
        ("foo", "unknown command: 'foo'\r\n"),
        ("STOP", "unknown command: 'STOP'\r\n"),
        ("  foo", "unknown command: '  foo'\r\n"),
        ("info bogus", "unknown command: 'info bogus'\r\n"),
        ("info commands", "unknown command: 'info commands'\r\n"),
        ("info ?", "unknown command: 'info ?'\r\n"),
        ('info "status"', "unknown command: 'info \"status\"'\r\n"),
        ("info  status", "VM status: running\r\n"),
        ("\tinfo\tstatus\t", "VM status: running\r\n"),
        ("help stop", STOP_HELP),
        ("? stop", STOP_HELP),
        ("help stop foo", STOP_HELP),
        ('help "stop"', STOP_HELP),
        ("help    stop   ", STOP_HELP),
        ("help help", "help|? [cmd] -- show the help\r\n"),
        ("? ?", "help|? [cmd] -- show the help\r\n"),
        ("help info status", INFO_STATUS_HELP),
        ("help  info  status", INFO_STATUS_HELP),
        ("help info status x", INFO_STATUS_HELP),
        ("help foo", "unknown command: 'foo'\r\n"),
        ("help info bogus", "unknown command: 'info bogus'\r\n"),
        ('help "info status"', "unknown command: 'info status'\r\n"),
        ('help "\\n"', "unknown command: '\r\n'\r\n"),
        ('help "stop', ""),
        ('help "st\\qop"', ""),
        (
            "stop extra",
            'stop|s: extraneous characters at the end of line\r\nTry "help stop" for more'
            " information\r\n",
        ),
        (
            "stop/x",
            'stop|s: extraneous characters at the end of line\r\nTry "help stop" for more'
            " information\r\n",
        ),
        (
            "  stop  x  ",
            'stop|s: extraneous characters at the end of line\r\nTry "help   stop" for more'
            " information\r\n",
        ),
        (
            "c x",
            'cont|c: extraneous characters at the end of line\r\nTry "help c" for more'
            " information\r\n",
        ),
        (
            "q x",
            'quit|q: extraneous characters at the end of line\r\nTry "help q" for more'
            " information\r\n",
        ),
        (
            "info status extra",
            'status: extraneous characters at the end of line\r\nTry "help info status" for'
            " more information\r\n",
        ),
        (
            "info status/x",
            'status: extraneous characters at the end of line\r\nTry "help info status" for'
            " more information\r\n",
        ),
        (
            "info version x",
            'version: extraneous characters at the end of line\r\nTry "help info version" for'
            " more information\r\n",
        ),
        ("info name", ""),
        ("info history", ""),
        ("system_reset", ""),
        ("system_powerdown", ""),
    ],
)
def test_output_matches_qemu(hmp: MonitorGlobals, command_line: str, output: str) -> None:
    assert hmc(command_line) == output


def test_bad_quoting_is_reported_on_stdout(
    hmp: MonitorGlobals, capsys: pytest.CaptureFixture[str]
) -> None:
    """QEMU reports a malformed quoted word with printf, not on the monitor."""
    assert hmc('help "stop') == ""
    assert hmc('help "st\\qop"') == ""
    assert capsys.readouterr().out == "unterminated string\nunsupported escape code: '\\q'\n"


def test_stop_and_cont_change_the_run_state(hmp: MonitorGlobals) -> None:
    assert hmc("stop") == ""
    assert hmc("info status") == "VM status: paused\r\n"
    assert hmc("s") == ""  # already stopped: nothing happens
    assert hmc("cont") == ""
    assert hmc("info status") == "VM status: running\r\n"
    assert hmc("stop") == ""
    assert hmc("c") == ""
    assert runstate().state.value == "running"


def test_prelaunch_status(main_loop: MainLoop) -> None:
    """``-S``: the machine waits in prelaunch."""
    with hmp_globals(autostart=False):
        assert hmc("info status") == "VM status: paused (prelaunch)\r\n"


def test_info_name(main_loop: MainLoop) -> None:
    with hmp_globals(name="foo"):
        assert hmc("info name") == "foo\r\n"


def test_info_version(hmp: MonitorGlobals) -> None:
    """QEMU prints the version and the package string with nothing between
    (7.2.22 from Debian: ``7.2.22Debian 1:7.2+dfsg-7+deb12u18+b3``)."""
    assert hmc("info version") == f"7.2.22{QEMU_PKGVERSION}\r\n"


def test_cont_error_is_printed_as_hmp_handle_error(hmp: MonitorGlobals) -> None:
    runstate().state = system.runstate.RunState.GUEST_PANICKED
    assert hmc("cont") == "Error: Resetting the Virtual Machine is required\r\n"


def test_reset_powerdown_and_quit_reach_the_main_loop(hmp: MonitorGlobals) -> None:
    hmc("system_reset")
    hmc("system_powerdown")
    rs = runstate()
    assert rs.reset_requested is system.runstate.ShutdownCause.HOST_QMP_SYSTEM_RESET
    assert rs.powerdown_requested
    assert hmc("quit") == ""
    assert hmc("q") == ""
    assert rs.shutdown_requested is system.runstate.ShutdownCause.HOST_QMP_QUIT
    assert main_loop_should_exit()


def test_cpu_index_is_refused_without_cpus(hmp: MonitorGlobals) -> None:
    for cpu_index in (0, -1):
        with pytest.raises(QapiError) as exc:
            hmc("info status", cpu_index)
        assert exc.value.error_class is ErrorClass.GENERIC_ERROR
        assert exc.value.desc == "Parameter 'cpu-index' expects a CPU number"


def test_help_lists_the_commands_in_qemu_format(hmp: MonitorGlobals) -> None:
    assert hmc("help").split("\r\n")[:-1] == QEMU_HELP_LINES
    assert hmc("?") == hmc("help") == hmc("help   ")


def test_info_lists_the_subcommands_in_qemu_format(hmp: MonitorGlobals) -> None:
    expected = sorted([*QEMU_INFO_LINES, EMULATOR_INFO_MONITORS])
    assert hmc("info").split("\r\n")[:-1] == expected
    assert hmc("help info") == hmc("info") == hmc("help info ")


class Spy:
    """A command table of one command that records its arguments and the
    current monitor, to test the parser by args_type."""

    def __init__(self, args_type: str) -> None:
        self.calls: list[tuple[dict[str, Any], Any]] = []
        self.table = (HMPCommand("spy|sp", args_type, "", "", self.run),)

    def run(self, mon: Any, qdict: dict[str, Any]) -> None:
        self.calls.append((qdict, monitor_cur()))


@pytest.fixture
def scratch() -> MonitorHMP:
    return MonitorHMP(use_readline=False, skip_flush=True)


def run_spy(
    monkeypatch: pytest.MonkeyPatch, mon: MonitorHMP, args_type: str, cmdline: str
) -> tuple[list[dict[str, Any]], bytes]:
    spy = Spy(args_type)
    monkeypatch.setattr(monitor.hmp, "hmp_cmds", spy.table)
    del mon.outbuf[:]
    handle_hmp_command(mon, cmdline)
    assert all(cur is mon for _, cur in spy.calls)
    return [qdict for qdict, _ in spy.calls], bytes(mon.outbuf)


@pytest.mark.parametrize(
    ("args_type", "cmdline", "qdict"),
    [
        ("", "spy", {}),
        ("name:s?", "spy", {}),
        ("name:s?", "sp  x", {"name": "x"}),
        ("name:s", 'spy "a b\\"c"', {"name": 'a b"c'}),
        ("a:s,b:s?", "spy one two", {"a": "one", "b": "two"}),
        ("a:s,b:s?", "spy one", {"a": "one"}),
        ("file:F,dev:B", "spy f d", {"file": "f", "dev": "d"}),
        ("rest:S", "spy  all  of it ", {"rest": "all  of it "}),
        ("rest:S?", "spy", {}),
    ],
)
def test_arguments_by_args_type(
    hmp: MonitorGlobals,
    monkeypatch: pytest.MonkeyPatch,
    scratch: MonitorHMP,
    args_type: str,
    cmdline: str,
    qdict: dict[str, Any],
) -> None:
    assert run_spy(monkeypatch, scratch, args_type, cmdline) == ([qdict], b"")


TRY = b'Try "help spy" for more information\r\n'


@pytest.mark.parametrize(
    ("args_type", "cmdline", "error"),
    [
        ("name:s", "spy", b"spy|sp: string expected\r\n"),
        ("name:s", 'spy "x', b"spy|sp: string expected\r\n"),
        ("file:F", "spy", b"spy|sp: filename expected\r\n"),
        ("dev:B", "spy", b"spy|sp: block device name expected\r\n"),
        ("rest:S", "spy  ", b"spy|sp: string expected\r\n"),
        ("n:l", "spy 1", b"spy|sp: unknown type 'l'\r\n"),
        ("n:i", "spy", b"unexpected end of expression\r\n"),
        ("n:i", "spy x", b"invalid char 'x' in expression\r\n"),
        ("n:i", "spy -1", b"'spy|sp' has failed: integer is for 32-bit values\r\n"),
        ("n:i", "spy (1", b"')' expected\r\n"),
        ("name:s", "spy a b", b"spy|sp: extraneous characters at the end of line\r\n"),
    ],
)
def test_argument_errors(
    hmp: MonitorGlobals,
    monkeypatch: pytest.MonkeyPatch,
    scratch: MonitorHMP,
    args_type: str,
    cmdline: str,
    error: bytes,
) -> None:
    assert run_spy(monkeypatch, scratch, args_type, cmdline) == ([], error + TRY)


def test_the_caller_monitor_is_current_again_afterwards(
    hmp: MonitorGlobals, monkeypatch: pytest.MonkeyPatch, scratch: MonitorHMP
) -> None:
    other = MonitorHMP(use_readline=False, skip_flush=True)
    co = qemu_coroutine_self()
    monitor_set_cur(co, other)
    try:
        run_spy(monkeypatch, scratch, "", "spy")
        assert monitor_cur() is other
    finally:
        monitor_set_cur(co, None)


def test_help_cmd_on_a_scratch_monitor(hmp: MonitorGlobals, scratch: MonitorHMP) -> None:
    help_cmd(scratch, "info version")
    assert bytes(scratch.outbuf) == b"info version  -- show the version of QEMU\r\n"


@pytest.fixture
def preconfig(main_loop: MainLoop) -> Iterator[MonitorGlobals]:
    with hmp_globals(preconfig=True) as g:
        yield g


def run(mon: MonitorHMP, cmdline: str) -> bytes:
    del mon.outbuf[:]
    handle_hmp_command(mon, cmdline)
    return bytes(mon.outbuf)


def test_preconfig_allows_only_p_commands(preconfig: MonitorGlobals, scratch: MonitorHMP) -> None:
    """QEMU 7.2.22 with ``--preconfig``."""
    for cmdline in ("stop", "c", "system_reset", "system_powerdown"):
        assert run(scratch, cmdline) == (
            f"Command '{cmdline}' not available until machine initialization"
            " has completed.\r\n".encode()
        )
    assert run(scratch, "info status") == b"VM status: paused (prelaunch)\r\n"
    assert run(scratch, "help stop") == b"unknown command: 'stop'\r\n"
    assert run(scratch, "help").decode().split("\r\n")[:-1] == [
        "exit_preconfig  -- exit the preconfig state",
        "help|? [cmd] -- show the help",
        "info [subcommand] -- show various information about the system state",
        "quit|q  -- quit the emulator",
    ]
    assert run(scratch, "info") == run(scratch, "help info")


def test_exit_preconfig(preconfig: MonitorGlobals, scratch: MonitorHMP) -> None:
    assert run(scratch, "exit_preconfig") == b""
    assert run(scratch, "info status") == b"VM status: running\r\n"
    assert run(scratch, "exit_preconfig") == (
        b"Error: The command is permitted only before machine initialization\r\n"
    )
    assert run(scratch, "exit_preconfig x") == (
        b"exit_preconfig: extraneous characters at the end of line\r\n"
        b'Try "help exit_preconfig" for more information\r\n'
    )
