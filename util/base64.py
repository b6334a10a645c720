"""Base64 as QEMU does it (util/base64.c over glib's gbase64.c).

QEMU checks the alphabet itself (``qbase64_decode``) and then lets glib
decode, and glib's decoder is lenient in ways a client can observe through
``ringbuf-write``: newlines are skipped, a trailing partial group is dropped,
and ``=`` counts as a zero digit that only suppresses output bytes when it
ends a group.  Python's :mod:`base64` rejects or reads such input
differently, so the glib algorithm is reproduced here.  Pure functions; any
thread.
"""

from __future__ import annotations

import base64

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
#: qbase64_decode accepts these characters and nothing else.
_VALID = frozenset(_ALPHABET + "=\n")
#: glib's mime_base64_rank: '=' decodes as 0; other characters are skipped.
_RANK = {ch: i for i, ch in enumerate(_ALPHABET)} | {"=": 0}


def qbase64_decode(text: str) -> bytes:
    """Decode ``text``; raise ValueError with QEMU's message if it is not base64."""
    if not _VALID.issuperset(text):
        raise ValueError("Base64 data contains invalid characters")
    return g_base64_decode(text)


def g_base64_decode(text: str) -> bytes:
    """glib's ``g_base64_decode``: every 4 ranked characters give up to 3 bytes."""
    out = bytearray()
    value = 0
    count = 0
    last = ["", ""]  # the two most recent ranked characters, newest first
    for ch in text:
        rank = _RANK.get(ch)
        if rank is None:
            continue
        last = [ch, last[0]]
        value = (value << 6 | rank) & 0xFFFFFF
        count += 1
        if count == 4:
            out.append(value >> 16)
            if last[1] != "=":
                out.append(value >> 8 & 0xFF)
            if last[0] != "=":
                out.append(value & 0xFF)
            count = 0
    return bytes(out)


def g_base64_encode(data: bytes) -> str:
    """Standard base64 with padding and no line breaks, as glib writes it."""
    return base64.b64encode(data).decode("ascii")
