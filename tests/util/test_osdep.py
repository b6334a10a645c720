"""Host fd helpers: pollability, a one-fd poll, and a HUP-only notifier."""

from __future__ import annotations

import os
import socket
import tempfile

from util.osdep import (
    POLLHUP,
    POLLIN,
    POLLOUT,
    FdHangupNotifier,
    qemu_fd_pollable,
    qemu_poll_fd,
)


def test_pollable():
    a, b = socket.socketpair()
    with tempfile.TemporaryFile() as f, a, b:
        assert qemu_fd_pollable(a.fileno())
        assert not qemu_fd_pollable(f.fileno())
    null = os.open(os.devnull, os.O_RDONLY)
    try:
        assert not qemu_fd_pollable(null)
    finally:
        os.close(null)


def test_poll_fd():
    a, b = socket.socketpair()
    with a, b:
        assert qemu_poll_fd(a.fileno(), POLLIN, 0) == 0
        assert qemu_poll_fd(a.fileno(), POLLOUT, 0) & POLLOUT
        b.send(b"x")
        assert qemu_poll_fd(a.fileno(), POLLIN, 1) & POLLIN


def test_hangup_notifier_ignores_data_and_sees_hup():
    a, b = socket.socketpair()
    hup = FdHangupNotifier()
    try:
        hup.watch(a.fileno())
        b.send(b"unread data")
        assert qemu_poll_fd(hup.fileno(), POLLIN, 0) == 0
        b.close()
        assert qemu_poll_fd(hup.fileno(), POLLIN, 1) & POLLIN
        assert qemu_poll_fd(a.fileno(), POLLIN, 0) & POLLHUP
    finally:
        hup.close()
        a.close()


def test_hangup_notifier_serves_one_fd_after_another():
    """An unwatched fd's hang-up is not reported; the next fd's is."""
    hup = FdHangupNotifier()
    a, b = socket.socketpair()
    c, d = socket.socketpair()
    try:
        hup.watch(a.fileno())
        hup.unwatch(a.fileno())
        b.close()
        assert qemu_poll_fd(hup.fileno(), POLLIN, 0) == 0
        hup.watch(c.fileno())
        assert qemu_poll_fd(hup.fileno(), POLLIN, 0) == 0
        d.close()
        assert qemu_poll_fd(hup.fileno(), POLLIN, 1) & POLLIN
        hup.unwatch(c.fileno())
        assert qemu_poll_fd(hup.fileno(), POLLIN, 0) == 0
        hup.unwatch(c.fileno())  # twice: harmless
    finally:
        hup.close()
        a.close()
        c.close()
