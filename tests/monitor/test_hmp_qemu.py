"""Differential test: the same keystrokes to QEMU 7.2 and to the emulator's
HMP monitor, on the same UNIX socket path, give the same bytes.

Only the version in the banner is masked.  The inputs avoid what the
emulator leaves out on purpose: commands it does not have, and Tab on a
prefix that QEMU's longer command list makes ambiguous.  Skipped when
``qemu-system-x86_64`` is not installed.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import pytest

from chardev.char import qemu_chr_cleanup
from chardev.char_mux import resume_mux_open, suspend_mux_open
from chardev.char_opts import qemu_chardev_opts, qemu_chr_new, qemu_chr_new_from_opts
from monitor.hmp import monitor_init_hmp
from tests.integration.harness import QEMU_BINARY, QMPLine, launched, target_program
from tests.monitor.test_hmp import hmp_globals
from tests.monitor.test_hmp_chardev import PROMPT, HMPClient, K
from util.main_loop import MainLoop
from util.qemu_option import qemu_opts_parse

DEADLINE = 10.0

#: one chunk per step; every step but the last ends a line, so it ends
#: with a prompt
STEPS = [
    b"info status\r",
    b"stop\r",
    b"info status\r",
    b"stop\r",
    b"c\r",
    b"info status\r",
    b"foo\r",
    b"  foo\r",
    b"info bogus\r",
    b"info commands\r",
    b"help stop\r",
    b"help info status\r",
    b"? stop\r",
    b"help help\r",
    b"help foo\r",
    b"help info bogus\r",
    b"stop extra\r",
    b"info status extra\r",
    b"\r",
    b"   \r",
    b"info name\r",
    b"info chardev\r",
    b"abc\x7f\x7fd\r",
    b"ab\x08c\x01x\x05y\r",
    b"foo bar\x17baz\r",
    b"abc\x1b[D\x1b[Dx\x1b[C\x1b[3~\r",
    b"ab\x1bOHx\x1bOFy\x1b[1~z\x1b[4~\x04\r",
    b"ab\x1bxc\x9bD\r",
    b"\x1b[A\x1b[A\x1b[B\r",
    b"\x1b[A\x1b[A\x1b[A\x1b[B\x1b[B\x1b[B\x1b[B\r",
    b"hel\t stop\r",
    b"info ver\t\x17\x17status\r",
    b"system_p\t\r",
    b"system_reset\r",
    b"exit_preconfig\r",
    b"info history\r",
]
QUIT = b"quit\r"

_VERSION = re.compile(rb"^QEMU \S+ monitor")


def mask(transcript: bytes) -> bytes:
    return _VERSION.sub(b"QEMU <version> monitor", transcript)


def qemu_transcript(path: str) -> list[bytes]:
    """Banner, one output per step, then what ``quit`` echoes before EOF."""
    if shutil.which(QEMU_BINARY) is None:
        pytest.skip(f"{QEMU_BINARY} is not installed")
    argv = [QEMU_BINARY, "-nodefaults", "-machine", "none", "-display", "none"]
    argv += ["-monitor", f"unix:{path},server=on,wait=off"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        sock = QMPLine.connect(path, proc=proc, deadline=DEADLINE).sock
        out = [_read_until_prompt(sock)]
        for step in STEPS:
            sock.sendall(step)
            out.append(_read_until_prompt(sock))
        sock.sendall(QUIT)
        out.append(_read_until_eof(sock))
        sock.close()
        proc.wait(DEADLINE)
        return out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _read_until_prompt(sock: socket.socket) -> bytes:
    buf = b""
    end = time.monotonic() + DEADLINE
    while not buf.endswith(PROMPT):
        sock.settimeout(max(end - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        assert chunk, f"EOF after {buf!r}"
        buf += chunk
    return buf


def _read_until_eof(sock: socket.socket) -> bytes:
    buf = b""
    sock.settimeout(DEADLINE)
    while True:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            return buf
        if not chunk:
            return buf
        buf += chunk


def emulator_transcript(path: str) -> list[bytes]:
    chr = qemu_chr_new("compat_monitor0", f"unix:{path},server=on,wait=off")
    assert chr is not None
    monitor_init_hmp(chr, True)
    client = HMPClient(path)
    try:
        out = [client.settle()]
        for step in STEPS:
            client.sock.sendall(step)
            out.append(client.settle())
        client.sock.sendall(QUIT)
        out.append(client.settle())
        return out
    finally:
        client.close()


@pytest.fixture
def sock_path() -> Iterator[str]:
    tmpdir = tempfile.mkdtemp(prefix="hmpq-", dir="/tmp")
    yield os.path.join(tmpdir, "m.sock")
    shutil.rmtree(tmpdir)


@pytest.mark.qemu
def test_hmp_transcript_matches_qemu(main_loop: MainLoop, sock_path: str) -> None:
    expected = [mask(chunk) for chunk in qemu_transcript(sock_path)]
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    try:
        with hmp_globals():
            got = [mask(chunk) for chunk in emulator_transcript(sock_path)]
    finally:
        qemu_chr_cleanup()
    for step, want, have in zip([b"<connect>", *STEPS, QUIT], expected, got):
        assert have == want, f"after {step!r}"
    assert len(got) == len(expected)


# ---------------------------------------------------------------- two HMP monitors on a mux

#: (keystrokes, the output's end); C-a c moves the focus between monitors
MUX_STEPS = [
    (b"info status\r", b"running\r\n" + PROMPT),
    (b"\x01c", PROMPT),
    (b"ab", b"ab" + K),
    (b"\x01c", PROMPT),
    (b"stop\r", b"stop" + K + b"\r\n" + PROMPT),
    (b"xy\x01c", PROMPT),
    (b"info status\r", b"paused\r\n" + PROMPT),
    (b"\x01c", PROMPT),
    (b"c\r", b"c" + K + b"\r\n" + PROMPT),
    (b"\x01h", b"sends C-a\n\r"),
    (b"\x01\x01info name\r", b"info name" + K + b"\r\n" + PROMPT),
]
#: the keys after C-a c in the same chunk: QEMU reads one byte per main loop
#: iteration, so the newly focused monitor prints its prompt first
MUX_STEPS_ONE_CHUNK = [
    *MUX_STEPS[:5],
    (b"xy\x01cinfo status\r", b"paused\r\n" + PROMPT),
    *MUX_STEPS[7:],
]
RECONNECT_STEPS = [(b"info status\r", b"running\r\n" + PROMPT)]
MUX_SPEC = "socket,id=c,path={},server=on,wait=off,mux=on"


def qemu_mux_transcript(path: str, mux_steps: list[tuple[bytes, bytes]]) -> list[bytes]:
    if shutil.which(QEMU_BINARY) is None:
        pytest.skip(f"{QEMU_BINARY} is not installed")
    argv = [QEMU_BINARY, "-nodefaults", "-machine", "none", "-display", "none"]
    argv += ["-chardev", MUX_SPEC.format(path)]
    argv += ["-mon", "chardev=c,mode=readline", "-mon", "chardev=c,mode=readline"]
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        out = []
        for steps in (mux_steps, RECONNECT_STEPS):
            sock = QMPLine.connect(path, proc=proc, deadline=DEADLINE).sock
            out.append(_read_until(sock, PROMPT))
            for keys, end in steps:
                sock.sendall(keys)
                out.append(_read_until(sock, end))
            sock.close()
        return out
    finally:
        proc.kill()
        proc.wait()


def _read_until(sock: socket.socket, end: bytes) -> bytes:
    buf = b""
    deadline = time.monotonic() + DEADLINE
    while not buf.endswith(end):
        sock.settimeout(max(deadline - time.monotonic(), 0.001))
        chunk = sock.recv(65536)
        assert chunk, f"EOF after {buf!r}"
        buf += chunk
    return buf


def emulator_mux_transcript(path: str, mux_steps: list[tuple[bytes, bytes]]) -> list[bytes]:
    """As QEMU's command line does: mux OPENED is held back until both
    monitors are attached (the second one gets the focus)."""
    suspend_mux_open()
    opts = qemu_opts_parse(qemu_chardev_opts(), MUX_SPEC.format(path), True)
    chr = qemu_chr_new_from_opts(opts)
    assert chr is not None
    monitor_init_hmp(chr, True)
    monitor_init_hmp(chr, True)
    resume_mux_open()
    out = []
    for steps in (mux_steps, RECONNECT_STEPS):
        client = HMPClient(path)
        out.append(client.settle())
        for keys, _ in steps:
            client.sock.sendall(keys)
            out.append(client.settle())
        client.close()
    return out


@pytest.mark.qemu
@pytest.mark.parametrize(
    "mux_steps",
    [
        pytest.param(MUX_STEPS, id="keys-after-focus-switch-sent-later"),
        pytest.param(MUX_STEPS_ONE_CHUNK, id="keys-after-focus-switch-in-one-chunk"),
    ],
)
def test_mux_transcript_matches_qemu(
    main_loop: MainLoop, sock_path: str, mux_steps: list[tuple[bytes, bytes]]
) -> None:
    """Two HMP monitors on one mux, as ``-chardev socket,...,mux=on`` with
    two ``-mon chardev=c,mode=readline``: banners held while out of focus,
    the line break on MUX_OUT, the dropped half line on MUX_IN."""
    expected = [mask(chunk) for chunk in qemu_mux_transcript(sock_path, mux_steps)]
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    try:
        with hmp_globals():
            got = [mask(chunk) for chunk in emulator_mux_transcript(sock_path, mux_steps)]
    finally:
        qemu_chr_cleanup()
    steps = [b"<connect>", *(k for k, _ in mux_steps), b"<reconnect>"]
    steps += [k for k, _ in RECONNECT_STEPS]
    for step, want, have in zip(steps, expected, got):
        assert have == want, f"after {step!r}"
    assert len(got) == len(expected)


# ---------------------------------------------------------------- human-monitor-command

HMC_LINES = [
    "info status",
    "stop",
    "info status",
    "cont",
    "",
    " ",
    "foo",
    "info bogus",
    "help stop",
    "help info status",
    "stop extra",
    "info status extra",
    "info name",
    "info history",
    "system_reset",
    "system_powerdown",
]


def hmc_wire(target: str) -> tuple[list[bytes], list[str]]:
    """The raw replies, over QMP, and the names of the events seen meanwhile."""
    with launched(target) as inst:
        qmp = inst.connect_negotiated()
        replies = []
        for command_line in HMC_LINES:
            req_id = qmp.send_cmd("human-monitor-command", {"command-line": command_line})
            replies.append(qmp.recv_reply(req_id)[0])
        req_id = qmp.send_cmd(
            "human-monitor-command", {"command-line": "info status", "cpu-index": 0}
        )
        replies.append(qmp.recv_reply(req_id)[0])
        return replies, [msg["event"] for _, msg in qmp.events]


@pytest.mark.qemu
def test_human_monitor_command_on_the_wire_matches_qemu() -> None:
    """CRLF inside the returned string, "" for no output, the cpu-index error."""
    target_program("qemu")
    target_program("emu")
    expected, expected_events = hmc_wire("qemu")
    got, events = hmc_wire("emu")
    assert got == expected
    assert events == expected_events
