"""An HMP monitor on a real UNIX socket chardev, driven through the main loop.

The test thread is the main loop thread: it sends bytes as a client would
and runs ``main_loop_wait()`` until the expected output has arrived, with a
deadline (a timer wakes the loop if nothing else does).  Expected bytes are
QEMU 7.2.22's for the same input, apart from the version in the banner.
"""

from __future__ import annotations

import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from typing import Callable

import pytest

from chardev.char import qemu_chr_cleanup
from chardev.char_mux import resume_mux_open, suspend_mux_open
from chardev.char_opts import qemu_chardev_opts, qemu_chr_new, qemu_chr_new_from_opts
from chardev.char_pair import qemu_chr_new_pair
from monitor.hmp import monitor_init_hmp
from monitor.monitor_internal import MonitorGlobals, MonitorHMP
from monitor.qmp_cmds_control import QEMU_PKGVERSION
from system.runstate import RunState, ShutdownCause, runstate
from tests.monitor.test_hmp import hmp_globals
from util.aio import aio_timer_new
from util.atomic import qatomic_read
from util.main_loop import MainLoop, main_loop_wait, qemu_get_aio_context
from util.qemu_option import qemu_opts_parse
from util.timer import QEMU_CLOCK_REALTIME, SCALE_MS, qemu_clock_get_ms, timer_del, timer_mod

DEADLINE_MS = 5000
BANNER = b"QEMU 7.2.22 monitor - type 'help' for more information\r\n"
PROMPT = b"(qemu) "
L, K = b"\x1b[D", b"\x1b[K"


def typed(text: bytes) -> bytes:
    """What QEMU echoes while ``text`` is typed at an empty prompt."""
    out = b""
    for i in range(1, len(text) + 1):
        out += L * (i - 1) + text[:i] + K
    return out


def line(text: bytes, output: bytes = b"") -> bytes:
    """Echo of ``text`` + Enter, the command's output, the next prompt."""
    return typed(text) + b"\r\n" + output + PROMPT


def pump_until(cond: Callable[[], bool], what: Callable[[], object] = lambda: "") -> None:
    """Run the main loop until ``cond()`` holds, failing at the deadline
    with ``what()`` in the message."""
    deadline = qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + DEADLINE_MS
    wakeup = aio_timer_new(
        qemu_get_aio_context(), QEMU_CLOCK_REALTIME, SCALE_MS, lambda _: None, None, "deadline"
    )
    timer_mod(wakeup, deadline)
    try:
        while not cond():
            assert qemu_clock_get_ms(QEMU_CLOCK_REALTIME) < deadline, what()
            main_loop_wait()
    finally:
        timer_del(wakeup)


def settle() -> None:
    """Run the main loop until it has nothing left to do."""
    deadline = time.monotonic() + DEADLINE_MS / 1000
    while main_loop_wait(nonblocking=True):
        assert time.monotonic() < deadline, "the main loop never went idle"


class HMPClient:
    """A client socket on the monitor's chardev, read while pumping the loop."""

    def __init__(self, path: str) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.setblocking(False)
        self.buf = bytearray()

    def _recv(self) -> None:
        while True:
            try:
                data = self.sock.recv(65536)
            except BlockingIOError:
                return
            if not data:
                return
            self.buf += data

    def pump_until(self, cond: Callable[[], bool]) -> None:
        """Run the main loop, reading output, until ``cond()`` holds."""

        def received() -> bool:
            self._recv()
            return cond()

        pump_until(received, lambda: bytes(self.buf))

    def read_until(self, end: bytes) -> bytes:
        """The output up to and including the next time it ends with ``end``."""
        self.pump_until(lambda: self.buf.endswith(end))
        return self.drain()

    def take(self, n: int) -> bytes:
        """The next ``n`` output bytes."""
        self.pump_until(lambda: len(self.buf) >= n)
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def expect(self, data: bytes) -> None:
        assert self.take(len(data)) == data

    def type(self, data: bytes, expected: bytes) -> None:
        self.sock.sendall(data)
        self.expect(expected)

    def drain(self) -> bytes:
        """Everything received so far."""
        out = bytes(self.buf)
        self.buf.clear()
        return out

    def settle(self) -> bytes:
        """Everything the monitor has to say now: the loop runs until idle."""
        settle()
        self._recv()
        return self.drain()

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sock_path() -> Iterator[str]:
    """A short path: sun_path holds 108 bytes, pytest's tmp_path may not fit."""
    tmpdir = tempfile.mkdtemp(prefix="hmp-", dir="/tmp")
    yield f"{tmpdir}/h.sock"
    shutil.rmtree(tmpdir)


