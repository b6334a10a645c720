"""Launch QEMU or the emulator with the same argv and talk QMP to it byte by byte.

This module is the whole test-side toolbox of the differential tier:

* :func:`launch` starts ``qemu-system-x86_64`` (target ``"qemu"``) or the
  emulator (target ``"emu"``: ``python -m system``) with *identical*
  arguments, waits until every monitor socket exists and serves a clean
  session, and returns an :class:`Instance` that tears the process down
  again (SIGTERM, then SIGKILL; reaped, no zombie).
* :class:`QMPLine` is a deliberately dumb raw-socket QMP client: it sends
  bytes and returns each message exactly as received (``raw`` bytes with
  their CRLF) together with its parsed value, so tests can compare key
  order, escapes and line ends.  Every read has a deadline (socket
  timeouts); only bounded polls of another process's state pause briefly.
* :func:`mask_raw` / :func:`mask_message` hide the only things allowed to
  differ between the targets: the greeting's ``version``/``package`` and
  event timestamps.
* :func:`make_blocker` gives each target a way to block its main loop while
  the monitor I/O thread keeps running (QEMU: ``blockdev-add`` of a blkdebug
  node whose config file is a FIFO; emulator: ``x-oob-test {"lock": true}``).

Everything runs in the pytest thread; the only concurrency is the process
under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Optional, Union

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

#: The reference binary; override with ``QEMU_SYSTEM_BINARY`` to test another build.
QEMU_BINARY = os.environ.get("QEMU_SYSTEM_BINARY", "qemu-system-x86_64")

#: The emulator's entry point; its absence makes every ``emu`` test skip.
EMU_MAIN = REPO_ROOT / "system" / "__main__.py"

TARGETS = ("qemu", "emu")

#: Default deadline (seconds) for anything we wait on: a socket, a reply, an exit.
DEADLINE = 10.0

#: Deadline of one readiness probe session (see :meth:`Instance.wait_until_served`).
PROBE_DEADLINE = 3.0

#: How long a negative check ("nothing arrives") listens before concluding silence.
QUIET_PERIOD = 0.5

#: Name of the primary monitor's socket inside the instance's temp dir.
MON_SOCKET = "mon.sock"

#: Name of the auxiliary ``-qmp`` socket (see :func:`aux_qmp_args`).
AUX_SOCKET = "aux.sock"

#: The message QEMU returns for a command sent before ``qmp_capabilities``.
NEGOTIATION_DESC = "Expecting capabilities negotiation with 'qmp_capabilities'"

JSONValue = Any
Message = tuple[bytes, JSONValue]


# ---------------------------------------------------------------------------
# Targets and command lines


def target_program(target: str) -> list[str]:
    """Return the argv prefix that starts *target*, or skip the test cleanly.

    ``"qemu"`` skips when ``qemu-system-x86_64`` is not on ``PATH``;
    ``"emu"`` skips while ``system/__main__.py`` has not been written.
    """
    if target == "qemu":
        binary = shutil.which(QEMU_BINARY)
        if binary is None:
            pytest.skip(f"{QEMU_BINARY} is not installed")
        return [binary]
    if target == "emu":
        if not EMU_MAIN.exists():
            pytest.skip(f"emulator not implemented yet: {EMU_MAIN.relative_to(REPO_ROOT)} missing")
        return [sys.executable, "-m", "system"]
    raise ValueError(f"unknown target {target!r}; expected one of {TARGETS}")


def monitor_args(mon_path: str, *, pretty: bool = False) -> list[str]:
    """The common QEMU arguments: no machine, one QMP monitor on a UNIX socket."""
    mon = "chardev=m0,mode=control" + (",pretty=on" if pretty else "")
    return [
        "-nodefaults",
        "-machine", "none",
        "-display", "none",
        "-chardev", f"socket,id=m0,path={mon_path},server=on,wait=off",
        "-mon", mon,
    ]  # fmt: skip


def aux_qmp_args(tmpdir: str) -> list[str]:
    """Arguments adding a second QMP monitor (``-qmp``) on ``AUX_SOCKET``.

    Several tests need a side channel: to unblock the emulator's main loop
    while the primary monitor is suspended, or to raise events while the
    primary connection is still negotiating.
    """
    return ["-qmp", f"unix:{os.path.join(tmpdir, AUX_SOCKET)},server=on,wait=off"]


# ---------------------------------------------------------------------------
# Raw line client


class QMPLine:
    """A raw QMP client over a UNIX socket: exact bytes in, exact bytes out.

    Messages are returned as ``(raw, parsed)``: ``raw`` is every byte of the
    message including its line ends (several lines in pretty mode), ``parsed``
    is ``json.loads(raw)``.  Events that arrive while waiting for a reply are
    kept in :attr:`events`.
    """

    def __init__(self, sock: socket.socket, name: str = "qmp") -> None:
        self.sock = sock
        self.name = name
        self._buf = b""
        self._next_id = 0
        #: Events seen by :meth:`execute` / :meth:`recv_reply`, in arrival order.
        self.events: list[Message] = []
        self.closed = False

    @classmethod
    def connect(
        cls,
        path: str,
        *,
        proc: subprocess.Popen[Any],
        deadline: float = DEADLINE,
        name: str = "qmp",
    ) -> QMPLine:
        """Connect to *path* served by *proc*, retrying while it is not listening yet."""
        end = time.monotonic() + deadline
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock, name)
            except (ConnectionRefusedError, FileNotFoundError):
                sock.close()
                if time.monotonic() >= end or wait_for_exit(proc, POLL_PAUSE):
                    raise

    # -- sending ------------------------------------------------------------

    def send(self, data: Union[bytes, str]) -> None:
        """Send raw bytes (a ``str`` is encoded as UTF-8)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        self.sock.sendall(data)

    def new_id(self, prefix: str = "req") -> str:
        """Return a fresh request id (``prefix-N``)."""
        self._next_id += 1
        return f"{prefix}-{self._next_id}"

    def send_cmd(
        self,
        name: str,
        arguments: Optional[dict[str, JSONValue]] = None,
        *,
        req_id: JSONValue = None,
        oob: bool = False,
    ) -> JSONValue:
        """Send one request (compact JSON, newline-terminated); return its id."""
        if req_id is None:
            req_id = self.new_id()
        msg: dict[str, JSONValue] = {("exec-oob" if oob else "execute"): name}
        if arguments is not None:
            msg["arguments"] = arguments
        msg["id"] = req_id
        self.send(json.dumps(msg) + "\n")
        return req_id

    # -- receiving ----------------------------------------------------------

    def _fill(self, end: float) -> None:
        """Read at least one more chunk into the buffer before *end*."""
        remaining = end - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"{self.name}: no complete message; buffered {self._buf!r}")
        self.sock.settimeout(remaining)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            raise TimeoutError(
                f"{self.name}: no complete message; buffered {self._buf!r}"
            ) from None
        if not chunk:
            raise EOFError(f"{self.name}: EOF; buffered {self._buf!r}")
        self._buf += chunk

    def recv_line(self, deadline: float = DEADLINE) -> bytes:
        """Return the next line, including its ``\\n`` (and ``\\r`` if sent)."""
        end = time.monotonic() + deadline
        while b"\n" not in self._buf:
            self._fill(end)
        line, _, self._buf = self._buf.partition(b"\n")
        return line + b"\n"

    def recv_msg(self, deadline: float = DEADLINE) -> Message:
        """Return the next message as ``(raw_bytes, parsed)``.

        A message is the shortest run of whole lines that parses as JSON, so
        pretty-printed output works too.
        """
        end = time.monotonic() + deadline
        raw = b""
        while True:
            try:
                raw += self.recv_line(max(end - time.monotonic(), 0.001))
            except TimeoutError as e:
                raise TimeoutError(f"{e}; incomplete message so far {raw!r}") from None
            try:
                return raw, json.loads(raw)
            except ValueError:
                continue

    def recv_greeting(self, deadline: float = DEADLINE) -> Message:
        """Receive the greeting and check that it is one."""
        raw, msg = self.recv_msg(deadline)
        assert isinstance(msg, dict) and set(msg) == {"QMP"}, f"not a greeting: {raw!r}"
        return raw, msg

    def recv_reply(self, req_id: JSONValue = None, deadline: float = DEADLINE) -> Message:
        """Return the next non-event message, stashing events in :attr:`events`.

        With *req_id*, the reply must carry that id (a different reply fails).
        """
        end = time.monotonic() + deadline
        while True:
            raw, msg = self.recv_msg(max(end - time.monotonic(), 0.001))
            if isinstance(msg, dict) and "event" in msg:
                self.events.append((raw, msg))
                continue
            if req_id is not None:
                assert isinstance(msg, dict) and msg.get("id") == req_id, (
                    f"expected reply id {req_id!r}, got {raw!r}"
                )
            return raw, msg

    def execute(
        self,
        name: str,
        arguments: Optional[dict[str, JSONValue]] = None,
        *,
        oob: bool = False,
        deadline: float = DEADLINE,
    ) -> JSONValue:
        """Run one command and return the parsed reply (``return`` or ``error``)."""
        req_id = self.send_cmd(name, arguments, oob=oob)
        return self.recv_reply(req_id, deadline)[1]

    def ok(self, name: str, arguments: Optional[dict[str, JSONValue]] = None) -> JSONValue:
        """Run one command that must succeed; return its ``return`` value."""
        reply = self.execute(name, arguments)
        assert "return" in reply, f"{name} failed: {reply!r}"
        return reply["return"]

    def negotiate(self, *, oob: bool = True) -> Message:
        """Read the greeting and run ``qmp_capabilities`` (enabling OOB if asked)."""
        greeting = self.recv_greeting()
        args = {"enable": ["oob"]} if oob else None
        reply = self.execute("qmp_capabilities", args)
        assert reply.get("return") == {}, f"negotiation failed: {reply!r}"
        return greeting

    def recv_event(self, name: str, deadline: float = DEADLINE) -> Message:
        """Return the first event called *name* (already stashed or arriving)."""
        for i, (raw, msg) in enumerate(self.events):
            if msg["event"] == name:
                del self.events[i]
                return raw, msg
        end = time.monotonic() + deadline
        while True:
            raw, msg = self.recv_msg(max(end - time.monotonic(), 0.001))
            if isinstance(msg, dict) and msg.get("event") == name:
                return raw, msg
            assert is_event(msg), f"expected event {name}, got {raw!r}"
            self.events.append((raw, msg))

    def recv_until_eof(self, deadline: float = DEADLINE) -> list[Message]:
        """Read messages until the server closes the connection; return them.

        A reset counts as EOF: QEMU reads one byte at a time, so bytes sent
        after ``quit`` (even a newline) are still unread when it closes the
        socket, and the kernel then reports ECONNRESET after the data.
        """
        end = time.monotonic() + deadline
        msgs: list[Message] = []
        while True:
            try:
                msgs.append(self.recv_msg(max(end - time.monotonic(), 0.001)))
            except (EOFError, ConnectionResetError):
                assert self._buf == b"", f"{self.name}: partial message at EOF: {self._buf!r}"
                return msgs

    def assert_silent(self, period: float = QUIET_PERIOD) -> None:
        """Fail if anything arrives within *period* seconds (a bounded read)."""
        if self._buf:
            raise AssertionError(f"{self.name}: unexpected data {self._buf!r}")
        self.sock.settimeout(period)
        try:
            chunk = self.sock.recv(65536)
        except socket.timeout:
            return
        raise AssertionError(f"{self.name}: expected silence, got {chunk!r}")

    def close(self) -> None:
        """Close the socket (idempotent)."""
        if not self.closed:
            self.closed = True
            self.sock.close()


