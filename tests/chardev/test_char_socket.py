"""The socket chardev on real UNIX and TCP sockets: one client at a time,
hang-ups, partial writes, reconnection, fd passing, wait=on, filenames."""

from __future__ import annotations

import array
import errno
import os
import socket
import stat

import pytest

from chardev.char import (
    CHR_EVENT_BREAK,
    CHR_EVENT_CLOSED,
    CHR_EVENT_OPENED,
    QEMU_CHAR_FEATURE_FD_PASS,
    QEMU_CHAR_FEATURE_GCONTEXT,
    QEMU_CHAR_FEATURE_RECONNECTABLE,
    qemu_chardev_new,
    qemu_chr_find,
)
from chardev.char_fe import (
    G_IO_HUP,
    G_IO_OUT,
    qemu_chr_fe_accept_input,
    qemu_chr_fe_add_watch,
    qemu_chr_fe_disconnect,
    qemu_chr_fe_get_msgfd,
    qemu_chr_fe_get_msgfds,
    qemu_chr_fe_init,
    qemu_chr_fe_set_handlers,
    qemu_chr_fe_write,
)
from chardev.char_opts import qemu_chardev_opts, qemu_chr_new_from_opts
from chardev.char_qmp import qmp_chardev_add, qmp_chardev_remove, qmp_query_chardev
from chardev.char_socket import TELNET_INIT, TN3270_INIT, SocketChardev
from tests.chardev.conftest import Frontend, in_thread, run_iterations, run_until
from util.iothread import iothread_get_aio_context
from util.qemu_option import qemu_opts_parse
from util.thread import QemuEvent
from util.timer import QEMU_CLOCK_VIRTUAL, qemu_clock_step
from util.yank import chardev_yank_instance, yank_instances, yank_run


def unix_server(label: str, path: str, **extra) -> SocketChardev:
    data = {"addr": {"type": "unix", "data": {"path": path}}, "server": True, "wait": False}
    qmp_chardev_add(label, {"type": "socket", "data": {**data, **extra}})
    chr = qemu_chr_find(label)
    assert isinstance(chr, SocketChardev)
    return chr


def tcp_server(label: str, **extra) -> SocketChardev:
    addr = {"type": "inet", "data": {"host": "127.0.0.1", "port": "0"}}
    data = {"addr": addr, "server": True, "wait": False, **extra}
    qmp_chardev_add(label, {"type": "socket", "data": data})
    chr = qemu_chr_find(label)
    assert isinstance(chr, SocketChardev)
    return chr


def unix_client(path: str) -> socket.socket:
    c = socket.socket(socket.AF_UNIX)
    c.connect(path)
    return c


def filename(label: str) -> str:
    return next(c["filename"] for c in qmp_query_chardev() if c["label"] == label)


def recv_exactly(sock: socket.socket, size: int) -> bytes:
    sock.settimeout(10)
    out = bytearray()
    while len(out) < size:
        chunk = sock.recv(size - len(out))
        assert chunk, "peer closed"
        out += chunk
    return bytes(out)


def test_unix_server_serves_one_client_at_a_time(chr_state, tmp_path):
    path = str(tmp_path / "s.sock")
    chr = unix_server("s", path)
    fe = Frontend().attach(chr)
    assert filename("s") == f"disconnected:unix:{path},server=on"
    first = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    assert filename("s") == f"unix:{path},server=on"
    second = unix_client(path)  # completes in the kernel's backlog
    second.send(b"early")
    run_iterations(5)
    assert fe.events == [CHR_EVENT_OPENED] and fe.data == b""
    assert qemu_chr_fe_write(fe.be, b"to the first") == 12
    assert recv_exactly(first, 12) == b"to the first"
    first.close()
    run_until(lambda: fe.events.count(CHR_EVENT_OPENED) == 2)
    assert fe.events == [CHR_EVENT_OPENED, CHR_EVENT_CLOSED, CHR_EVENT_OPENED]
    run_until(lambda: fe.data == b"early")
    qemu_chr_fe_write(fe.be, b"to the second")
    assert recv_exactly(second, 13) == b"to the second"
    second.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()


