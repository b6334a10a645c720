"""Where a chardev's callbacks live (chardev/char-io.c, and the GSources of
chr->gcontext).

In QEMU a chardev attaches GSources to its GMainContext: the read watch
(``io_add_watch_poll``), the HUP source, the listener, output watches, the
reconnect timer.  Here each chardev owns one :class:`ChrSources`, which
keeps all of them in one AioContext (the chardev's context) and moves them
together when a frontend binds the chardev to another context:

* fd readers and output watches share one ``aio_set_fd_handler``
  registration per fd (an AioContext has one handler pair per fd);
* fds that epoll refuses (regular files, ``/dev/null``) are treated as
  always ready, as glib's ``poll()`` reports them, by a bottom half that runs
  the reader once per loop pass while it is wanted; an fd's entry, with that
  pollability test, lives until the backend ``detach``es the fd;
* named bottom halves and timers are created in the current context and
  recreated in the new one on a move;
* watch tags are per chardev, starting at 1 (0 means "no watch", as with
  ``g_source_attach``).

Callbacks run in the context's home thread.  Registrations may change from
any thread (a frontend may add a watch from the main loop while the chardev
is served by an I/O thread); ``lock`` (class ``chr_sources_lock``, a leaf)
guards the tables, and no callback is ever called with it held.
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Callable, Optional, Union

from util.aio import (
    BH_SCHEDULED,
    QEMUBH,
    AioContext,
    aio_bh_new,
    aio_set_fd_handler,
    aio_timer_new,
    qemu_bh_delete,
    qemu_bh_schedule,
)
from util.main_loop import iohandler_get_aio_context
from util.osdep import qemu_fd_pollable
from util.thread import QemuMutex, qemu_get_thread_id
from util.timer import (
    SCALE_NS,
    QEMUClockType,
    QEMUTimer,
    qemu_clock_get_ns,
    timer_del,
    timer_expire_time_ns,
    timer_mod_ns,
    timer_pending,
)

# GIOCondition bits (glib), as frontends pass them to qemu_chr_fe_add_watch.
G_IO_IN = 1
G_IO_PRI = 2
G_IO_OUT = 4
G_IO_ERR = 8
G_IO_HUP = 16
G_IO_NVAL = 32

#: How much a backend reads at once (CHR_READ_BUF_LEN).
CHR_READ_BUF_LEN = 4096

#: A watch callback: ``func(opaque)``; True keeps the watch (G_SOURCE_CONTINUE).
WatchFunc = Callable[[Any], bool]


# Plain classes rather than dataclasses: importing ``dataclasses`` (and with
# it ``inspect``) and compiling the generated methods is paid at every start-up.


class ChrWatch:
    """An output (or input) watch a frontend added: a GSource with a tag."""

    __slots__ = ("cond", "fd", "func", "opaque", "tag")

    tag: int
    cond: int
    func: WatchFunc
    opaque: Any
    #: the fd it waits on, or None for a watch the backend fires itself
    fd: Optional[int]

    def __init__(
        self, tag: int, cond: int, func: WatchFunc, opaque: Any, fd: Optional[int]
    ) -> None:
        self.tag = tag
        self.cond = cond
        self.func = func
        self.opaque = opaque
        self.fd = fd


class _FdEntry:
    __slots__ = ("pollable", "reader", "registered", "watches")

    reader: Optional[Callable[[], None]]
    watches: list[ChrWatch]
    pollable: bool
    #: (read, write) interest registered in the context, to skip no-op updates
    registered: tuple[bool, bool]

    def __init__(
        self,
        reader: Optional[Callable[[], None]] = None,
        watches: Optional[list[ChrWatch]] = None,
        pollable: bool = True,
        registered: tuple[bool, bool] = (False, False),
    ) -> None:
        self.reader = reader
        self.watches = [] if watches is None else watches
        self.pollable = pollable
        self.registered = registered


class _NamedBH:
    __slots__ = ("bh", "cb")

    cb: Callable[[], None]
    bh: Optional[QEMUBH]

    def __init__(self, cb: Callable[[], None], bh: Optional[QEMUBH] = None) -> None:
        self.cb = cb
        self.bh = bh


class _NamedTimer:
    __slots__ = ("cb", "clock", "timer")

    cb: Callable[[], None]
    clock: QEMUClockType
    timer: Optional[QEMUTimer]

    def __init__(
        self, cb: Callable[[], None], clock: QEMUClockType, timer: Optional[QEMUTimer] = None
    ) -> None:
        self.cb = cb
        self.clock = clock
        self.timer = timer


def in_context_thread(ctx: AioContext) -> bool:
    """True in the thread that polls ``ctx`` (or if no thread polls it)."""
    return ctx.home_thread is None or ctx.home_thread == qemu_get_thread_id()


class ChrSources:
    """A chardev's fd callbacks, watches, bottom halves and timers."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.lock = QemuMutex("chr_sources_lock")
        #: protected by lock; resolved lazily: None means "not yet needed"
        self._ctx: Optional[AioContext] = None
        #: protected by lock
        self._fds: dict[int, _FdEntry] = {}
        self._bhs: dict[str, _NamedBH] = {}
        self._timers: dict[str, _NamedTimer] = {}
        self._next_tag = 1
        self._ready_bh = _NamedBH(self._run_always_ready)
        self._destroyed = False

    # ------------------------------------------------------------ context

    def context(self) -> AioContext:
        """The chardev's AioContext; by default the main loop's iohandler_ctx."""
        with self.lock:
            return self._context_locked()

    def in_context_thread(self) -> bool:
        """True in the thread that polls the chardev's context.

        Reads the context without the lock once it is resolved: it is one
        reference, replaced whole by :meth:`set_context`.
        """
        ctx = self._ctx
        return in_context_thread(ctx if ctx is not None else self.context())

    def _context_locked(self) -> AioContext:
        if self._ctx is None:
            self._ctx = iohandler_get_aio_context()
        return self._ctx

    def set_context(self, ctx: Optional[AioContext]) -> None:
        """Move every source to ``ctx`` (None: the default context)."""
        new = ctx if ctx is not None else iohandler_get_aio_context()
        with self.lock:
            old = self._ctx
            if old is new:
                return
            self._ctx = new
            if old is None:
                return
            for fd in [fd for fd in self._fds if fd >= 0]:
                if self._fds[fd].pollable:
                    aio_set_fd_handler(old, fd, None, None)
                    self._fds[fd].registered = (False, False)
                self._sync_locked(fd)
            for nbh in [*self._bhs.values(), self._ready_bh]:
                if nbh.bh is not None:
                    scheduled = nbh.bh.flags & BH_SCHEDULED
                    qemu_bh_delete(nbh.bh)
                    nbh.bh = None
                    if scheduled:
                        self._bh_schedule_locked(nbh)
            for ntimer in self._timers.values():
                self._move_timer_locked(ntimer)

    def run_in_context(self, name: str) -> None:
        """Run the named BH now if this is the context's thread, else schedule it."""
        if self.in_context_thread():
            self._bhs[name].cb()
        else:
            self.bh_schedule(name)

    # ------------------------------------------------------------ bottom halves

    def add_bh(self, name: str, cb: Callable[[], None]) -> None:
        """Declare a BH; it is created in the context when first scheduled."""
        self._bhs[name] = _NamedBH(cb)

    def bh_schedule(self, name: str) -> None:
        """Run the named BH in the next pass of the chardev's context."""
        with self.lock:
            if not self._destroyed:
                self._bh_schedule_locked(self._bhs[name])

    def _bh_schedule_locked(self, nbh: _NamedBH) -> None:
        if nbh.bh is None:
            name = f"{getattr(nbh.cb, '__name__', 'chr_bh')}:{self.label}"
            nbh.bh = aio_bh_new(self._context_locked(), _call, nbh.cb, name)
        qemu_bh_schedule(nbh.bh)

    # ------------------------------------------------------------ timers

    def add_timer(self, name: str, clock: QEMUClockType, cb: Callable[[], None]) -> None:
        self._timers[name] = _NamedTimer(cb, clock)

    def timer_mod_ms(self, name: str, delay_ms: int) -> None:
        """(Re)arm the named timer ``delay_ms`` from now on its clock."""
        with self.lock:
            nt = self._timers[name]
            if nt.timer is None:
                nt.timer = aio_timer_new(
                    self._context_locked(), nt.clock, SCALE_NS, _call, nt.cb, f"{name}-{self.label}"
                )
            timer_mod_ns(nt.timer, qemu_clock_get_ns(nt.clock) + delay_ms * 1000000)

    def timer_del(self, name: str) -> None:
        with self.lock:
            timer = self._timers[name].timer
        if timer is not None:
            timer_del(timer)

    def timer_pending(self, name: str) -> bool:
        timer = self._timers[name].timer
        return timer is not None and timer_pending(timer)

    def _move_timer_locked(self, nt: _NamedTimer) -> None:
        old = nt.timer
        if old is None:
            return
        nt.timer = aio_timer_new(self._context_locked(), nt.clock, SCALE_NS, _call, nt.cb, old.name)
        if timer_pending(old):
            expire = timer_expire_time_ns(old)
            timer_del(old)
            timer_mod_ns(nt.timer, expire)

    # ------------------------------------------------------------ fds

    def set_reader(self, fd: int, reader: Optional[Callable[[], None]]) -> None:
        """Call ``reader()`` in the context whenever ``fd`` is readable; None stops."""
        with self.lock:
            if self._destroyed:
                return
            entry = self._fds.get(fd)
            if entry is None:
                if reader is None:
                    return
                entry = self._fds[fd] = _FdEntry(pollable=qemu_fd_pollable(fd))
            entry.reader = reader
            self._sync_locked(fd)

    def detach(self, fd: int) -> list[ChrWatch]:
        """Forget ``fd`` before it is closed; returns the watches that waited on it."""
        with self.lock:
            entry = self._fds.pop(fd, None)
            if entry is None:
                return []
            if entry.pollable and self._ctx is not None:
                aio_set_fd_handler(self._ctx, fd, None, None)
            return entry.watches

    def _sync_locked(self, fd: int, keep_in: bool = True) -> None:
        """Make the context's registration of ``fd`` match what is wanted.

        Read interest is dropped lazily (``keep_in``): a reader paused by flow
        control stays in the epoll set until the fd turns readable while
        nobody wants it (:meth:`_io_read` then drops it), so a monitor's
        suspend and resume around each request cost no epoll_ctl when no input
        arrives meanwhile, as glib merely leaves such an fd out of its polls.
        """
        entry = self._fds[fd]
        watches = entry.watches
        want_in = entry.reader is not None or (
            bool(watches) and any(w.cond & G_IO_IN for w in watches)
        )
        want_out = bool(watches) and any(w.cond & G_IO_OUT for w in watches)
        if not entry.pollable:
            if want_in or want_out:
                self._bh_schedule_locked(self._ready_bh)
            return
        reg_in = want_in or (keep_in and entry.registered[0])
        if entry.registered != (reg_in, want_out):
            aio_set_fd_handler(
                self._context_locked(),
                fd,
                self._io_read if reg_in else None,
                self._io_write if want_out else None,
                fd,
            )
            entry.registered = (reg_in, want_out)

    def _io_read(self, fd: int) -> None:
        entry = self._fds.get(fd)
        if entry is None:
            return
        reader = entry.reader
        if reader is not None:
            reader()
        elif not any(w.cond & G_IO_IN for w in entry.watches):
            with self.lock:  # paused (see _sync_locked): out of the poll set now
                if self._fds.get(fd) is entry and entry.reader is None:
                    self._sync_locked(fd, keep_in=False)
            return
        if entry.watches:
            self._fire(fd, G_IO_IN)

    def _io_write(self, fd: int) -> None:
        self._fire(fd, G_IO_OUT)

    def _run_always_ready(self) -> None:
        """One pass over fds epoll cannot watch: they are always ready."""
        with self.lock:
            fds = [fd for fd, e in self._fds.items() if fd >= 0 and not e.pollable]
        for fd in fds:
            self._io_read(fd)
            self._io_write(fd)
        with self.lock:
            if any(self._fds[fd].reader or self._fds[fd].watches for fd in fds if fd in self._fds):
                self._bh_schedule_locked(self._ready_bh)

    # ------------------------------------------------------------ watches

    def add_watch(self, fd: Optional[int], cond: int, func: WatchFunc, opaque: Any) -> int:
        """Attach a watch; returns its tag (>0).  ``fd`` None: fired by the backend."""
        assert cond & (G_IO_IN | G_IO_OUT), "a watch needs G_IO_IN or G_IO_OUT"
        with self.lock:
            tag = self._next_tag
            self._next_tag += 1
            watch = ChrWatch(tag, cond, func, opaque, fd)
            key = -1 if fd is None else fd
            self._fds.setdefault(key, _FdEntry(pollable=fd is not None and qemu_fd_pollable(fd)))
            self._fds[key].watches.append(watch)
            if fd is not None:
                self._sync_locked(fd)
            return tag

    def remove_watch(self, tag: int) -> bool:
        """Remove the watch ``tag``; False if it is gone already."""
        with self.lock:
            for fd, entry in list(self._fds.items()):
                for watch in entry.watches:
                    if watch.tag == tag:
                        entry.watches.remove(watch)
                        if fd >= 0:
                            self._sync_locked(fd)
                        return True
        return False

    def fire_virtual_watches(self, cond: int) -> None:
        """Fire the backend-driven watches waiting for ``cond`` (context thread)."""
        self._fire(-1, cond)

    def _fire(self, fd: int, cond: int) -> None:
        with self.lock:
            entry = self._fds.get(fd)
            ready = [w for w in entry.watches if w.cond & cond] if entry else []
        for watch in ready:
            if not watch.func(watch.opaque):
                self.remove_watch(watch.tag)

    # ------------------------------------------------------------ teardown

    def destroy(self) -> list[ChrWatch]:
        """Drop every source (finalize); returns the watches still attached."""
        with self.lock:
            self._destroyed = True
            watches = [w for e in self._fds.values() for w in e.watches]
            for fd, entry in self._fds.items():
                if fd >= 0 and entry.pollable and self._ctx is not None:
                    aio_set_fd_handler(self._ctx, fd, None, None)
            self._fds.clear()
            for nbh in [*self._bhs.values(), self._ready_bh]:
                if nbh.bh is not None:
                    qemu_bh_delete(nbh.bh)
                    nbh.bh = None
            timers = [nt.timer for nt in self._timers.values() if nt.timer is not None]
        for timer in timers:
            timer_del(timer)
        return watches


def _call(cb: Callable[[], None]) -> None:
    cb()


# ---------------------------------------------------------------- channel I/O


Channel = Union[socket.socket, int]


def io_channel_send(chan: Channel, buf: bytes) -> int:
    """Write as much of ``buf`` as fits without blocking (io_channel_send_full).

    Returns the count written (0 when nothing fits now), or a negative errno.
    """
    offset = 0
    while offset < len(buf):
        try:
            if isinstance(chan, socket.socket):
                n = chan.send(buf[offset:], socket.MSG_NOSIGNAL)
            else:
                n = os.write(chan, buf[offset:])
        except (BlockingIOError, InterruptedError):
            return offset
        except OSError as e:
            return -(e.errno or errno.EIO)
        offset += n
    return offset