# ---------------------------------------------------------------------------
# Process under test


class Instance:
    """One running target process and the clients connected to it."""

    def __init__(self, target: str, argv: list[str], tmpdir: str, sockets: Sequence[str]) -> None:
        self.target = target
        self.argv = argv
        self.tmpdir = tmpdir
        self.mon_path = os.path.join(tmpdir, MON_SOCKET)
        self.sockets = list(sockets)
        self._stderr_path = os.path.join(tmpdir, "stderr.log")
        self._clients: list[QMPLine] = []
        self._legacy: list[Any] = []
        self._loop: Optional[asyncio.AbstractEventLoop] = None
        env = dict(os.environ)
        if target == "emu":
            env["PYTHONPATH"] = os.pathsep.join(
                p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p
            )
            env["PYTHONFAULTHANDLER"] = "1"
        with open(self._stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=subprocess.STDOUT,
                cwd=tmpdir,
                env=env,
            )

    def path(self, name: str) -> str:
        """Absolute path of *name* inside this instance's temp dir."""
        return os.path.join(self.tmpdir, name)

    def stderr_text(self) -> str:
        """Everything the process wrote to stdout/stderr so far."""
        try:
            with open(self._stderr_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def wait_for_sockets(self, deadline: float = DEADLINE) -> None:
        """Poll until every listening socket exists (bounded; the process may die)."""
        end = time.monotonic() + deadline
        for path in self.sockets:
            while not os.path.exists(path):
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.target} exited with {self.proc.returncode} before creating "
                        f"{path}:\n{self.stderr_text()}"
                    )
                if time.monotonic() >= end:
                    raise TimeoutError(f"{self.target}: {path} did not appear within {deadline}s")
                wait_for_exit(self.proc, POLL_PAUSE)

    def wait_until_served(self, deadline: float = DEADLINE) -> None:
        """Return once every monitor answers a clean greeting + qmp_capabilities round trip.

        The round trip also proves that the main loop is running.  For QEMU,
        a session that goes wrong is retried: QEMU 7.2 listens on a monitor
        socket before the monitor has moved its chardev handlers to the I/O
        thread (``monitor_qmp_setup_handlers_bh``), and a client that connects
        inside that window is occasionally (about 1 in 1000 launches here)
        served by two threads: it gets the greeting twice, the startup RESUME
        event before the greeting, no reply, EOF, or its input bytes reordered
        (``{"xeecute": ...}``).  Tests specify steady-state behaviour, so the
        harness absorbs that window with throw-away sessions.  The emulator
        gets no such allowance: its first session must be clean.
        """
        end = time.monotonic() + deadline
        for path in self.sockets:
            while True:
                problem = self._probe(path, min(time.monotonic() + PROBE_DEADLINE, end))
                if problem is None:
                    break
                if self.proc.poll() is not None:
                    raise RuntimeError(
                        f"{self.target} exited with {self.proc.returncode} during startup "
                        f"({problem}):\n{self.stderr_text()}"
                    )
                if self.target != "qemu" or time.monotonic() >= end:
                    raise AssertionError(f"{self.target}: first session on {path}: {problem}")

    def _probe(self, path: str, end: float) -> Optional[str]:
        """One throw-away session on *path*: None if clean, else what went wrong."""
        try:
            client = QMPLine.connect(
                path, proc=self.proc, deadline=max(end - time.monotonic(), 0.001)
            )
        except OSError as e:
            return f"connect: {e!r}"
        try:
            client.recv_greeting(max(end - time.monotonic(), 0.001))
            client.send(b'{"execute": "qmp_capabilities", "id": "harness-ready"}\n')
            raw, reply = client.recv_msg(max(end - time.monotonic(), 0.001))
            if reply != {"return": {}, "id": "harness-ready"}:
                return f"qmp_capabilities got {raw!r}"
            return None
        except (AssertionError, ValueError, EOFError, OSError) as e:
            return repr(e)  # OSError covers TimeoutError and connection resets
        finally:
            client.close()

    def connect(self, path: Optional[str] = None, *, name: str = "qmp") -> QMPLine:
        """Open a raw connection to the primary monitor (or *path*)."""
        client = QMPLine.connect(path or self.mon_path, proc=self.proc, name=name)
        self._clients.append(client)
        return client

    def connect_negotiated(self, path: Optional[str] = None, *, oob: bool = True) -> QMPLine:
        """Connect, read the greeting and negotiate (OOB on by default)."""
        client = self.connect(path)
        client.negotiate(oob=oob)
        return client

    def legacy(self, path: Optional[str] = None) -> Any:
        """A ``qemu.qmp.legacy.QEMUMonitorProtocol`` for the primary monitor (or *path*).

        Not connected yet: call ``.connect()`` (which returns the greeting).
        Closed, with its event loop, by :meth:`close_clients`.
        """
        from qemu.qmp.legacy import QEMUMonitorProtocol

        if self._loop is None:
            # The legacy shim runs on the thread's current event loop (creating
            # and leaking one if there is none); give it one we close later.
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
        qmp = QEMUMonitorProtocol(path or self.mon_path)
        qmp.settimeout(DEADLINE)
        self._legacy.append(qmp)
        return qmp

    def wait_exit(self, deadline: float = DEADLINE) -> int:
        """Wait for the process to exit by itself; return its exit status."""
        try:
            return self.proc.wait(timeout=deadline)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.target} did not exit within {deadline}s:\n{self.stderr_text()}"
            ) from None

    def close_clients(self) -> None:
        """Close every client this instance handed out."""
        for qmp in self._legacy:
            with contextlib.suppress(Exception):
                qmp.close()
        self._legacy.clear()
        if self._loop is not None:
            self._loop.close()
            asyncio.set_event_loop(None)
            self._loop = None
        for client in self._clients:
            client.close()
        self._clients.clear()

    def shutdown(self) -> None:
        """Close clients, stop the process (SIGTERM, then SIGKILL), reap it.

        Asserts that the process is gone and left no zombie behind.
        """
        self.close_clients()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=DEADLINE / 2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=DEADLINE)
        assert self.proc.returncode is not None
        _assert_reaped(self.proc.pid)

    def check_clean_stderr(self) -> None:
        """The emulator must not die with a Python traceback, report an
        exception escaping a callback, or see a lock-order violation."""
        text = self.stderr_text()
        for sign in ("Traceback (most recent call last)", "unhandled", "lock-order violation"):
            assert sign not in text, text