def test_socket_file_follows_the_umask_and_goes_with_the_chardev(chr_state, tmp_path):
    path = str(tmp_path / "m.sock")
    old = os.umask(0o022)
    try:
        unix_server("m", path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o755  # QEMU 7.2 does not chmod
    qmp_chardev_remove("m")
    assert not os.path.exists(path)


def test_writes_while_disconnected_are_dropped(chr_state, tmp_path):
    path = str(tmp_path / "d.sock")
    fe = Frontend().attach(unix_server("d", path))
    assert qemu_chr_fe_write(fe.be, b"nobody listens") == -errno.EIO
    assert qemu_chr_fe_add_watch(fe.be, G_IO_OUT, lambda o: False, None) == 0
    client = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    qemu_chr_fe_write(fe.be, b"now")
    assert recv_exactly(client, 3) == b"now"
    client.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()


def test_partial_write_and_watch_keep_the_order(chr_state, tmp_path):
    """A small send buffer and a reader that drains later."""
    path = str(tmp_path / "w.sock")
    chr = unix_server("w", path)
    fe = Frontend().attach(chr)
    client = unix_client(path)
    run_until(lambda: chr.conn is not None)
    chr.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    payload = bytes(i % 251 for i in range(1 << 20))
    pending = bytearray(payload)
    del pending[: qemu_chr_fe_write(fe.be, bytes(pending))]
    assert 0 < len(pending) < len(payload)
    watch = {"fired": 0}

    def unblocked(opaque):
        watch["fired"] += 1
        del pending[: max(qemu_chr_fe_write(fe.be, bytes(pending)), 0)]
        if pending:
            qemu_chr_fe_add_watch(fe.be, G_IO_OUT | G_IO_HUP, unblocked, None)
        return False

    assert qemu_chr_fe_add_watch(fe.be, G_IO_OUT | G_IO_HUP, unblocked, None) > 0
    run_iterations(5)
    assert watch["fired"] == 0  # the buffers are full until the client reads
    received = bytearray()
    client.setblocking(False)

    def drained() -> bool:
        try:
            received.extend(client.recv(1 << 16))
        except BlockingIOError:
            pass
        return len(received) == len(payload)

    run_until(drained)
    assert received == payload and watch["fired"] > 0
    client.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()


def test_disconnect_mid_write_while_not_reading(chr_state, tmp_path):
    """The failed write tears down at once; CLOSED comes from the loop, not the write."""
    path = str(tmp_path / "x.sock")
    chr = unix_server("x", path)
    fe = Frontend(want=0).attach(chr)
    client = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    chr.conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    n = qemu_chr_fe_write(fe.be, bytes(1 << 20))
    fired = []
    qemu_chr_fe_add_watch(fe.be, G_IO_OUT | G_IO_HUP, lambda o: fired.append(o) or False, 1)
    assert 0 < n < 1 << 20
    client.close()
    # the HUP is noticed in the loop; a write in the same pass fails instead
    assert qemu_chr_fe_write(fe.be, bytes(1 << 20)) < 0
    assert fe.events == [CHR_EVENT_OPENED]
    assert filename("x").startswith("disconnected:")
    run_until(lambda: fe.events == [CHR_EVENT_OPENED, CHR_EVENT_CLOSED])
    run_until(lambda: fired == [1])
    fe.detach()


def test_hangup_of_a_unix_client_is_seen_even_when_not_reading(chr_state, tmp_path):
    path = str(tmp_path / "h.sock")
    fe = Frontend(want=0).attach(unix_server("h", path))
    client = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    client.send(b"unread")
    client.close()
    run_until(lambda: CHR_EVENT_CLOSED in fe.events)
    assert fe.data == b""
    fe.detach()


def test_tcp_eof_waits_for_the_reader_and_comes_after_the_data(chr_state):
    chr = tcp_server("t", nodelay=True)
    fe = Frontend(want=0).attach(chr)
    port = int(chr.addr["port"])
    assert filename("t") == f"disconnected:tcp:127.0.0.1:{port},server=on"
    client = socket.create_connection(("127.0.0.1", port))
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    cport = client.getsockname()[1]
    assert filename("t") == f"tcp:127.0.0.1:{port},server=on <-> 127.0.0.1:{cport}"
    assert chr.conn.sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
    client.sendall(b"data then FIN")
    client.close()
    run_iterations(5)
    assert fe.events == [CHR_EVENT_OPENED]  # no POLLHUP for a half-closed TCP socket
    fe.want = 1
    qemu_chr_fe_accept_input(fe.be)
    run_until(lambda: CHR_EVENT_CLOSED in fe.events)
    assert fe.data == b"data then FIN"
    fe.detach()


def test_tcp_and_unix_clients_and_their_filenames(chr_state, tmp_path):
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    backend = {"addr": {"type": "inet", "data": {"host": "127.0.0.1", "port": str(port)}}}
    qmp_chardev_add("tc", {"type": "socket", "data": {**backend, "server": False}})
    peer, _ = listener.accept()
    local = peer.getpeername()[1]
    assert filename("tc") == f"tcp:127.0.0.1:{local} <-> 127.0.0.1:{port}"
    path = str(tmp_path / "u.sock")
    ulistener = socket.socket(socket.AF_UNIX)
    ulistener.bind(path)
    ulistener.listen(1)
    backend = {"addr": {"type": "unix", "data": {"path": path}}, "server": False}
    qmp_chardev_add("uc", {"type": "socket", "data": backend})
    assert filename("uc") == "unix:"  # QEMU 7.2 prints the client's (unnamed) local address
    for s in (peer, listener, ulistener):
        s.close()


def test_reconnecting_client(chr_state, tmp_path, virtual_clock, capfd):
    chr_state.timer_clock = QEMU_CLOCK_VIRTUAL
    path = str(tmp_path / "r.sock")
    backend = {"addr": {"type": "unix", "data": {"path": path}}, "server": False, "reconnect": 2}
    assert qmp_chardev_add("r", {"type": "socket", "data": backend}) == {}
    fe = Frontend().attach(qemu_chr_find("r"))
    run_until(lambda: "Unable to connect" in capfd.readouterr().err)
    assert filename("r") == f"disconnected:unix:{path}"
    qemu_clock_step(2_000_000_000)  # fails again, silently
    run_iterations(5)
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(path)
    listener.listen(1)
    qemu_clock_step(1_000_000_000)
    run_iterations(3)
    assert fe.events == []  # not yet: 2 s between attempts
    qemu_clock_step(1_000_000_000)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    server, _ = listener.accept()
    server.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    qemu_clock_step(2_000_000_000)
    run_until(lambda: fe.events.count(CHR_EVENT_OPENED) == 2)
    assert capfd.readouterr().err.count("Unable to connect character device r") == 0
    listener.close()
    fe.detach()


def test_scm_rights_keep_the_latest(chr_state, tmp_path):
    path = str(tmp_path / "f.sock")
    fe = Frontend().attach(unix_server("f", path))
    client = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    first, second = os.pipe(), os.pipe()

    def sendfds(data: bytes, fds: list[int]) -> None:
        client.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])

    try:
        sendfds(b"1", [first[0]])
        sendfds(b"2", [second[0], second[1]])
        run_until(lambda: fe.data == b"12")
        got = qemu_chr_fe_get_msgfds(fe.be, 1)
        assert [os.fstat(fd).st_ino for fd in got] == [os.fstat(second[0]).st_ino]
        os.write(second[1], b"through the passed fd")
        assert os.read(got[0], 64) == b"through the passed fd"
        os.close(got[0])
        assert qemu_chr_fe_get_msgfd(fe.be) == -1
    finally:
        for fd in (*first, *second):
            os.close(fd)
    client.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()


