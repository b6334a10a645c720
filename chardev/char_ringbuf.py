"""The ring-buffer backend (chardev/char-ringbuf.c), also named ``memory``.

The frontend's output is kept in a power-of-two sized ring that overwrites
its oldest bytes; ``ringbuf-read`` takes bytes out and ``ringbuf-write``
puts bytes in (without sending them to the frontend).  Writes come from the
frontend's threads and from QMP (main loop); the ring is protected by the
chardev's ``chr_write_lock``.
"""

from __future__ import annotations

from typing import Any

from chardev.char import Chardev, type_register
from qapi.error import error_setg
from util.qemu_option import QemuOpts, qemu_opt_get_size


@type_register
class RingBufChardev(Chardev):
    typename = "chardev-ringbuf"
    kind = "ringbuf"
    abstract = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: protected by chr_write_lock: the ring and its free-running indices
        self.size = 0
        self.cbuf = bytearray()
        self.prod = 0
        self.cons = 0

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        # QEMU keeps the size in a C int here: larger values wrap around
        val = (qemu_opt_get_size(opts, "size", 0) + (1 << 31)) % (1 << 32) - (1 << 31)
        if val != 0:
            data["size"] = val

    def open(self, data: dict[str, Any]) -> bool:
        size = data.get("size", 65536)
        if size & (size - 1):
            raise error_setg("size of ringbuf chardev must be power of two")
        self.size = size
        self.cbuf = bytearray(size)
        return True

    def chr_write(self, buf: bytes) -> int:
        return ringbuf_chr_write(self, buf)

    def count(self) -> int:
        """Bytes stored (ringbuf_count); caller holds chr_write_lock."""
        return self.prod - self.cons


def ringbuf_chr_write(d: RingBufChardev, buf: bytes) -> int:
    """Append ``buf``, overwriting the oldest bytes; caller holds chr_write_lock.

    A size-0 ring (QEMU accepts it, then overruns its empty buffer) keeps
    nothing here.
    """
    n = len(buf)
    if d.size:
        tail = buf[-d.size :]  # only the newest ``size`` bytes survive
        start = (d.prod + n - len(tail)) & (d.size - 1)
        first = min(len(tail), d.size - start)
        d.cbuf[start : start + first] = tail[:first]
        d.cbuf[: len(tail) - first] = tail[first:]
    d.prod += n
    d.cons = max(d.cons, d.prod - d.size)
    return n


def ringbuf_chr_read(d: RingBufChardev, size: int) -> bytes:
    """Take up to ``size`` of the oldest bytes."""
    with d.chr_write_lock:
        n = min(size, d.count())
        if n == 0:
            return b""
        start = d.cons & (d.size - 1)
        out = bytes(d.cbuf[start : start + n])
        out += bytes(d.cbuf[: n - len(out)])
        d.cons += n
    return out


@type_register
class MemoryChardev(RingBufChardev):
    """The deprecated ``memory`` name for a ringbuf (bug-compatibility)."""

    typename = "chardev-memory"