def _assert_reaped(pid: int) -> None:
    """Fail if *pid* is still a zombie child of this process."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            stat = f.read()
    except FileNotFoundError:
        return
    # "pid (comm) S ppid ...": comm may contain spaces, so split after ')'.
    fields = stat.rpartition(")")[2].split()
    state, ppid = fields[0], int(fields[1])
    assert not (state == "Z" and ppid == os.getpid()), f"pid {pid} left a zombie"


#: seconds between two looks for a listening socket, which gives no notification
POLL_PAUSE = 0.01


def wait_for_exit(proc: subprocess.Popen[Any], timeout: float) -> bool:
    """Wait up to *timeout* for *proc* to exit; True if it has.

    The pause between two looks for what gives no notification (a socket
    starting to listen) is a wait on the one event that matters meanwhile:
    the process dying, which is then seen at once rather than at the deadline.
    """
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        return False
    return True


#: QEMU 7.2 sometimes aborts when a client connects inside the startup window
#: described in :meth:`Instance.wait_until_served`; its last words are:
QEMU_STARTUP_ABORT = "tcp_chr_change_state: Assertion"

#: Launch attempts for QEMU when it dies of :data:`QEMU_STARTUP_ABORT`.
QEMU_STARTUP_ATTEMPTS = 3


def launch(
    target: str,
    extra_args: Sequence[str] = (),
    *,
    pretty: bool = False,
    aux: bool = False,
) -> Instance:
    """Start *target* with the common monitor arguments plus *extra_args*.

    ``{tmpdir}`` in *extra_args* is replaced by the instance's temp dir.  With
    *aux*, a second QMP monitor is added (:func:`aux_qmp_args`).  Returns once
    every monitor serves (:meth:`Instance.wait_until_served`); the caller must
    call :meth:`Instance.shutdown` (the ``launcher`` fixture and
    :func:`launched` do).  Skips if the target is unavailable.  QEMU is
    relaunched if it hits its startup abort (:data:`QEMU_STARTUP_ABORT`).
    """
    program = target_program(target)
    attempt = 1
    while True:
        tmpdir = tempfile.mkdtemp(prefix=f"qmp-{target}-")
        mon_path = os.path.join(tmpdir, MON_SOCKET)
        args = monitor_args(mon_path, pretty=pretty)
        sockets = [mon_path]
        if aux:
            args += aux_qmp_args(tmpdir)
            sockets.append(os.path.join(tmpdir, AUX_SOCKET))
        args += [a.replace("{tmpdir}", tmpdir) for a in extra_args]
        inst = Instance(target, program + args, tmpdir, sockets)
        try:
            inst.wait_for_sockets()
            inst.wait_until_served()
            return inst
        except BaseException:
            startup_abort = (
                target == "qemu"
                and inst.proc.poll() is not None
                and QEMU_STARTUP_ABORT in inst.stderr_text()
            )
            inst.shutdown()
            shutil.rmtree(tmpdir, ignore_errors=True)
            if not startup_abort or attempt >= QEMU_STARTUP_ATTEMPTS:
                raise
            attempt += 1


@contextlib.contextmanager
def launched(target: str, extra_args: Sequence[str] = (), **kwargs: Any) -> Iterator[Instance]:
    """Context-manager form of :func:`launch` with guaranteed teardown."""
    inst = launch(target, extra_args, **kwargs)
    try:
        yield inst
    finally:
        try:
            inst.shutdown()
            if target == "emu":
                inst.check_clean_stderr()
        finally:
            shutil.rmtree(inst.tmpdir, ignore_errors=True)


# ---------------------------------------------------------------------------
# Normalisation: the only permitted differences between targets

# Masking is idempotent: already-masked values ("M", "S", "US") match too.
_VERSION_RE = re.compile(
    rb'("version":\s*\{\s*"qemu":\s*\{\s*'
    rb'"micro":\s*)(?:\d+|"M")(,\s*"minor":\s*)(?:\d+|"M")(,\s*"major":\s*)(?:\d+|"M")'
    rb'(\s*\},\s*"package":\s*)"(?:[^"\\]|\\.)*"'
)
_TIMESTAMP_RE = re.compile(
    rb'("timestamp":\s*\{\s*"seconds":\s*)(?:-?\d+|"S")(,\s*"microseconds":\s*)(?:-?\d+|"US")'
)
MASK = "<masked>"


def is_greeting(msg: JSONValue) -> bool:
    """True for ``{"QMP": {...}}``."""
    return isinstance(msg, dict) and set(msg) == {"QMP"}


def is_event(msg: JSONValue) -> bool:
    """True for an event message."""
    return isinstance(msg, dict) and "event" in msg and "timestamp" in msg


def mask_raw(raw: bytes) -> bytes:
    """Mask the greeting's version numbers/package and an event's timestamp.

    Works on exact bytes (compact or pretty) and leaves everything else,
    including key order and whitespace, untouched.  Other messages (e.g. a
    ``query-version`` reply) are returned unchanged.
    """
    msg = json.loads(raw)
    if is_greeting(msg):
        masked, n = _VERSION_RE.subn(rb'\1"M"\2"M"\3"M"\4"' + MASK.encode() + b'"', raw)
        assert n == 1, f"greeting without the expected version layout: {raw!r}"
        return masked
    if is_event(msg):
        masked, n = _TIMESTAMP_RE.subn(rb'\1"S"\2"US"', raw)
        assert n == 1, f"event without the expected timestamp layout: {raw!r}"
        return masked
    return raw


def mask_message(msg: JSONValue) -> JSONValue:
    """Parsed-value twin of :func:`mask_raw` (returns a masked copy)."""
    if is_greeting(msg):
        qmp = dict(msg["QMP"])
        qmp["version"] = {"qemu": {"micro": MASK, "minor": MASK, "major": MASK}, "package": MASK}
        return {"QMP": qmp}
    if is_event(msg):
        out = dict(msg)
        out["timestamp"] = {"seconds": MASK, "microseconds": MASK}
        return out
    return msg


def assert_version_info(version: JSONValue) -> None:
    """Check the shape of a VersionInfo (greeting ``version`` or query-version)."""
    assert isinstance(version, dict) and set(version) == {"qemu", "package"}, version
    assert set(version["qemu"]) == {"major", "minor", "micro"}, version
    for key in ("major", "minor", "micro"):
        assert isinstance(version["qemu"][key], int) and version["qemu"][key] >= 0, version
    assert isinstance(version["package"], str), version


def assert_timestamp(msg: JSONValue) -> None:
    """Check an event's timestamp: wall-clock seconds and microseconds."""
    ts = msg["timestamp"]
    assert set(ts) == {"seconds", "microseconds"}, msg
    assert isinstance(ts["seconds"], int) and isinstance(ts["microseconds"], int), msg
    assert 0 <= ts["microseconds"] < 1_000_000, msg
    assert abs(ts["seconds"] - time.time()) < 3600, f"timestamp is not wall-clock time: {msg}"


