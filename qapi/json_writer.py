"""JSON writer: the Python counterpart of QEMU's ``qobject/json-writer.c``
(with the QDict iteration order of ``qobject/qdict.c`` and the UTF-8 rules
of ``util/unicode.c``).

Sans-I/O and thread-agnostic: pure functions, safe from any thread; the
only shared state is a bounded cache of member orders.

Replies must be byte-identical to QEMU's, so the writer copies:

* member order: a QDict is a 512-bucket hash table walked from bucket 0
  up, newest member first within a bucket (see :func:`qdict_order`); the
  Python dict's insertion order plays the role of QEMU's insertion order;
* layout: ``", "`` and ``": "`` when compact; with ``pretty`` four spaces
  per level and an *empty* container still opened and closed on separate
  lines (``{`` newline ``}``);
* strings: ASCII only; ``\\" \\\\ \\b \\f \\n \\r \\t``; every other
  character below 0x20 or from 0x7F up as ``\\uXXXX`` with upper-case hex,
  astral characters as surrogate pairs, ``/`` left alone; what QEMU's
  modified UTF-8 decoder rejects as ``\\uFFFD`` -- not only invalid UTF-8,
  as the reference notes say, but also noncharacters such as U+FFFF
  (QEMU 7.2 prints ``\\uFFFD`` for them) and lone surrogates;
* numbers: ``int`` as int64/uint64 text, ``float`` with C's ``%.17g``
  (``inf``, ``-0``, ``0.10000000000000001``).

Speed: the compact form is produced by :mod:`json`'s C encoder on a copy
whose dicts are re-ordered, then ``\\u`` escapes are upper-cased and DEL
escaped; that gives exactly QEMU's bytes.  Values holding floats (json
prints ``repr``) and pretty output take a plain Python encoder.
"""

from __future__ import annotations

import json
import math
import re
from _json import make_encoder
from collections.abc import Iterable
from functools import lru_cache
from typing import Any, Callable

from qapi.json_parser import is_valid_codepoint

__all__ = ["QDICT_BUCKET_MAX", "qdict_keys", "qdict_order", "tdb_hash", "to_json"]

QDICT_BUCKET_MAX = 512

_encode_str: Callable[[str], str] = json.encoder.encode_basestring_ascii
#: json's C encoder, made once (``json.JSONEncoder.encode`` makes a new one
#: per call): no circularity check, ", " and ": ", ASCII-only strings.  Only
#: :func:`_reorder`'s output reaches it, so its ``default`` never runs.
_C_ENCODE = make_encoder(
    None, json.JSONEncoder().default, _encode_str, None, ": ", ", ", False, False, False
)

# Escapes emitted by the json encoder: an escaped backslash (kept as is, and
# matched so its "u" is not mistaken for an escape), a surrogate pair, or a
# single \u escape (hex in lower case).
_U_ESCAPE = re.compile(r"\\\\|\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})")
_PLAIN = re.compile(r"[ !#-\[\]-~]*").fullmatch


def tdb_hash(key: str) -> int:
    """QDict's bucket hash (``tdb_hash()``) of ``key``'s modified UTF-8 bytes."""
    if type(key) is not str:
        raise TypeError(f"QDict keys are strings, not {type(key).__name__}")
    raw = key.encode("utf-8", "surrogatepass").replace(b"\0", b"\xc0\x80")
    value = (0x238F13AF * len(raw)) & 0xFFFFFFFF
    for i, byte in enumerate(raw):
        value = (value + (byte << (i * 5 % 24))) & 0xFFFFFFFF
    return (1103515243 * value + 12345) & 0xFFFFFFFF


@lru_cache(maxsize=4096)
def _qdict_order(keys: tuple[str, ...]) -> tuple[str, ...]:
    buckets = [tdb_hash(k) % QDICT_BUCKET_MAX for k in keys]
    order = sorted(range(len(keys)), key=lambda i: (buckets[i], -i))
    return tuple(keys[i] for i in order)


def qdict_order(keys: Iterable[str]) -> tuple[str, ...]:
    """The order QEMU iterates a QDict whose members were added as ``keys``.

    Buckets ascend; within a bucket the most recently added key comes first
    (``qdict_first()``/``qdict_next()``).  Cached per tuple of keys (the
    insertion order matters within a bucket), so a reply of a known shape
    costs one dictionary lookup.  The cache is bounded, because keys can
    come from clients (an ``id`` object is echoed back).
    """
    return _qdict_order(keys if type(keys) is tuple else tuple(keys))


def qdict_keys(obj: dict[str, Any]) -> tuple[str, ...]:
    """``obj``'s keys in QDict iteration order.

    The dispatcher uses it to pick the member QEMU would complain about
    first, since QEMU walks a request's members in this order.
    """
    return _qdict_order(tuple(obj))


