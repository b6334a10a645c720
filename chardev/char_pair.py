"""An in-memory chardev pair for tests (the emulator's own; QEMU has none).

:func:`qemu_chr_new_pair` registers a chardev that frontends (monitors)
attach to like any other, and returns the :class:`PairClient` a test drives
in place of a socket peer: it sends bytes (optionally with fds, as
SCM_RIGHTS would), reads what the frontend wrote, hangs up and reconnects.
It behaves like a connected UNIX socket:

* one chunk (up to CHR_READ_BUF_LEN bytes) is read per loop pass while the
  frontend's ``can_read`` is positive; in *lockstep* mode a chunk is one
  byte, which reproduces QEMU's byte-at-a-time input path exactly;
* fds sent with a chunk arrive with the read that starts with that chunk
  and ends with it, which is when QEMU's byte-at-a-time reads see them (a
  chunk mode read never glues earlier bytes to a chunk that brings fds);
* output beyond ``out_capacity`` unread bytes is refused (a partial write),
  and watches fire once the client has read some;
* a hang-up is seen at once while the frontend takes no input (unread input
  is dropped), and after the last byte otherwise;
* a client that connects while the previous one is still connected waits,
  as a second client in a listening socket's backlog does, and is accepted
  once the hang-up has been handled.

Input and events run in the chardev's context; the client may be driven
from any thread.  Client and chardev share ``lock`` (class
``chr_pair_lock``, a leaf below chr_write_lock) and the condition ``cond``,
signalled whenever output is added or taken or the client hangs up.
"""

from __future__ import annotations

import errno
import os
from collections import deque
from typing import Any, Optional

from chardev.char import (
    CHR_EVENT_CLOSED,
    CHR_EVENT_OPENED,
    QEMU_CHAR_FEATURE_FD_PASS,
    Chardev,
    qemu_chardev_new,
    qemu_chr_be_can_write,
    qemu_chr_be_event,
    qemu_chr_be_write,
    qemu_chr_set_feature,
    type_register,
)
from chardev.char_io import CHR_READ_BUF_LEN, G_IO_OUT, WatchFunc
from util.aio import AioContext
from util.atomic import QAtomic, qatomic_read, qatomic_set
from util.thread import QemuCond, QemuMutex
from util.timer import QEMU_CLOCK_REALTIME, qemu_clock_get_ns