# ---------------------------------------------------------------------------
# Blocking the main loop while the monitor I/O thread keeps going


class Blocker:
    """Blocks the target's main loop with an in-band command, and unblocks it.

    :meth:`block` returns only once the main loop is (as far as can be
    observed from outside) stuck inside the blocking command, so requests
    sent afterwards are certain to queue up behind it.
    """

    def block(self, client: QMPLine, req_id: str) -> None:
        """Send the in-band request *req_id* and wait until it blocks the main loop."""
        raise NotImplementedError

    def unblock(self) -> None:
        """Let the blocked command finish (from outside the blocked monitor)."""
        raise NotImplementedError


class FifoBlocker(Blocker):
    """QEMU: ``blockdev-add`` of a blkdebug node whose config file is a FIFO.

    blkdebug reads its config file in the main loop (qmp-test.c's trick).
    :meth:`block` polls a non-blocking open of the FIFO for writing, which
    succeeds exactly when QEMU has the FIFO open for reading, i.e. is inside
    ``blockdev-add``; holding that write end open then keeps QEMU blocked in
    ``read()``.  :meth:`unblock` closes it: QEMU reads an empty config and the
    command succeeds.  Each block uses a fresh node name.
    """

    def __init__(self, inst: Instance) -> None:
        self.fifo = inst.path("blkdebug.fifo")
        os.mkfifo(self.fifo)
        self._count = 0
        self._writer: Optional[int] = None

    def block(self, client: QMPLine, req_id: str, deadline: float = DEADLINE) -> None:
        assert self._writer is None, "already blocked"
        self._count += 1
        client.send_cmd(
            "blockdev-add",
            {
                "driver": "blkdebug",
                "node-name": f"blocker{self._count}",
                "config": self.fifo,
                "image": {"driver": "null-co", "read-zeroes": True},
            },
            req_id=req_id,
        )
        # Opening a FIFO for writing returns when its reader (blkdebug, in
        # QEMU's main loop) opens it: that is the event, waited for with a
        # deadline.  On timeout our own read end releases the opener.
        opened: list[int] = []
        opener = threading.Thread(
            target=lambda: opened.append(os.open(self.fifo, os.O_WRONLY)), daemon=True
        )
        opener.start()
        opener.join(deadline)
        if opener.is_alive():
            release = os.open(self.fifo, os.O_RDONLY | os.O_NONBLOCK)
            opener.join()
            os.close(release)
            for fd in opened:
                os.close(fd)
            raise TimeoutError(f"blkdebug did not open {self.fifo} within {deadline}s")
        self._writer = opened[0]

    def unblock(self) -> None:
        assert self._writer is not None, "not blocked"
        os.close(self._writer)
        self._writer = None


