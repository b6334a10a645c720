"""A listener with one socket per address (io/net-listener.c, QIONetListener).

Why a socket per address: QEMU resolves a listen address first and opens
a socket for every result, so ``host=`` (empty) listens on ``0.0.0.0``
and on ``[::]`` (the IPv6 one ``IPV6_V6ONLY``, as the IPv4 port is taken
by then).  ``ipv4=on``/``ipv6=on`` narrow the lookup as ``inet_listen``
does.  Opening succeeds if one socket does; the first error is reported
only when none does.

Threads: opened at creation (main loop thread, BQL); the accept callback
runs in the owner's context (its :class:`chardev.char_io.ChrSources`);
closed by the owner's finalize.
"""

from __future__ import annotations

import socket
from typing import Callable, Optional

from chardev.char_io import ChrSources
from chardev.sockets import (
    SocketAddress,
    socket_listen,
    socket_listen_cleanup,
    socket_local_address,
    socket_resolve_listen,
)
from qapi.error import QapiError
from util.osdep import POLLIN, qemu_poll_fds

ClientFunc = Callable[[socket.socket], None]


class QIONetListener:
    """The listening sockets of one server chardev and their accept watch."""

    def __init__(self, sources: ChrSources) -> None:
        self.sources = sources
        #: the listening sockets, in resolution order (used in the owner's context)
        self.sioc: list[socket.socket] = []
        self.io_func: Optional[ClientFunc] = None

    def open_sync(self, addr: SocketAddress, num: int) -> None:
        """qio_net_listener_open_sync: listen on every address ``addr`` resolves to."""
        err: Optional[QapiError] = None
        for one in socket_resolve_listen(addr):
            try:
                sock = socket_listen(one, num)
            except QapiError as e:
                err = err or e
                continue
            sock.setblocking(False)
            self.sioc.append(sock)
        if not self.sioc:
            assert err is not None
            raise err

    def local_address(self, addr: SocketAddress) -> SocketAddress:
        """The first socket's real address (QEMU names the chardev after it)."""
        return socket_local_address(self.sioc[0], addr)

    def set_client_func(self, func: Optional[ClientFunc]) -> None:
        """Accept clients with ``func``, or (None) leave them in the backlog."""
        self.io_func = func
        for sock in self.sioc:
            self.sources.set_reader(sock.fileno(), self._channel_func(sock) if func else None)

    def _channel_func(self, sock: socket.socket) -> Callable[[], None]:
        def accept() -> None:
            self._accept(sock)

        return accept

    def _accept(self, sock: socket.socket) -> None:
        """qio_net_listener_channel_func: a socket is readable (owner's context)."""
        try:
            client, _ = sock.accept()
        except OSError:
            return
        if self.io_func is not None:
            self.io_func(client)
        else:
            client.close()

    def wait_client(self) -> socket.socket:
        """qio_net_listener_wait_client: block until a client comes, on any socket."""
        while True:
            for fd, _ in qemu_poll_fds([s.fileno() for s in self.sioc], POLLIN):
                sock = next(s for s in self.sioc if s.fileno() == fd)
                try:
                    client, _ = sock.accept()
                except (BlockingIOError, InterruptedError):
                    continue
                return client

    def disconnect(self) -> None:
        """qio_net_listener_disconnect + unref: stop watching, unlink, close."""
        for sock in self.sioc:
            self.sources.detach(sock.fileno())
            socket_listen_cleanup(sock)
            sock.close()
        self.sioc = []
