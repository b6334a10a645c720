"""The process as a whole (system/main.py, system/vl.py): quit with work in
flight, SIGTERM, -pidfile, -S, command-line errors, the default monitors and
the emulator-only ``x-session-check`` monitor option.

Tests taking ``target`` or ``launcher`` run against real QEMU 7.2 too
(``@pytest.mark.qemu``, skipped when it is not installed) with the same
expectations; the rest are about the emulator's own command line.
"""

from __future__ import annotations

import os
import re
import select
import signal
import socket
import subprocess
import sys
import time
from typing import Any, Optional

import pytest

from tests.integration.conftest import Launcher
from tests.integration.harness import (
    DEADLINE,
    REPO_ROOT,
    Instance,
    QMPLine,
    is_event,
    launched,
    target_program,
)
from util.osdep import qemu_get_pid_name

QUERY_STATUS_RUNNING = {"status": "running", "singlestep": False, "running": True}


def read_until_eof(client: QMPLine) -> list[Any]:
    """Every message (parsed) until the server closes the connection."""
    return [msg for _, msg in client.recv_until_eof()]


# ---------------------------------------------------------------- shutdown


@pytest.mark.parametrize("oob", [False, True], ids=["no-oob", "oob"])
def test_quit_with_requests_pipelined_after_it(inst: Instance, oob: bool) -> None:
    """Requests sent right behind ``quit`` (one write) neither hang the
    process nor get answered: the dispatcher stops after quit, queued or
    unread requests are dropped.  The client sees SHUTDOWN and quit's reply
    (either order, QEMU 9.0+ sends the event first), then EOF; exit 0."""
    c = inst.connect_negotiated(oob=oob)
    c.send(
        b'{"execute": "quit", "id": "quit"}\n'
        + b"".join(b'{"execute": "query-status", "id": "s%d"}\n' % i for i in range(12))
    )
    msgs = read_until_eof(c)
    assert inst.wait_exit() == 0
    events = [m for m in msgs if is_event(m)]
    replies = [m for m in msgs if not is_event(m)]
    assert [(e["event"], e["data"]) for e in events] == [
        ("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"})
    ]
    assert replies == [{"return": {}, "id": "quit"}]
    assert "lock-order violation" not in inst.stderr_text()


def test_sigterm(inst: Instance) -> None:
    c = inst.connect_negotiated()
    inst.proc.send_signal(signal.SIGTERM)
    msgs = read_until_eof(c)
    assert [(m["event"], m["data"]) for m in msgs] == [
        ("SHUTDOWN", {"guest": False, "reason": "host-signal"})
    ]
    assert inst.wait_exit() == 0
    # as QEMU: the sender's pid and program (/proc/PID/cmdline up to the first NUL)
    sender = f"from pid {os.getpid()} ({qemu_get_pid_name(os.getpid())})"
    assert f": terminating on signal 15 {sender}\n" in inst.stderr_text(), inst.stderr_text()
    assert "lock-order violation" not in inst.stderr_text()


def test_prelaunch_then_cont(launcher: Launcher) -> None:
    inst = launcher(["-S"])
    c = inst.connect_negotiated()
    assert c.execute("query-status")["return"] == {
        "status": "prelaunch",
        "singlestep": False,
        "running": False,
    }
    req = c.send_cmd("cont")
    _, reply = c.recv_reply(req)
    assert reply == {"return": {}, "id": req}
    assert [m["event"] for _, m in c.events] == ["RESUME"]
    assert c.execute("query-status")["return"] == QUERY_STATUS_RUNNING


# ---------------------------------------------------------------- -pidfile