class OobTestBlocker(Blocker):
    """Emulator: in-band ``x-oob-test {"lock": true}``, released by an OOB ``lock: false``.

    The release goes through the auxiliary QMP monitor (negotiated with OOB
    *before* blocking), so it works even when the primary monitor is
    suspended or disconnected.  There is no way to observe the lock from
    outside, so :meth:`block` settles for "no reply within QUIET_PERIOD".
    """

    def __init__(self, inst: Instance) -> None:
        assert os.path.exists(inst.path(AUX_SOCKET)), "launch(..., aux=True) is required"
        self.aux = inst.connect_negotiated(inst.path(AUX_SOCKET))

    def block(self, client: QMPLine, req_id: str) -> None:
        client.send_cmd("x-oob-test", {"lock": True}, req_id=req_id)
        client.assert_silent()

    def unblock(self, deadline: float = DEADLINE) -> None:
        req_id = self.aux.send_cmd("x-oob-test", {"lock": False}, oob=True)
        _, reply = self.aux.recv_reply(req_id, deadline)
        assert reply.get("return") == {}, reply


def make_blocker(inst: Instance) -> Blocker:
    """The main-loop blocker for *inst*'s target (requires ``aux=True`` launches)."""
    if inst.target == "qemu":
        return FifoBlocker(inst)
    return OobTestBlocker(inst)


