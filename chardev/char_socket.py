"""The socket backend (chardev/char-socket.c): a UNIX or TCP stream socket,
as a server that serves one client at a time or as a client that may
reconnect.

State machine (``state``): DISCONNECTED -> CONNECTING -> CONNECTED ->
DISCONNECTED.  A server listens while DISCONNECTED and stops accepting while
a client is connected, so the next client waits in the kernel's backlog
until the current one leaves.  CHR_EVENT_OPENED is raised when a client is
set up, CHR_EVENT_CLOSED only for a connection that got OPENED.

Threads:

* the accept, read, hang-up, connect and reconnect callbacks run in the
  chardev's context; so does closing a connection;
* writes come from any thread and hold ``chr_write_lock``, which also
  protects ``state``, ``sock`` and the received fds.  A write that fails
  while the frontend is not reading tears the connection down under the
  lock, as QEMU does, but CLOSED is delivered from a bottom half in the
  chardev's context after the lock is released: a frontend's event handler
  takes its own locks, which rank before chr_write_lock.

Hang-up: a hung-up UNIX socket (POLLHUP) is noticed even while the frontend
takes no input, and then the unread input is dropped, as QEMU's HUP source
(lower priority than the read source) does; while the frontend reads, data
before the hang-up is always delivered first.  SCM_RIGHTS (UNIX only): each
message that brings fds replaces (and closes) those kept from before.
"""

from __future__ import annotations

import enum
import errno
import socket
from typing import Any, Optional

from chardev.channel_socket import qio_channel_shutdown, qio_channel_socket_readv
from chardev.char import (
    CHR_EVENT_BREAK,
    CHR_EVENT_CLOSED,
    CHR_EVENT_OPENED,
    QEMU_CHAR_FEATURE_FD_PASS,
    QEMU_CHAR_FEATURE_RECONNECTABLE,
    Chardev,
    chr_info_report,
    qemu_chr_be_can_write,
    qemu_chr_be_event,
    qemu_chr_be_write,
    qemu_chr_set_feature,
    qemu_chr_state,
    type_register,
)
from chardev.char_io import CHR_READ_BUF_LEN, G_IO_OUT, WatchFunc, io_channel_send
from chardev.char_socket_opts import qemu_chr_parse_socket, qmp_chardev_validate_socket
from chardev.net_listener import QIONetListener
from chardev.sockets import (
    SockAddr,
    SocketAddress,
    socket_address_flatten,
    socket_connect,
    socket_connect_error,
    socket_connect_targets,
)
from qapi.error import QapiError, error_setg
from util.error_report import error_report
from util.osdep import POLLOUT, FdHangupNotifier, qemu_close_fds, qemu_poll_fd
from util.qemu_option import (
    QemuOpts,
)
from util.trace import trace_event
from util.yank import (
    chardev_yank_instance,
    yank_register_function,
    yank_register_instance,
    yank_unregister_function,
    yank_unregister_instance,
)

trace_chr_socket_poll_err = trace_event("chr_socket_poll_err", "label")
trace_chr_socket_recv_err = trace_event("chr_socket_recv_err", "label", "err")
trace_chr_socket_recv_eof = trace_event("chr_socket_recv_eof", "label")
trace_chr_socket_disconnect = trace_event("chr_socket_disconnect", "label")
trace_chr_socket_hangup = trace_event("chr_socket_hangup", "label")

# telnet (RFC 854) commands
IAC = 0xFF
IAC_BREAK = 0xF3
#: WILL ECHO, WILL SUPPRESS-GO-AHEAD, WILL BINARY, DO BINARY
TELNET_INIT = bytes.fromhex("fffb01 fffb03 fffb00 fffd00")
#: DO EOR, WILL EOR, DO BINARY, WILL BINARY, DO TERMINAL-TYPE, SB TERMINAL-TYPE SEND SE
TN3270_INIT = bytes.fromhex("fffd19 fffb19 fffd00 fffb00 fffd18 fffa18 01fff0")
#: tn3270 commands passed on as data (EOR, SB, SE) and ignored (IP, NOP)
TN3270_KEEP = (0xEF, 0xFA, 0xF0)
TN3270_SKIP = (0xF4, 0xF1)