@type_register
class PairChardev(Chardev):
    typename = "chardev-pair"
    kind = "pair"
    abstract = False
    internal = True

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.lock = QemuMutex("chr_pair_lock", self.label)
        self.cond = QemuCond("chr_pair_cond")
        #: protected by lock: what the client sent, each chunk with its fds
        self.input: deque[tuple[bytes, list[int]]] = deque()
        #: protected by lock: what the frontend wrote, not yet read
        self.output = bytearray()
        #: protected by lock: the client hung up
        self.peer_closed = False
        #: protected by lock: connections accepted so far
        self.accepted = 0
        self.out_capacity: Optional[int] = None
        self.lockstep = False
        #: written under chr_write_lock in the chardev's context; read anywhere
        self.connected: QAtomic[bool] = QAtomic(False, "connected", self.label)
        #: context only: a client connected while the previous one was still
        #: there; it is accepted after the hang-up
        self.connect_pending = False
        self.read_msgfds: list[int] = []
        qemu_chr_set_feature(self, QEMU_CHAR_FEATURE_FD_PASS)
        self.sources.add_bh("pair_read_bh", self._read_bh)
        self.sources.add_bh("pair_poll_bh", self.chr_read_poll_update)
        self.sources.add_bh("pair_output_bh", self._output_bh)
        self.sources.add_bh("pair_connect_bh", self._connect_bh)
        self.sources.add_bh("pair_disconnect_bh", self._disconnect_bh)

    def open(self, data: dict[str, Any]) -> bool:
        self.lockstep = data.get("lockstep", False)
        self.out_capacity = data.get("out-capacity")
        qatomic_set(self.connected, data.get("connected", True))
        self.accepted = int(qatomic_read(self.connected))
        self.filename = f"pair:{self.label}"
        return qatomic_read(self.connected)

    # ------------------------------------------------------------ input

    def chr_update_read_handler(self) -> None:
        self.sources.bh_schedule("chr_input")

    def chr_read_poll_update(self) -> None:
        """Read on, or notice a hang-up (context thread)."""
        if not qatomic_read(self.connected):
            return
        with self.lock:
            has_input, hup = bool(self.input), self.peer_closed
        if self.pending or qemu_chr_be_can_write(self) <= 0:
            if hup:
                self._hangup()
        elif has_input:
            self.sources.bh_schedule("pair_read_bh")
        elif hup:
            self._hangup()

    def _read_bh(self) -> None:
        """One read, as one readable event of a socket would give."""
        if not qatomic_read(self.connected) or self.pending or qemu_chr_be_can_write(self) <= 0:
            self.chr_read_poll_update()
            return
        data, fds = self._take(1 if self.lockstep else CHR_READ_BUF_LEN)
        if fds:
            with self.chr_write_lock:
                old, self.read_msgfds = self.read_msgfds, fds
            _close_fds(old)
        if data:
            qemu_chr_be_write(self, data)
        self.chr_read_poll_update()

    def _take(self, size: int) -> tuple[bytes, list[int]]:
        """Up to ``size`` bytes; a read stops after a chunk that brought fds."""
        out = bytearray()
        fds: list[int] = []
        with self.lock:
            while self.input and len(out) < size and not fds:
                chunk, chunk_fds = self.input.popleft()
                if chunk_fds and out:
                    self.input.appendleft((chunk, chunk_fds))
                    break
                fds = chunk_fds
                take = size - len(out)
                out += chunk[:take]
                if len(chunk) > take:
                    self.input.appendleft((chunk[take:], []))
        return bytes(out), fds

    def get_msgfds(self, num: int) -> Optional[list[int]]:
        with self.chr_write_lock:
            fds, self.read_msgfds = self.read_msgfds, []
        _close_fds(fds[num:])
        return fds[:num]

    # ------------------------------------------------------------ connection

    def _connect_bh(self) -> None:
        with self.chr_write_lock:
            if qatomic_read(self.connected):
                self.connect_pending = True  # in the backlog until the hang-up
                return
            qatomic_set(self.connected, True)
        with self.lock:
            self.peer_closed = False
            self.output.clear()  # a new connection starts with nothing to read
            self.accepted += 1
            self.cond.broadcast()
        qemu_chr_be_event(self, CHR_EVENT_OPENED)
        self.chr_read_poll_update()

    def chr_disconnect(self) -> None:
        """The emulator side closes the connection (qemu_chr_fe_disconnect)."""
        self.sources.run_in_context("pair_disconnect_bh")

    def _disconnect_bh(self) -> None:
        if qatomic_read(self.connected):
            self._hangup()

    def _hangup(self) -> None:
        """The connection is gone: drop unread input, CLOSED, wake watches."""
        with self.chr_write_lock:
            qatomic_set(self.connected, False)
            fds, self.read_msgfds = self.read_msgfds, []
        with self.lock:
            dropped = [fd for _, chunk_fds in self.input for fd in chunk_fds]
            self.input.clear()
            if self.peer_closed:
                self.output.clear()  # the client closed its end: nobody reads it
            # else the emulator closed: what it wrote stays readable before
            # the end, as bytes in flight on a socket do
            self.cond.broadcast()  # a client waiting for output sees the end
        _close_fds(fds + dropped)
        self.pending = b""
        qemu_chr_be_event(self, CHR_EVENT_CLOSED)
        self.sources.fire_virtual_watches(G_IO_OUT)
        if self.connect_pending:
            self.connect_pending = False
            self.sources.bh_schedule("pair_connect_bh")

    # ------------------------------------------------------------ output

    def chr_write(self, buf: bytes) -> int:
        """With chr_write_lock held: as much as fits; -EIO without a client."""
        if not qatomic_read(self.connected):
            return -errno.EIO
        with self.lock:
            if self.peer_closed:
                return -errno.EPIPE
            room = len(buf) if self.out_capacity is None else self.out_capacity - len(self.output)
            n = max(0, min(room, len(buf)))
            self.output += buf[:n]
            self.cond.broadcast()
        return n

    def chr_wait_writable(self) -> None:
        with self.lock:
            while (
                self.out_capacity is not None
                and len(self.output) >= self.out_capacity
                and not self.peer_closed
            ):
                self.cond.wait(self.lock)

    def chr_add_watch(self, cond: int, func: WatchFunc, opaque: Any) -> int:
        with self.chr_write_lock:
            if not qatomic_read(self.connected):
                return 0
            return self.sources.add_watch(None, cond, func, opaque)

    def _output_bh(self) -> None:
        self.sources.fire_virtual_watches(G_IO_OUT)

    def finalize(self) -> None:
        qatomic_set(self.connected, False)  # the client reads what is left, then the end
        with self.lock:
            dropped = [fd for _, chunk_fds in self.input for fd in chunk_fds]
            self.input.clear()
            self.peer_closed = True
            self.cond.broadcast()
        _close_fds(dropped + self.read_msgfds)
        self.read_msgfds = []
        qemu_chr_be_event(self, CHR_EVENT_CLOSED)
        super().finalize()


