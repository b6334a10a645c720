"""Small host helpers for file descriptors (util/osdep.c, util/oslib-posix.c).

What chardev/ needs from the host beyond reading and writing, kept here so
that polling stays in util/ (DESIGN.md's one rule):

* :func:`qemu_fd_pollable` -- epoll refuses regular files and some devices
  (``/dev/null``); glib's ``poll()`` reports them always ready.  A caller
  that gets False treats the fd as always ready instead of registering it
  with an AioContext.
* :func:`qemu_poll_fd` -- a blocking wait for one fd (``poll(2)``), used
  where QEMU retries a write until it fits (``qemu_chr_write_all``), and
  :func:`qemu_poll_fds` for several (a listener's sockets, ``wait=on``).
* :func:`qemu_close_fds` -- close fds collected under a lock, after dropping it.
* :class:`FdHangupNotifier` -- an fd that becomes readable when a watched fd
  hangs up, whatever data is queued on it.  glib lets QEMU watch ``G_IO_HUP``
  alone; a selector cannot, because asking for readability spins while
  unread data waits.  An epoll set holding the fd with an empty event mask
  reports exactly HUP and ERR, and that epoll fd can itself be registered in
  an AioContext.  Linux only, as this project is.

Runs in any thread.
"""

from __future__ import annotations

import os
import select
import stat
from collections.abc import Iterable
from typing import Optional

POLLIN = select.POLLIN
POLLOUT = select.POLLOUT
POLLERR = select.POLLERR
POLLHUP = select.POLLHUP
POLLNVAL = select.POLLNVAL


def qemu_fd_pollable(fd: int) -> bool:
    """True if epoll (hence an AioContext) can watch ``fd``.

    Sockets, pipes and anonymous inodes (epoll, eventfd: no file type
    bits) always can and regular files and directories never can, which one
    fstat tells; anything else (character devices such as ``/dev/null`` or
    a tty) is tried on a scratch epoll.
    """
    mode = os.fstat(fd).st_mode
    if stat.S_ISSOCK(mode) or stat.S_ISFIFO(mode) or not stat.S_IFMT(mode):
        return True
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return False
    ep = select.epoll()
    try:
        ep.register(fd, select.EPOLLIN)
    except PermissionError:
        return False
    finally:
        ep.close()
    return True


def qemu_poll_fd(fd: int, events: int, timeout: Optional[float] = None) -> int:
    """Wait until ``fd`` has one of ``events`` (or an error); return revents.

    ``timeout`` is in seconds, None for ever; 0 is returned when it expires.
    """
    ready = qemu_poll_fds([fd], events, timeout)
    return ready[0][1] if ready else 0


def qemu_poll_fds(
    fds: Iterable[int], events: int, timeout: Optional[float] = None
) -> list[tuple[int, int]]:
    """Wait until one of ``fds`` has one of ``events``; the (fd, revents) ready.

    An empty list means ``timeout`` (seconds, None for ever) expired.  A
    listener with a socket per address (net_listener) waits on all of them.
    """
    poller = select.poll()
    for fd in fds:
        poller.register(fd, events)
    return poller.poll(None if timeout is None else timeout * 1000)


def qemu_get_pid_name(pid: int) -> Optional[str]:
    """The program of process ``pid``: its ``/proc/PID/cmdline`` up to the first NUL.

    None if the process is gone or unreadable (QEMU then says
    ``<unknown process>``).
    """
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class FdHangupNotifier:
    """Readable exactly while one of the watched fds reports HUP or ERR.

    One notifier serves a chardev for its whole life: each connection's fd
    is added when it opens and removed before it is closed, so a connect
    cycle costs two epoll_ctl calls, not an epoll set of its own.
    """

    def __init__(self) -> None:
        self._epoll = select.epoll()

    def fileno(self) -> int:
        return self._epoll.fileno()

    def watch(self, fd: int) -> None:
        """Report HUP and ERR of ``fd`` (an empty event mask asks for nothing else)."""
        self._epoll.register(fd, 0)

    def unwatch(self, fd: int) -> None:
        """Stop watching ``fd``; call it before ``fd`` is closed."""
        try:
            self._epoll.unregister(fd)
        except OSError:
            pass  # closed already: the kernel dropped it

    def close(self) -> None:
        self._epoll.close()


def qemu_close_fds(fds: Iterable[int]) -> None:
    """Close each fd, ignoring ones already gone.

    Callers collect fds under their lock and close them after dropping it,
    as QEMU's fds.c does: close() may block, and never under a mutex.
    """
    for fd in fds:
        try:
            os.close(fd)
        except OSError:
            pass