class TCPChardevState(enum.Enum):
    TCP_CHARDEV_STATE_DISCONNECTED = "disconnected"
    TCP_CHARDEV_STATE_CONNECTING = "connecting"
    TCP_CHARDEV_STATE_CONNECTED = "connected"


DISCONNECTED = TCPChardevState.TCP_CHARDEV_STATE_DISCONNECTED
CONNECTING = TCPChardevState.TCP_CHARDEV_STATE_CONNECTING
CONNECTED = TCPChardevState.TCP_CHARDEV_STATE_CONNECTED


# Plain classes rather than dataclasses: importing ``dataclasses`` (and with
# it ``inspect``) and compiling the generated methods costs start-up time.


class _Conn:
    """One accepted or connected client socket."""

    __slots__ = ("fd", "opened", "sock")

    sock: socket.socket
    fd: int
    #: whether it reached CONNECTED (CLOSED is raised only then)
    opened: bool

    def __init__(self, sock: socket.socket, fd: int, opened: bool = False) -> None:
        self.sock = sock
        self.fd = fd
        self.opened = opened


class _Connecting:
    """A non-blocking connect in progress (QEMU runs it in a thread)."""

    __slots__ = ("error", "result", "sock", "targets")

    targets: list[tuple[int, SockAddr]]
    sock: Optional[socket.socket]
    result: Optional[socket.socket]
    error: Optional[str]

    def __init__(
        self,
        targets: list[tuple[int, SockAddr]],
        sock: Optional[socket.socket] = None,
        result: Optional[socket.socket] = None,
        error: Optional[str] = None,
    ) -> None:
        self.targets = targets
        self.sock = sock
        self.result = result
        self.error = error