def _fix_escape(m: re.Match[str]) -> str:
    single = m.group(3)
    if single is not None:
        cp = int(single, 16)
        return "\\u" + single.upper() if is_valid_codepoint(cp) else "\\uFFFD"
    high = m.group(1)
    if high is None:
        return m.group(0)  # an escaped backslash
    low = m.group(2)
    cp = 0x10000 + ((int(high, 16) - 0xD800) << 10) + int(low, 16) - 0xDC00
    if not is_valid_codepoint(cp):
        return "\\uFFFD"
    return f"\\u{high.upper()}\\u{low.upper()}"


def _fix_escapes(text: str) -> str:
    """Turn json's escapes into QEMU's: upper-case hex, DEL escaped, bad code points U+FFFD."""
    if "\\u" in text:
        text = _U_ESCAPE.sub(_fix_escape, text)
    if "\x7f" in text:
        text = text.replace("\x7f", "\\u007F")
    return text


def quoted_str(text: str) -> str:
    """One JSON string literal, exactly as QEMU's ``quoted_str()`` writes it."""
    if _PLAIN(text):
        return f'"{text}"'
    return _fix_escapes(_encode_str(text))


def format_double(value: float) -> str:
    """C's ``%.17g`` as glibc prints it (``-nan`` for a NaN with the sign bit)."""
    if math.isnan(value):
        return "-nan" if math.copysign(1.0, value) < 0 else "nan"
    return format(value, ".17g")


class _NeedsPython(Exception):
    """The value holds something the C encoder would print differently."""


#: Far beyond anything QEMU can parse (1024 levels); only a cycle gets here.
_MAX_DEPTH = 100_000
_INT_MIN = -(1 << 63)
_UINT_MAX = (1 << 64) - 1


def _check_int(value: int) -> None:
    if not _INT_MIN <= value <= _UINT_MAX:
        raise ValueError(f"integer {value} fits neither int64 nor uint64")


def _reorder(value: Any) -> Any:
    """A copy of ``value`` with every dict in QDict order, for the C encoder.

    Scalars are checked inline: this walk is the writer's only per-node
    Python cost, so it avoids a call per leaf.
    """
    cls = type(value)
    if cls is dict:
        out = {}
        for key in _qdict_order(tuple(value)):
            item = value[key]
            kind = type(item)
            if kind is str or kind is bool or item is None:
                out[key] = item
            elif kind is int and _INT_MIN <= item <= _UINT_MAX:
                out[key] = item
            else:
                out[key] = _reorder(item)
        return out
    if cls is list or cls is tuple:
        return [_reorder(item) for item in value]
    if cls is str or cls is bool or value is None:
        return value
    if cls is int:
        _check_int(value)
        return value
    raise _NeedsPython


def _scalar(value: Any) -> str:
    cls = type(value)
    if cls is str:
        return quoted_str(value)
    if value is None:
        return "null"
    if cls is bool:
        return "true" if value else "false"
    if cls is int:
        _check_int(value)
        return str(value)
    if cls is float:
        return format_double(value)
    raise TypeError(f"cannot write {cls.__name__} as JSON")


def _write(value: Any, pretty: bool) -> str:
    """The general encoder, following json-writer.c's layout rules.

    Iterative, because QEMU accepts 1024 levels of nesting in a request and
    echoes the ``id`` back, deeper than Python's default recursion limit.
    """
    out: list[str] = []
    # Open containers: [container, keys (None for a list), next index, depth].
    stack: list[list[Any]] = []
    depth = 0
    while True:
        cls = type(value)
        if cls is dict or cls is list or cls is tuple:
            if len(stack) >= _MAX_DEPTH:
                raise ValueError("value nested too deeply (a reference cycle?)")
            if cls is dict:
                out.append("{")
                stack.append([value, _qdict_order(tuple(value)), 0, depth])
            else:
                out.append("[")
                stack.append([value, None, 0, depth])
        else:
            out.append(_scalar(value))
        while stack:
            frame = stack[-1]
            container, keys, index, depth = frame
            if index < len(container):
                frame[2] = index + 1
                if pretty:
                    out.append(("," if index else "") + "\n" + "    " * (depth + 1))
                elif index:
                    out.append(", ")
                if keys is None:
                    value = container[index]
                else:
                    out.append(quoted_str(keys[index]))
                    out.append(": ")
                    value = container[keys[index]]
                depth += 1
                break
            if pretty:
                out.append("\n" + "    " * depth)  # also for an empty container
            out.append("]" if keys is None else "}")
            stack.pop()
        else:
            return "".join(out)


def to_json(value: Any, pretty: bool = False) -> str:
    """Serialise ``value`` as QEMU would (``qobject_to_json[_pretty]()``).

    The result is ASCII text without a trailing newline; the monitor adds
    the line end (and turns every newline into CRLF).
    """
    if not pretty:
        try:
            return _fix_escapes("".join(_C_ENCODE(_reorder(value), 0)))
        except (_NeedsPython, RecursionError):
            pass  # a float, something to reject, or very deep nesting
    return _write(value, pretty)