def test_pidfile_written_locked_and_removed(launcher: Launcher, target: str) -> None:
    inst = launcher(["-pidfile", "{tmpdir}/vm.pid"])
    path = inst.path("vm.pid")
    with open(path) as f:
        assert f.read() == f"{inst.proc.pid}\n"
    assert os.stat(path).st_mode & 0o777 == 0o600 & ~_umask()

    # a second process given the same file fails and leaves it alone
    second = subprocess.run(
        [*target_program(target), "-nodefaults", "-machine", "none", "-display", "none",
         "-pidfile", path],
        capture_output=True, timeout=DEADLINE, env=_env(target), stdin=subprocess.DEVNULL,
    )  # fmt: skip
    assert second.returncode == 1
    assert _strip_prog(second.stderr) == (
        b"cannot create PID file: Cannot lock pid file: Resource temporarily unavailable\n"
    )
    with open(path) as f:
        assert f.read() == f"{inst.proc.pid}\n"

    c = inst.connect_negotiated()
    c.send_cmd("quit")
    read_until_eof(c)
    assert inst.wait_exit() == 0
    assert not os.path.exists(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# ---------------------------------------------------------------- command line


def _env(target: str) -> dict[str, str]:
    env = dict(os.environ)
    if target == "emu":
        env["PYTHONPATH"] = os.pathsep.join(
            p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
        )
    return env


def _strip_prog(stderr: bytes) -> bytes:
    """QEMU prefixes each line with argv[0]'s name, the emulator with its own."""
    return re.sub(rb"^(qemu-system-x86_64|qemu-monitor-emu): ", b"", stderr, flags=re.M)


def run_cli(target: str, args: list[str], cwd: str = "/") -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [*target_program(target), *args],
        capture_output=True,
        timeout=DEADLINE,
        env=_env(target),
        stdin=subprocess.DEVNULL,
        cwd=cwd,
    )


BASE = ["-nodefaults", "-machine", "none", "-display", "none"]


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["-foo"], b"-foo: invalid option\n"),
        (["--foo"], b"--foo: invalid option\n"),
        (["-machine"], b"-machine: requires an argument\n"),
        ([*BASE, "-mon", "chardev=nope"], b'-mon chardev=nope: chardev "nope" not found\n'),
        ([*BASE, "-mon", "nope"], b'-mon nope: chardev "nope" not found\n'),
        (
            [*BASE, "-chardev", "null,id=c0", "-mon", "c0,mode=foo"],
            b"-mon c0,mode=foo: Parameter 'mode' does not accept value 'foo'\n",
        ),
        (
            [*BASE, "-chardev", "null,id=c0", "-mon", "c0,bogus=on"],
            b"-mon c0,bogus=on: Invalid parameter 'bogus'\n",
        ),
        (
            [*BASE, "-pidfile", "/nonexistent/dir/vm.pid"],
            b"cannot create PID file: Could not create '/nonexistent/dir/vm.pid': "
            b"No such file or directory\n",
        ),
    ],
    ids=["unknown", "unknown-long", "missing-arg", "mon-chardev", "mon-implied", "mon-mode",
         "mon-param", "pidfile"],
)  # fmt: skip
def test_command_line_errors(target: str, args: list[str], stderr: bytes) -> None:
    res = run_cli(target, args)
    assert (res.returncode, _strip_prog(res.stderr), res.stdout) == (1, stderr, b"")


@pytest.mark.parametrize(
    ("args", "stderr"),
    [
        (["-machine", "pc"], b"qemu-monitor-emu: -machine pc: machine 'pc' is not emulated: "
                             b"only -machine none is\n"),
        (["-M", "q35,accel=kvm"], b"qemu-monitor-emu: -M q35,accel=kvm: machine 'q35' is not "
                                  b"emulated: only -machine none is\n"),
        (["-machine", "type=pc"], b"qemu-monitor-emu: -machine type=pc: machine 'pc' is not "
                                  b"emulated: only -machine none is\n"),
        ([*BASE, "-chardev", "null,id=c0", "-mon", "c0,x-session-check=on"],
         b"qemu-monitor-emu: -mon c0,x-session-check=on: 'x-session-check' is not compatible "
         b"with HMP monitors\n"),
    ],
    ids=["machine-pc", "M-q35", "machine-type", "session-check-hmp"],
)  # fmt: skip
def test_emulator_only_command_line_errors(args: list[str], stderr: bytes) -> None:
    """The emulator refuses what it does not emulate (QEMU would start a PC)."""
    res = run_cli("emu", args)
    assert (res.returncode, res.stderr, res.stdout) == (1, stderr, b"")


def test_session_check_option() -> None:
    """``x-session-check`` is an emulator-only -mon option for QMP monitors;
    it is listed in -h, and a monitor with it serves sessions as usual."""
    usage = run_cli("emu", ["-h"]).stdout.decode()
    assert "[,x-session-check=on|off]" in usage and "(emulator only, mode=control)" in usage
    args = [
        "-chardev", "socket,id=m1,path={tmpdir}/checked.sock,server=on,wait=off",
        "-mon", "chardev=m1,mode=control,x-session-check=on",
    ]  # fmt: skip
    with launched("emu", args) as inst:
        for _ in range(2):
            c = inst.connect_negotiated(inst.path("checked.sock"))
            assert c.execute("query-status")["return"] == QUERY_STATUS_RUNNING
            c.close()


