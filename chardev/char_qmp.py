"""The chardev QMP commands (qmp_* of chardev/char.c and char-ringbuf.c).

Plain handlers, named as QEMU names them, with the parameters of
qapi/schema/char.json; qapi/'s ``qmp_collect_handlers`` finds them on this
module.  They run in the main loop thread with the BQL held (in-band
commands) and raise :class:`~qapi.error.QapiError` with QEMU 7.2's texts.
Nothing is left half-created when one fails.
"""

from __future__ import annotations

from typing import Any, Optional

from chardev.char import (
    CHR_EVENT_BREAK,
    Chardev,
    char_get_class,
    chardev_driver_names,
    qemu_chardev_new,
    qemu_chr_be_event,
    qemu_chr_delete,
    qemu_chr_find,
    qemu_chr_list,
)
from chardev.char_ringbuf import RingBufChardev, ringbuf_chr_read, ringbuf_chr_write
from qapi.error import QapiError, error_prepend, error_setg
from qapi.json_parser import mod_utf8_lossy
from util.base64 import g_base64_encode, qbase64_decode
from util.markers import requires_bql


@requires_bql
def qmp_chardev_add(id: str, backend: dict[str, Any]) -> dict[str, Any]:
    """Create chardev ``id``; returns ChardevReturn.

    QEMU fills ``pty`` only for the pty backend, which is not emulated, so
    the result is always ``{}``.
    """
    if qemu_chr_find(id) is not None:
        raise error_setg("Chardev with id '%s' already exists", id)
    try:
        chr = qemu_chardev_new(id, char_get_class(backend["type"]), backend, None)
    except QapiError as e:
        raise error_prepend(e, "Failed to add chardev '%s': ", id) from None
    assert chr.label == id
    return {}


@requires_bql
def qmp_chardev_remove(id: str) -> None:
    qemu_chr_delete(_find_chardev(id))


@requires_bql
def qmp_chardev_send_break(id: str) -> None:
    qemu_chr_be_event(_find_chardev(id, check_busy=False), CHR_EVENT_BREAK)


def _find_chardev(label: str, check_busy: bool = True) -> Chardev:
    chr = qemu_chr_find(label)
    if chr is None:
        raise error_setg("Chardev '%s' not found", label)
    if check_busy and chr.is_busy():
        raise error_setg("Chardev '%s' is busy", label)
    return chr


@requires_bql
def qmp_query_chardev() -> list[dict[str, Any]]:
    """Every chardev, in QEMU's order (its container walked, each prepended)."""
    return [
        {
            "label": chr.label,
            "filename": chr.filename or "",
            "frontend-open": chr.be is not None and chr.be.fe_open,
        }
        for chr in reversed(qemu_chr_list())
    ]


@requires_bql
def qmp_query_chardev_backends() -> list[dict[str, Any]]:
    return [{"name": name} for name in reversed(chardev_driver_names())]


def _find_ringbuf(device: str) -> RingBufChardev:
    chr = qemu_chr_find(device)
    if chr is None:
        raise error_setg("Device '%s' not found", device)
    if not isinstance(chr, RingBufChardev):
        raise error_setg("%s is not a ringbuf device", device)
    return chr


@requires_bql
def qmp_ringbuf_write(device: str, data: str, format: Optional[str]) -> None:
    """Put bytes into a ring buffer (not to its frontend).

    utf8 (the default) writes the string as QEMU holds it: UTF-8, with
    U+0000 as the two bytes C0 80.
    """
    chr = _find_ringbuf(device)
    if format == "base64":
        try:
            raw = qbase64_decode(data)
        except ValueError as e:
            raise error_setg("%s", str(e)) from None
    else:
        raw = data.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80")
    with chr.chr_write_lock:
        ringbuf_chr_write(chr, raw)


@requires_bql
def qmp_ringbuf_read(device: str, size: int, format: Optional[str]) -> str:
    """Take up to ``size`` bytes out of a ring buffer.

    utf8 returns the bytes as QEMU's JSON writer prints a C string: cut at
    the first NUL, each invalid sequence as U+FFFD.
    """
    chr = _find_ringbuf(device)
    if size <= 0:
        raise error_setg("size must be greater than zero")
    raw = ringbuf_chr_read(chr, size)
    if format == "base64":
        return g_base64_encode(raw)
    return mod_utf8_lossy(raw)