@pytest.fixture
def hmp_env(main_loop: MainLoop) -> Iterator[MonitorGlobals]:
    try:
        with hmp_globals() as g:
            yield g
    finally:
        qemu_chr_cleanup()


@pytest.fixture
def mon(hmp_env: MonitorGlobals, sock_path: str) -> MonitorHMP:
    """``-monitor unix:PATH,server=on,wait=off``."""
    chr = qemu_chr_new("compat_monitor0", f"unix:{sock_path},server=on,wait=off")
    assert chr is not None
    return monitor_init_hmp(chr, True)


@pytest.fixture
def client(mon: MonitorHMP, sock_path: str) -> Iterator[HMPClient]:
    c = HMPClient(sock_path)
    c.expect(BANNER + PROMPT)
    yield c
    c.close()


def test_banner_prompt_and_commands(client: HMPClient) -> None:
    client.type(b"info status\r", line(b"info status", b"VM status: running\r\n"))
    client.type(b"stop\r", line(b"stop"))
    client.type(b"info status\r", line(b"info status", b"VM status: paused\r\n"))
    client.type(b"c\r", line(b"c"))
    client.type(b"foo\r", line(b"foo", b"unknown command: 'foo'\r\n"))
    client.type(b"\r", b"\r\n" + PROMPT)
    client.type(b"help stop\r", line(b"help stop", b"stop|s  -- stop emulation\r\n"))
    assert client.settle() == b""


def test_info_chardev(client: HMPClient, sock_path: str) -> None:
    """``label: filename=...``; a connected UNIX server shows its path."""
    client.type(
        b"info chardev\r",
        line(b"info chardev", f"compat_monitor0: filename=unix:{sock_path},server=on\r\n".encode()),
    )


def test_lines_in_one_chunk_wait_for_the_prompt(client: HMPClient) -> None:
    """QEMU reads a byte at a time and stops while a command runs, so each
    line's echo comes after the previous command's output and prompt."""
    client.sock.sendall(b"stop\rinfo status\rcont\rinfo status\r")
    client.expect(
        line(b"stop")
        + line(b"info status", b"VM status: paused\r\n")
        + line(b"cont")
        + line(b"info status", b"VM status: running\r\n")
    )
    assert client.settle() == b""


def test_editing_and_history(client: HMPClient) -> None:
    client.type(b"abc\x7f\x7fd\r", _abc_bs_d())
    client.type(b"\x1b[A", b"ad" + K)
    client.type(b"\x1b[B", L * 2 + K)
    client.type(b"\x1b[A\x01x\r", b"ad" + K + L * 2 + b"xad" + K + L * 2 + b"\r\n"
                + b"unknown command: 'xad'\r\n" + PROMPT)  # fmt: skip
    client.type(
        b"info history\r",
        line(b"info history", b"0: 'ad'\r\n1: 'xad'\r\n2: 'info history'\r\n"),
    )


def _abc_bs_d() -> bytes:
    """QEMU 7.2.22 for ``abc<DEL><DEL>d<CR>``."""
    return (
        b"a" + K + L + b"ab" + K + L * 2 + b"abc" + K + L * 3 + b"ab" + K + L * 2 + b"a" + K + L
        + b"ad" + K + b"\r\nunknown command: 'ad'\r\n" + PROMPT
    )  # fmt: skip


def test_non_ascii_is_echoed_byte_by_byte(client: HMPClient) -> None:
    """QEMU 7.2.22 redraws after each byte of a UTF-8 character."""
    client.sock.sendall("é\r".encode())
    assert client.settle() == (
        b"\xc3" + K + L + b"\xc3\xa9" + K + b"\r\nunknown command: '\xc3\xa9'\r\n" + PROMPT
    )


def test_tab_completes_a_unique_command(client: HMPClient) -> None:
    client.type(b"info ver\t\r", typed(b"info ver") + L * 8 + b"info version " + K + b"\r\n"
                + f"7.2.22{QEMU_PKGVERSION}\r\n".encode() + PROMPT)  # fmt: skip


def test_reconnect_gets_a_new_banner_and_a_fresh_line(
    client: HMPClient, sock_path: str, hmp_env: MonitorGlobals
) -> None:
    """A half-typed line is dropped; history survives (as in QEMU)."""
    client.type(b"stop\rab", line(b"stop") + typed(b"ab"))
    client.close()
    pump_until(lambda: hmp_env.mon_refcount == 0)
    again = HMPClient(sock_path)
    again.expect(BANNER + PROMPT)
    again.type(b"\x1b[A", b"stop" + K)
    again.close()