# ---------------------------------------------------------------- default monitors


def _read_line(fd: int, deadline: float) -> bytes:
    line = b""
    end = time.monotonic() + deadline
    while not line.endswith(b"\n"):
        left = end - time.monotonic()
        assert left > 0, f"no complete line: {line!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 1)
            assert chunk, f"EOF after {line!r}"
            line += chunk
    return line


def _read_until(fd: int, end_marker: bytes, deadline: float) -> bytes:
    out = b""
    end = time.monotonic() + deadline
    while not out.endswith(end_marker):
        left = end - time.monotonic()
        assert left > 0, f"no {end_marker!r} in {out!r}"
        ready, _, _ = select.select([fd], [], [], left)
        if ready:
            chunk = os.read(fd, 4096)
            assert chunk, f"EOF after {out!r}"
            out += chunk
    return out


def test_default_monitors(tmp_path: Any) -> None:
    """No arguments: HMP on stdio and QMP on a UNIX socket whose path is
    printed on stderr; the socket serves a session, quit exits 0 and the
    socket's directory is removed."""
    target_program("emu")
    proc = subprocess.Popen(
        [sys.executable, "-m", "system"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env("emu"),
        cwd=str(tmp_path),
    )
    try:
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        line = _read_line(proc.stderr.fileno(), DEADLINE)
        m = re.fullmatch(rb"qemu-monitor-emu: QMP monitor listening on unix:(/\S+)\n", line)
        assert m, line
        path = m.group(1).decode()
        banner = _read_until(proc.stdout.fileno(), b"(qemu) ", DEADLINE)
        assert banner == b"QEMU 7.2.22 monitor - type 'help' for more information\r\n(qemu) "

        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        c = QMPLine(sock, "default")
        try:
            _, greeting = c.negotiate(oob=False)
            assert greeting["QMP"]["capabilities"] == ["oob"]
            proc.stdin.write(b"info status\r")
            proc.stdin.flush()
            out = _read_until(proc.stdout.fileno(), b"(qemu) ", DEADLINE)
            assert out.endswith(b"\r\nVM status: running\r\n(qemu) ")
            c.send_cmd("quit", req_id="quit")
            msgs = read_until_eof(c)
            assert {"return": {}, "id": "quit"} in msgs
        finally:
            c.close()
        assert proc.wait(DEADLINE) == 0
        assert not os.path.exists(os.path.dirname(path))
        assert proc.stderr.read() == b""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        for f in (proc.stdin, proc.stdout, proc.stderr):
            if f is not None:
                f.close()


# ---------------------------------------------------------------- CPU placement


def _thread_cpus(pid: int) -> dict[int, set[int]]:
    """Each thread of ``pid`` and the CPUs it may run on."""
    return {int(tid): os.sched_getaffinity(int(tid)) for tid in os.listdir(f"/proc/{pid}/task")}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux CPU affinity")
@pytest.mark.parametrize("setting", [None, "off"], ids=["default", "off"])
def test_cpu_placement(monkeypatch: pytest.MonkeyPatch, setting: Optional[str]) -> None:
    """By default the main loop and the monitor I/O thread are kept on one
    CPU the emulator was allowed to use (os_setup_cpu_affinity);
    ``QEMU_MONITOR_EMU_AFFINITY=off`` leaves every thread where the parent's
    placement allows."""
    if setting is None:
        monkeypatch.delenv("QEMU_MONITOR_EMU_AFFINITY", raising=False)
    else:
        monkeypatch.setenv("QEMU_MONITOR_EMU_AFFINITY", setting)
    with launched("emu") as inst:
        placements = _thread_cpus(inst.proc.pid)
    assert len(placements) >= 2, "the monitor I/O thread runs"
    (cpus,) = {frozenset(c) for c in placements.values()}
    if setting is None:
        assert len(cpus) == 1 and cpus <= os.sched_getaffinity(0)
    else:
        assert cpus == os.sched_getaffinity(0)