def test_wait_on_accepts_before_creation_returns(chr_state, tmp_path, monkeypatch):
    path = str(tmp_path / "wait.sock")
    waiting = []
    clients = []

    def info(msg: str) -> None:
        waiting.append(msg)
        clients.append(unix_client(path))  # the listener is up: this lands in the backlog

    monkeypatch.setattr("chardev.char_socket.chr_info_report", info)
    opts = qemu_opts_parse(qemu_chardev_opts(), f"socket,id=w,path={path},server=on", True)
    chr = qemu_chr_new_from_opts(opts)
    assert waiting == [f"QEMU waiting for connection on: disconnected:unix:{path},server=on"]
    assert chr.be_open and filename("w") == f"unix:{path},server=on"
    fe = Frontend().attach(chr)
    assert fe.events == [CHR_EVENT_OPENED]
    fe.detach()
    clients[0].close()


def test_handlers_in_an_iothread_see_the_connection(iothread, tmp_path):
    path = str(tmp_path / "io.sock")
    chr = unix_server("io", path)
    fe = Frontend()
    opened = QemuEvent()

    def event(opaque, ev):
        fe.event(opaque, ev)
        opened.set()

    def setup():
        qemu_chr_fe_init(fe.be, chr)
        ctx = iothread_get_aio_context(iothread)
        qemu_chr_fe_set_handlers(fe.be, fe.can_read, fe.read, event, None, fe, ctx, True)

    in_thread(iothread, setup)
    client = unix_client(path)
    assert opened.wait(10)
    assert fe.events == [CHR_EVENT_OPENED]
    assert fe.threads == {"IO chr_test"}
    client.close()
    in_thread(iothread, fe.detach)