def test_quit_suspends_the_monitor_for_good(client: HMPClient, mon: MonitorHMP) -> None:
    """No prompt after quit: QEMU exits; here the request waits for the main loop."""
    client.type(b"quit\rinfo status\r", typed(b"quit") + b"\r\n")
    assert client.settle() == b""
    assert runstate().shutdown_requested is ShutdownCause.HOST_QMP_QUIT
    assert qatomic_read(mon.suspend_cnt) == 1
    assert runstate().state is RunState.RUNNING


def test_two_monitors_on_a_mux(hmp_env: MonitorGlobals, sock_path: str) -> None:
    """``-chardev socket,id=c,...,mux=on -mon chardev=c -mon chardev=c``
    (QEMU 7.2.22's bytes): the monitor out of focus keeps its banners until
    C-a c gives it the focus; the one losing it ends the line; a half-typed
    line is dropped."""
    suspend_mux_open()
    spec = f"socket,id=c,path={sock_path},server=on,wait=off,mux=on"
    chr = qemu_chr_new_from_opts(qemu_opts_parse(qemu_chardev_opts(), spec, True))
    assert chr is not None
    monitor_init_hmp(chr, True)
    monitor_init_hmp(chr, True)
    resume_mux_open()
    c = HMPClient(sock_path)
    c.expect(BANNER + PROMPT)
    c.type(b"info status\r", line(b"info status", b"VM status: running\r\n"))
    c.type(b"\x01c", b"\r\n" + BANNER + BANNER + PROMPT)
    c.type(b"ab", typed(b"ab"))
    c.type(b"\x01c", b"\r\n" + PROMPT)
    c.type(b"stop\r", line(b"stop"))
    c.type(b"xy\x01c", typed(b"xy") + b"\r\n" + PROMPT)
    c.type(b"info status\r", line(b"info status", b"VM status: paused\r\n"))
    assert c.settle() == b""
    c.close()


# ---------------------------------------------------------------- in-memory pair


def pair_transcript(lockstep: bool, chunks: list[bytes]) -> bytes:
    chr, peer = qemu_chr_new_pair(f"pair{int(lockstep)}", lockstep=lockstep)
    monitor_init_hmp(chr, True)
    out = bytearray()
    for chunk in chunks:
        peer.send(chunk)
        settle()
        out += peer.recv()
    return bytes(out)


def test_chunked_input_reads_like_qemus_byte_at_a_time(hmp_env: MonitorGlobals) -> None:
    """Chunks give the same bytes as one-byte reads (the pair's lockstep
    mode is QEMU's input path): a line is taken only after the previous
    command's prompt."""
    chunks = [
        b"info status\rstop\rinfo status\r",
        b"ab\x7fc\x1b[D\x1b[Dx\x01\x05\x17cont\rfoo bar\x17\r",
        b"\x1b[A\x1b[A\x1b[B\rhelp stop\r\r  \r",
        b"info ver\t\rinfo history\rq",
    ]
    chunked = pair_transcript(False, chunks)
    assert chunked == pair_transcript(True, chunks)
    assert chunked.startswith(BANNER + PROMPT + line(b"info status", b"VM status: running\r\n"))
    assert chunked.endswith(PROMPT + typed(b"q"))


def test_info_monitors(hmp_env: MonitorGlobals) -> None:
    """Emulator addition: one line per monitor in mon_list."""
    chr, peer = qemu_chr_new_pair("hmp-chr")
    monitor_init_hmp(chr, True, mon_id="hmp0")
    peer.send(b"info monitors\r")
    settle()
    assert peer.recv().endswith(b"\r\nhmp0: mode=readline chardev=hmp-chr dynamic=off\r\n" + PROMPT)


def test_without_readline_a_command_is_nul_terminated(hmp_env: MonitorGlobals) -> None:
    """QEMU's non-interactive HMP (gdbstub's monitor): whole commands ending
    in NUL, no echo, no prompt."""
    chr, peer = qemu_chr_new_pair("raw")
    monitor_init_hmp(chr, False)
    assert peer.recv() == BANNER
    peer.send(b"info status\0")
    settle()
    assert peer.recv() == b"VM status: running\r\n"
    peer.send(b"info status")
    settle()
    assert peer.recv() == b"corrupted command\r\n"