class PairClient:
    """The test's end of a :class:`PairChardev`; usable from any thread."""

    def __init__(self, chr: PairChardev) -> None:
        self.chr = chr
        with chr.lock:
            #: connections this client made (the one it starts with included)
            self.connections = chr.accepted

    def send(self, data: bytes, fds: tuple[int, ...] = ()) -> None:
        """Queue input; ``fds`` (duplicated) arrive with its first byte."""
        chr = self.chr
        with chr.lock:
            chr.input.append((bytes(data), [os.dup(fd) for fd in fds]))
        chr.sources.bh_schedule("pair_poll_bh")

    def recv(self) -> bytes:
        """Take everything the frontend wrote so far (never blocks)."""
        chr = self.chr
        with chr.lock:
            data = bytes(chr.output)
            chr.output.clear()
            chr.cond.broadcast()
        if data:
            chr.sources.bh_schedule("pair_output_bh")
        return data

    def wait_output(self, size: int, timeout: float) -> bool:
        """Wait until at least ``size`` unread output bytes are there (threaded tests).

        Returns False at the deadline, and as soon as the client's current
        connection is gone (the emulator cut it off).  After :meth:`connect`
        the current connection is the new one, which may still wait in the
        backlog: until it is accepted, the end of the old one is not the end.
        """
        chr = self.chr
        deadline = qemu_clock_get_ns(QEMU_CLOCK_REALTIME) + int(timeout * 1e9)
        with chr.lock:
            while len(chr.output) < size:
                up = chr.accepted >= self.connections
                if up and self.connections and not qatomic_read(chr.connected):
                    return False
                left = (deadline - qemu_clock_get_ns(QEMU_CLOCK_REALTIME)) / 1e9
                if left <= 0 or not chr.cond.wait(chr.lock, left):
                    return len(chr.output) >= size
        return True

    def hangup(self) -> None:
        """Close the client's end (what it has not read is gone with it)."""
        chr = self.chr
        with chr.lock:
            chr.peer_closed = True
            chr.output.clear()
            chr.cond.broadcast()
        chr.sources.bh_schedule("pair_poll_bh")

    def connect(self) -> None:
        """A new client connects (after a hang-up, or for connected=False)."""
        with self.chr.lock:
            self.connections += 1
        self.chr.sources.bh_schedule("pair_connect_bh")


def qemu_chr_new_pair(
    label: str,
    *,
    lockstep: bool = False,
    out_capacity: Optional[int] = None,
    connected: bool = True,
    context: Optional[AioContext] = None,
) -> tuple[PairChardev, PairClient]:
    """Create and register a pair chardev named ``label``; returns it and its client."""
    data: dict[str, Any] = {"lockstep": lockstep, "connected": connected}
    if out_capacity is not None:
        data["out-capacity"] = out_capacity
    chr = qemu_chardev_new(label, PairChardev, {"type": "pair", "data": data}, context)
    assert isinstance(chr, PairChardev)
    return chr, PairClient(chr)


def _close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
