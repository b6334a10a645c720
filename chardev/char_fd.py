"""Backends on a pair of file descriptors (chardev/char-fd.c): the base of
``file``, ``pipe`` and ``stdio``.

Input is read from ``fd_in`` (if any) in the chardev's context while the
frontend can take it; end of file raises CHR_EVENT_CLOSED.  Output goes to
``fd_out`` without blocking, from any thread, under ``chr_write_lock``.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from chardev.char import (
    CHR_EVENT_CLOSED,
    Chardev,
    qemu_chr_be_can_write,
    qemu_chr_be_event,
    qemu_chr_be_write,
    type_register,
)
from chardev.char_io import CHR_READ_BUF_LEN, G_IO_IN, WatchFunc, io_channel_send
from qapi.error import error_setg
from util.osdep import POLLOUT, qemu_poll_fd


@type_register
class FDChardev(Chardev):
    """Abstract: subclasses open the fds and call :meth:`open_fd`."""

    typename = "chardev-fd"
    abstract = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.fd_in = -1
        self.fd_out = -1
        #: fds the chardev does not close at finalize (stdin/stdout)
        self.borrowed_fds: tuple[int, ...] = ()

    def open_fd(self, fd_in: int, fd_out: int) -> None:
        """Use ``fd_in`` (-1: no input) and ``fd_out`` (qemu_chr_open_fd)."""
        self.fd_in = fd_in
        self.fd_out = fd_out
        os.set_blocking(fd_out, False)
        if fd_in >= 0:
            os.set_blocking(fd_in, False)

    def chr_write(self, buf: bytes) -> int:
        return io_channel_send(self.fd_out, buf)

    def chr_wait_writable(self) -> None:
        qemu_poll_fd(self.fd_out, POLLOUT)

    def chr_add_watch(self, cond: int, func: WatchFunc, opaque: Any) -> int:
        return self.sources.add_watch(self.fd_out, cond & ~G_IO_IN, func, opaque)

    def chr_update_read_handler(self) -> None:
        self.sources.bh_schedule("chr_input")

    def chr_read_poll_update(self) -> None:
        if self.fd_in < 0:
            return
        active = not self.pending and qemu_chr_be_can_write(self) > 0
        self.sources.set_reader(self.fd_in, self._fd_chr_read if active else None)

    def _fd_chr_read(self) -> None:
        """``fd_in`` is readable (context thread)."""
        data = self._read()
        if data is None:
            return
        if not data:
            self.sources.set_reader(self.fd_in, None)
            qemu_chr_be_event(self, CHR_EVENT_CLOSED)
            return
        qemu_chr_be_write(self, data)
        self.chr_read_poll_update()

    def _read(self) -> Optional[bytes]:
        """A chunk, b"" at end of file (or on an error), None if nothing yet."""
        try:
            return os.read(self.fd_in, CHR_READ_BUF_LEN)
        except BlockingIOError:
            return None
        except OSError:
            return b""

    def finalize(self) -> None:
        qemu_chr_be_event(self, CHR_EVENT_CLOSED)
        super().finalize()
        for fd in {self.fd_in, self.fd_out} - {-1, *self.borrowed_fds}:
            os.close(fd)


def qmp_chardev_open_file_source(path: str, flags: int) -> int:
    """Open ``path`` for a file or pipe backend, with QEMU's error text."""
    try:
        return os.open(path, flags | os.O_CLOEXEC, 0o666)
    except OSError as e:
        raise error_setg("Could not open '%s': %s", path, os.strerror(e.errno or 0)) from None