@type_register
class SocketChardev(Chardev):
    typename = "chardev-socket"
    kind = "socket"
    abstract = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: protected by chr_write_lock
        self.state = DISCONNECTED
        self.conn: Optional[_Conn] = None
        self.read_msgfds: list[int] = []
        #: protected by chr_write_lock: connections torn down, to close in the context
        self.closing: list[_Conn] = []
        # the rest is used in the chardev's context (or at creation)
        self.addr: SocketAddress = {}
        self.is_listen = False
        self.is_telnet = False
        self.is_tn3270 = False
        #: telnet input state: 0 off, 1 data, 2 after IAC, 3 in an option
        self.do_telnetopt = 0
        self.telnet_init = bytearray()
        self.do_nodelay = False
        self.reconnect_time_ms = 0
        self.listener: Optional[QIONetListener] = None
        self.connecting: Optional[_Connecting] = None
        self.connect_err_reported = False
        self.registered_yank = False
        #: the frontend's can_read at the last read poll (tcp_chr_read_poll)
        self.max_size = 0
        self.reading = False
        #: the hup_source of every connection: created at the first one
        self.hup: Optional[FdHangupNotifier] = None
        self.sources.add_bh("tcp_chr_disconnect_bh", self._disconnect_bh)
        self.sources.add_bh("tcp_chr_connect_done_bh", self._connect_done_bh)
        self.sources.add_timer(
            "chardev-socket-reconnect", qemu_chr_state().timer_clock, self._reconnect_timeout
        )

    # ------------------------------------------------------------ options

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        qemu_chr_parse_socket(opts, data)

    def open(self, data: dict[str, Any]) -> bool:
        """qmp_chardev_open_socket: validate, listen or connect; never open yet."""
        self.is_listen = data.get("server", True)
        self.do_nodelay = data.get("nodelay", False)
        self.is_telnet = data.get("telnet", False)
        self.is_tn3270 = data.get("tn3270", False)
        if self.is_listen and (self.is_telnet or self.is_tn3270):
            self.do_telnetopt = 1
        if data.get("tls-creds") is not None:
            raise error_setg("No TLS credentials with id '%s'", data["tls-creds"])
        self.addr = socket_address_flatten(data["addr"])
        qmp_chardev_validate_socket(data, self.is_listen)
        qemu_chr_set_feature(self, QEMU_CHAR_FEATURE_RECONNECTABLE)
        if self.addr["type"] == "unix":
            qemu_chr_set_feature(self, QEMU_CHAR_FEATURE_FD_PASS)
        if not yank_register_instance(chardev_yank_instance(self.label)):
            raise error_setg("duplicate yank instance")
        self.registered_yank = True
        self._update_disconnected_filename()
        if self.is_listen:
            self._open_server(data.get("wait", False))
        elif data.get("reconnect", 0) > 0:
            self.reconnect_time_ms = data["reconnect"] * 1000
            self._connect_client_async()
        else:
            self._connect_client_sync()
        return False

    # ------------------------------------------------------------ filenames

    def _address(self, prefix: str) -> str:
        """qemu_chr_socket_address: the address with an optional prefix."""
        server = ",server=on" if self.is_listen else ""
        a = self.addr
        if a["type"] == "inet":
            return f"{prefix}{self._protocol()}:{a['host']}:{a['port']}{server}"
        extra = ""
        if a.get("abstract"):
            extra = ",abstract=on" + (",tight=on" if a.get("tight") else "")
        return f"{prefix}unix:{a['path']}{extra}{server}"

    def _protocol(self) -> str:
        return "telnet" if self.is_telnet else "tcp"

    def _update_disconnected_filename(self) -> None:
        self.filename = self._address("disconnected:")

    def _compute_filename(self, sock: socket.socket) -> str:
        """QEMU 7.2's qemu_chr_compute_filename (UNIX: the *local* path)."""
        server = ",server=on" if self.is_listen else ""
        local = sock.getsockname()
        family = sock.family
        if family == socket.AF_UNIX:
            path = local if isinstance(local, str) and not local.startswith("\0") else ""
            return f"unix:{path}{server}"
        peer = sock.getpeername()
        left, right = ("[", "]") if family == socket.AF_INET6 else ("", "")
        here = f"{left}{local[0]}{right}:{local[1]}"
        there = f"{left}{peer[0]}{right}:{peer[1]}"
        return f"{self._protocol()}:{here}{server} <-> {there}"

    # ------------------------------------------------------------ server

    def _open_server(self, wait: bool) -> None:
        self.listener = QIONetListener(self.sources)
        self.listener.open_sync(self.addr, 1)
        self.addr = self.listener.local_address(self.addr)
        self._update_disconnected_filename()
        if wait:
            self._accept_server_sync()
        else:
            self._listen(True)

    def _listen(self, on: bool) -> None:
        """Accept clients, or leave them in the backlog (one at a time)."""
        if self.listener is not None:
            self.listener.set_client_func(self._tcp_chr_accept if on else None)

    def _accept_server_sync(self) -> None:
        """wait=on: block the calling thread until the first client comes."""
        assert self.listener is not None
        chr_info_report(f"QEMU waiting for connection on: {self.filename}")
        with self.chr_write_lock:
            self.state = CONNECTING
        self._new_client(self.listener.wait_client())

    def _tcp_chr_accept(self, sock: socket.socket) -> None:
        """A client came to one of the listening sockets (context thread)."""
        with self.chr_write_lock:
            self.state = CONNECTING
        self._new_client(sock)

    # ------------------------------------------------------------ client

    def _connect_client_sync(self) -> None:
        with self.chr_write_lock:
            self.state = CONNECTING
        try:
            sock = socket_connect(self.addr)
        except QapiError:
            with self.chr_write_lock:
                self.state = DISCONNECTED
            raise
        self._new_client(sock)

    def _connect_client_async(self) -> None:
        """Start connecting; the outcome arrives in the chardev's context."""
        with self.chr_write_lock:
            self.state = CONNECTING
        try:
            self.connecting = _Connecting(socket_connect_targets(self.addr))
        except QapiError as e:
            self.connecting = _Connecting([], error=e.desc)
        self._connect_next(OSError(errno.ECONNREFUSED, "no address"))

    def _connect_next(self, last: OSError) -> None:
        """Try the next address without blocking (context thread or creation)."""
        c = self.connecting
        assert c is not None
        while c.error is None and c.targets:
            family, sa = c.targets.pop(0)
            sock = socket.socket(family, socket.SOCK_STREAM)
            sock.setblocking(False)
            err = sock.connect_ex(sa)
            if err == 0:
                c.result = sock
                break
            if err == errno.EINPROGRESS:
                c.sock = sock
                self.sources.add_watch(sock.fileno(), G_IO_OUT, self._connect_ready, sock)
                return
            sock.close()
            last = OSError(err, "")
        if c.result is None and c.error is None:
            c.error = socket_connect_error(self.addr, last)
        self.sources.bh_schedule("tcp_chr_connect_done_bh")

    def _connect_ready(self, sock: socket.socket) -> bool:
        """A non-blocking connect finished (context thread)."""
        c = self.connecting
        self.sources.detach(sock.fileno())
        if c is None or c.sock is not sock:
            sock.close()
            return False
        c.sock = None
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err == 0:
            c.result = sock
            self.sources.bh_schedule("tcp_chr_connect_done_bh")
        else:
            sock.close()
            self._connect_next(OSError(err, ""))
        return False

    def _connect_done_bh(self) -> None:
        """qemu_chr_socket_connected: the async connect succeeded or failed."""
        c = self.connecting
        if c is None or self.finalized or (c.result is None and c.error is None):
            return
        self.connecting = None
        if c.result is None:
            with self.chr_write_lock:
                self.state = DISCONNECTED
            self._report_connect_error(c.error or "")
            return
        self.connect_err_reported = False
        self._new_client(c.result)

    def _report_connect_error(self, msg: str) -> None:
        """Report the first failure of a series, then retry later."""
        if not self.connect_err_reported:
            error_report(f"Unable to connect character device {self.label}: {msg}")
            self.connect_err_reported = True
        self.sources.timer_mod_ms("chardev-socket-reconnect", self.reconnect_time_ms)

    def _reconnect_timeout(self) -> None:
        if self.be_open or self.finalized:
            return
        self._connect_client_async()

    # ------------------------------------------------------------ connection

    def _new_client(self, sock: socket.socket) -> None:
        """tcp_chr_new_client: take ``sock`` as the connection and open."""
        if self.state != CONNECTING:
            sock.close()
            return
        sock.setblocking(False)
        if self.do_nodelay and sock.family != socket.AF_UNIX:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Conn(sock, sock.fileno())
        yank_register_function(chardev_yank_instance(self.label), qio_channel_shutdown, sock)
        self._listen(False)
        with self.chr_write_lock:
            self.conn = conn
        if self.do_telnetopt:
            self._telnet_init(conn)
        else:
            self._tcp_chr_connect(conn)

    def _tcp_chr_connect(self, conn: _Conn) -> None:
        """The client is set up: CONNECTED, read, and tell the frontend."""
        self.filename = self._compute_filename(conn.sock)
        with self.chr_write_lock:
            self.state = CONNECTED
            conn.opened = True
        if self.hup is None:
            self.hup = FdHangupNotifier()
            self.sources.set_reader(self.hup.fileno(), self._tcp_chr_hup)
        self.hup.watch(conn.fd)
        self.chr_read_poll_update()
        qemu_chr_be_event(self, CHR_EVENT_OPENED)

    # ------------------------------------------------------------ telnet

    def _telnet_init(self, conn: _Conn) -> None:
        """Negotiate binary, no-echo, character mode, then connect (tcp_chr_telnet_init)."""
        self.telnet_init = bytearray(TN3270_INIT if self.is_tn3270 else TELNET_INIT)
        self.sources.add_watch(conn.fd, G_IO_OUT, self._telnet_init_io, conn)

    def _telnet_init_io(self, conn: _Conn) -> bool:
        """Write what is left of the negotiation; the watch stays until done."""
        if self.conn is not conn:
            return False
        ret = io_channel_send(conn.sock, bytes(self.telnet_init))
        if ret < 0:
            self._tcp_chr_disconnect()
            return False
        del self.telnet_init[:ret]
        if self.telnet_init:
            return True
        self._tcp_chr_connect(conn)
        return False

    def _process_iac(self, data: bytes) -> list[Optional[bytes]]:
        """Strip telnet commands (tcp_chr_process_IAC_bytes).

        Returns the data in pieces, with None where an IAC BREAK was: the
        break is raised between the bytes before and after it.
        """
        out: list[Optional[bytes]] = []
        buf = bytearray()
        for byte in data:
            if self.do_telnetopt == 1:
                if byte == IAC:
                    self.do_telnetopt = 2
                else:
                    buf.append(byte)
                continue
            if byte == IAC and self.do_telnetopt == 2:
                buf.append(IAC)  # IAC IAC is a literal 0xff
                self.do_telnetopt = 1
                continue
            if self.do_telnetopt == 2 and byte == IAC_BREAK:
                out += [bytes(buf), None]
                buf.clear()
                self.do_telnetopt += 1
            elif self.do_telnetopt == 2 and self.is_tn3270 and byte in TN3270_KEEP:
                buf += bytes([IAC, byte])
                self.do_telnetopt += 1
            elif self.do_telnetopt == 2 and self.is_tn3270 and byte in TN3270_SKIP:
                self.do_telnetopt += 1
            self.do_telnetopt += 1
            if self.do_telnetopt >= 4:
                self.do_telnetopt = 1
        return [*out, bytes(buf)]

    def chr_update_read_handler(self) -> None:
        """The context changed: sources moved; re-evaluate input there."""
        self.sources.bh_schedule("chr_input")

    def chr_read_poll_update(self) -> None:
        """tcp_chr_read_poll + the read watch: read only while the frontend wants."""
        conn = self.conn
        if conn is None or self.state != CONNECTED:
            return
        self.max_size = 0 if self.pending else qemu_chr_be_can_write(self)
        self.reading = self.max_size > 0
        self.sources.set_reader(conn.fd, self._tcp_chr_read if self.reading else None)

    def _tcp_chr_read(self) -> None:
        """The connection is readable (context thread)."""
        conn = self.conn
        if conn is None or self.state != CONNECTED or self.max_size <= 0:
            return
        data = self._recv(conn, CHR_READ_BUF_LEN)
        if data is None:
            return
        if not data:
            self._tcp_chr_disconnect()
            return
        for piece in self._process_iac(data) if self.do_telnetopt else [data]:
            if piece is None:
                qemu_chr_be_event(self, CHR_EVENT_BREAK)
            elif piece:
                qemu_chr_be_write(self, piece)
        self.chr_read_poll_update()

    def _recv(self, conn: _Conn, size: int) -> Optional[bytes]:
        """A chunk; b"" at end of stream or on error; None if nothing yet.

        Each message that brings fds replaces (and closes) those kept before.
        """
        try:
            data, fds = qio_channel_socket_readv(
                conn.sock, size, QEMU_CHAR_FEATURE_FD_PASS in self.features
            )
        except (BlockingIOError, InterruptedError):
            return None
        except OSError as e:
            trace_chr_socket_recv_err(self.label, str(e))
            return b""
        if fds:
            with self.chr_write_lock:
                old, self.read_msgfds = self.read_msgfds, fds
            qemu_close_fds(old)
        if not data:
            trace_chr_socket_recv_eof(self.label)
        return data

    def get_msgfds(self, num: int) -> Optional[list[int]]:
        """tcp_get_msgfds: take up to ``num`` fds, close the others."""
        with self.chr_write_lock:
            fds, self.read_msgfds = self.read_msgfds, []
        qemu_close_fds(fds[num:])
        return fds[:num]

    def _tcp_chr_hup(self) -> None:
        """The connection hung up; while reading, the read path sees it first."""
        if self.reading:
            return
        trace_chr_socket_hangup(self.label)
        self._tcp_chr_disconnect()

    # ------------------------------------------------------------ output

    def chr_write(self, buf: bytes) -> int:
        """Called with chr_write_lock held; -EIO while there is no client."""
        conn = self.conn
        if self.state != CONNECTED or conn is None:
            return -errno.EIO
        ret = io_channel_send(conn.sock, buf)
        if ret < 0 and (self.max_size <= 0 or self.pending):
            trace_chr_socket_poll_err(self.label)
            if self._disconnect_locked():
                self.sources.bh_schedule("tcp_chr_disconnect_bh")
        return ret

    def chr_wait_writable(self) -> None:
        conn = self.conn
        if conn is not None:
            qemu_poll_fd(conn.fd, POLLOUT)

    def chr_add_watch(self, cond: int, func: WatchFunc, opaque: Any) -> int:
        with self.chr_write_lock:
            conn = self.conn
            if conn is None:
                return 0
            return self.sources.add_watch(conn.fd, cond, func, opaque)

    # ------------------------------------------------------------ disconnect

    def _disconnect_locked(self) -> bool:
        """Tear the connection down (chr_write_lock held); True if there was one."""
        conn = self.conn
        if conn is None:
            return False
        trace_chr_socket_disconnect(self.label)
        self.conn = None
        self.state = DISCONNECTED
        self.closing.append(conn)
        fds, self.read_msgfds = self.read_msgfds, []
        qemu_close_fds(fds)
        self._update_disconnected_filename()
        return True

    def chr_disconnect(self) -> None:
        """qemu_chr_fe_disconnect: drop the client, from any thread."""
        with self.chr_write_lock:
            torn = self._disconnect_locked()
        if torn:
            self.sources.run_in_context("tcp_chr_disconnect_bh")

    def _tcp_chr_disconnect(self) -> None:
        """The client went away (context thread)."""
        with self.chr_write_lock:
            torn = self._disconnect_locked()
        if torn:
            self._disconnect_bh()

    def _disconnect_bh(self) -> None:
        """Close torn-down connections, then CLOSED, accept or reconnect again."""
        with self.chr_write_lock:
            closing, self.closing = self.closing, []
            watches = [w for conn in closing for w in self._release(conn)]
        self.reading = False
        self.max_size = 0
        self.pending = b""
        if self.finalized:
            return
        self._listen(self.state == DISCONNECTED)
        if any(conn.opened for conn in closing):
            qemu_chr_be_event(self, CHR_EVENT_CLOSED)
        for watch in watches:
            watch.func(watch.opaque)
        if self.reconnect_time_ms and not self.sources.timer_pending("chardev-socket-reconnect"):
            self.sources.timer_mod_ms("chardev-socket-reconnect", self.reconnect_time_ms)

    def _release(self, conn: _Conn) -> list[Any]:
        """Close a torn-down connection; returns the watches that waited on it."""
        watches = self.sources.detach(conn.fd)
        if conn.opened and self.hup is not None:
            self.hup.unwatch(conn.fd)
        yank_unregister_function(chardev_yank_instance(self.label), qio_channel_shutdown, conn.sock)
        conn.sock.close()
        return watches

    def finalize(self) -> None:
        """char_socket_finalize: close everything, unlink the socket file."""
        with self.chr_write_lock:
            self._disconnect_locked()
            for conn in self.closing:
                self._release(conn)
            self.closing = []
        self.sources.timer_del("chardev-socket-reconnect")
        if self.connecting is not None and self.connecting.sock is not None:
            self.sources.detach(self.connecting.sock.fileno())
            self.connecting.sock.close()
        if self.connecting is not None and self.connecting.result is not None:
            self.connecting.result.close()
        self.connecting = None
        if self.listener is not None:
            self.listener.disconnect()
        if self.hup is not None:
            self.sources.detach(self.hup.fileno())
            self.hup.close()
            self.hup = None
        if self.registered_yank:
            yank_unregister_instance(chardev_yank_instance(self.label))
        qemu_chr_be_event(self, CHR_EVENT_CLOSED)
        super().finalize()