def test_yank_cuts_the_connection(chr_state, tmp_path):
    path = str(tmp_path / "y.sock")
    fe = Frontend().attach(unix_server("y", path))
    assert chardev_yank_instance("y") in yank_instances()
    client = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    yank_run([chardev_yank_instance("y")])
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    client.close()
    fe.detach()
    qmp_chardev_remove("y")
    assert chardev_yank_instance("y") not in yank_instances()


def test_abstract_unix_socket(chr_state):
    name = f"qemu-emu-test-{os.getpid()}"
    addr = {"type": "unix", "data": {"path": name, "abstract": True}}
    qmp_chardev_add("ab", {"type": "socket", "data": {"addr": addr, "wait": False}})
    assert filename("ab") == f"disconnected:unix:{name},abstract=on,tight=on,server=on"
    c = socket.socket(socket.AF_UNIX)
    c.connect("\0" + name)
    run_until(lambda: qemu_chr_find("ab").be_open)
    assert filename("ab") == "unix:,server=on"  # sun_path of an abstract name starts with NUL
    c.close()


@pytest.mark.parametrize("server", [True, False])
def test_unix_socket_chardev_features(chr_state, tmp_path, server):
    path = str(tmp_path / "feat.sock")
    listener = None
    if not server:
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
    data = {"addr": {"type": "unix", "data": {"path": path}}, "server": server}
    chr = qemu_chardev_new("c", SocketChardev, {"type": "socket", "data": data}, None)
    assert chr.features == {
        QEMU_CHAR_FEATURE_FD_PASS,
        QEMU_CHAR_FEATURE_GCONTEXT,
        QEMU_CHAR_FEATURE_RECONNECTABLE,
    }
    if listener is not None:
        listener.close()


def test_disconnect_from_the_frontend_lets_the_next_client_in(chr_state, tmp_path):
    path = str(tmp_path / "k.sock")
    fe = Frontend().attach(unix_server("k", path))
    first = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    second = unix_client(path)
    qemu_chr_fe_disconnect(fe.be)
    assert fe.events == [CHR_EVENT_OPENED, CHR_EVENT_CLOSED]
    first.settimeout(10)
    assert first.recv(1) == b""
    run_until(lambda: fe.events.count(CHR_EVENT_OPENED) == 2)
    second.close()
    first.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()


def test_telnet_server_negotiates_and_strips_commands(chr_state):
    opts = qemu_opts_parse(
        qemu_chardev_opts(), "socket,id=tn,host=127.0.0.1,port=0,telnet=on,server=on,wait=off", True
    )
    chr = qemu_chr_new_from_opts(opts)
    port = chr.addr["port"]
    assert filename("tn") == f"disconnected:telnet:127.0.0.1:{port},server=on"
    fe = Frontend().attach(chr)
    client = socket.create_connection(("127.0.0.1", int(port)))
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    assert recv_exactly(client, len(TELNET_INIT)) == TELNET_INIT  # before anything else
    cport = client.getsockname()[1]
    assert filename("tn") == f"telnet:127.0.0.1:{port},server=on <-> 127.0.0.1:{cport}"
    client.sendall(b"ab\xff\xff\xff\xfb\x01cd\xff\xf3ef")
    run_until(lambda: fe.data == b"ab\xffcdef")
    assert fe.events == [CHR_EVENT_OPENED, CHR_EVENT_BREAK]
    assert fe.chunks == [b"ab\xffcd", b"ef"]  # the break sits between the two
    client.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()


def test_tn3270_keeps_record_markers(chr_state, tmp_path):
    path = str(tmp_path / "tn3270.sock")
    chr = unix_server("t3", path, tn3270=True)
    fe = Frontend().attach(chr)
    client = unix_client(path)
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    assert recv_exactly(client, len(TN3270_INIT)) == TN3270_INIT
    client.sendall(b"rec\xff\xefnext\xff\xf1!")
    run_until(lambda: fe.data == b"rec\xff\xefnext!")
    client.close()
    run_until(lambda: fe.events[-1] == CHR_EVENT_CLOSED)
    fe.detach()