def collect_replies(
    client: QMPLine, ids: Sequence[JSONValue], deadline: float = DEADLINE
) -> list[Message]:
    """Read until a reply for every id in *ids* arrived; return replies in arrival order.

    Events are stashed in ``client.events``; a reply with an unexpected id fails.
    """
    end = time.monotonic() + deadline
    wanted = list(ids)
    got: list[Message] = []
    while wanted:
        raw, msg = client.recv_reply(deadline=max(end - time.monotonic(), 0.001))
        assert msg.get("id") in wanted, f"unexpected reply {raw!r}; waiting for {wanted}"
        wanted.remove(msg.get("id"))
        got.append((raw, msg))
    return got


def ids_of(msgs: Sequence[Message]) -> list[JSONValue]:
    """The ``id`` of each message."""
    return [m.get("id") for _, m in msgs]


#: A request that always fails the same way; sent after malformed input to
#: prove the monitor recovered (qmp-test.c's ``assert_recovered``).  It starts
#: with ``{`` so it also ends the JSON lexer's error recovery.
PROBE = b'{"execute": "no-such-cmd", "id": "probe"}\n'

#: The probe's reply before and after capabilities negotiation.
PROBE_REPLY_NEGOTIATING = (
    b'{"id": "probe", "error": {"class": "CommandNotFound", "desc": '
    b"\"Expecting capabilities negotiation with 'qmp_capabilities'\"}}\r\n"
)
PROBE_REPLY = (
    b'{"id": "probe", "error": {"class": "CommandNotFound", "desc": '
    b'"The command no-such-cmd has not been found"}}\r\n'
)


def send_with_probe(
    client: QMPLine, data: bytes, deadline: float = DEADLINE
) -> tuple[list[bytes], bytes]:
    """Send *data*, then :data:`PROBE`.

    Returns the raw messages that arrived before the probe's reply, and that reply.
    """
    client.send(data + PROBE)
    end = time.monotonic() + deadline
    before: list[bytes] = []
    while True:
        raw, msg = client.recv_msg(max(end - time.monotonic(), 0.001))
        if isinstance(msg, dict) and msg.get("id") == "probe":
            return before, raw
        before.append(raw)
