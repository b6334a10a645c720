"""The socket channel's reads and shutdown (io/channel-socket.c).

Why apart from the chardev: receiving bytes together with SCM_RIGHTS fds
and cutting a connection for yank are what QEMU's QIOChannelSocket does for
every socket user; the chardev only decides what to keep.

Runs in the thread of the caller (the socket chardev's context, or yank's).
"""

from __future__ import annotations

import os
import socket
from array import array

#: At most this many fds are taken from one message (TCP_MAX_FDS).
TCP_MAX_FDS = 16
#: room for that many fds' control message, as recvmsg wants it
_MSGFDS_SPACE = socket.CMSG_SPACE(TCP_MAX_FDS * 4)


def qio_channel_socket_readv(
    sock: socket.socket, size: int, want_fds: bool
) -> tuple[bytes, list[int]]:
    """Up to ``size`` bytes and the fds that came with them (UNIX sockets).

    The fds are blocking again: O_NONBLOCK is a file status flag, so it
    survives SCM_RIGHTS, and QEMU clears it on receipt.  Raises
    BlockingIOError when nothing is there yet, OSError on failure.
    """
    if not want_fds:
        return sock.recv(size), []
    data, anc, _, _ = sock.recvmsg(size, _MSGFDS_SPACE, socket.MSG_CMSG_CLOEXEC)
    fds = array("i")
    for level, kind, payload in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(payload[: len(payload) - len(payload) % fds.itemsize])
    for fd in fds:
        os.set_blocking(fd, True)
    return data, list(fds)


def qio_channel_shutdown(sock: socket.socket) -> None:
    """yank: cut the connection now; the read path then sees end of stream."""
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
