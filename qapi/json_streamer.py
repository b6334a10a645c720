"""JSON message streamer: the Python counterpart of QEMU's ``qobject/json-streamer.c``.

Sans-I/O and thread-agnostic, in the style of h11: :class:`JSONMessageParser`
takes bytes and gives back complete top-level messages, each a parsed value
or a :class:`~qapi.json_parser.JSONError`.  It owns no socket, thread or
lock; the monitor calls it from whichever thread reads its chardev.

QEMU behaviour kept, because a client can see it:

* a message is complete when the ``{``/``[`` and ``}``/``]`` counts are back
  to zero, or one of them goes negative; a top-level scalar is therefore a
  message of its own, and a number or keyword at the very end of the input
  stays pending until the next byte;
* limits, checked before each token is queued: 64 MiB of token text
  (``JSON token size limit exceeded``), 2 Mi tokens (``JSON token count
  limit exceeded``), 1024 open brackets and braces (``JSON nesting depth
  limit exceeded``).  After a limit error or a lexical error the queue and
  counts are dropped and lexing simply continues, so the rest of an
  oversized message is read as fresh input and usually yields more errors;
* ``flush()`` ends the input (QMP monitors never call it).

Where the project's reference notes (``qmp-spec.md`` section 3) are loose,
this follows QEMU 7.2, checked on a real one:

* the size limit is "bytes of the tokens already queued + this token + 1
  > 64 MiB": a single +1, not one per token (``[`` + a string of
  64 MiB - 3 bytes + ``]`` is still accepted; one byte more is not);
  whitespace never counts;
* a message also ends when the brace count *or* the bracket count goes
  negative (``[1}`` ends at the ``}``; some older QEMU only looked at the
  brackets);
* the text in ``stray '...'`` is a C string: it ends at a NUL byte (a
  0x00 byte gives ``stray ''``), and each malformed UTF-8 sequence in it
  shows as one U+FFFD, however many bytes it has;
* ``premature EOI`` can only come from ``flush()``, so a QMP client never
  sees it, and ``Missing value in dict`` cannot happen at all.

Performance: QEMU lexes byte by byte.  Here, whenever the streamer is
between messages and the next byte opens an object or array, it first asks
the C scanner of :mod:`json` for the whole value in one call, then proves
with C-speed checks that QEMU would have produced exactly the same value
at exactly the same end: ASCII only (so no UTF-8 questions), no ``NaN`` or
``Infinity`` (json accepts them), no duplicate key (json keeps the last),
no integer that may not fit int64, no ``0e5`` (json reads a number, QEMU a
zero and a keyword), no ``\\u`` escape for a surrogate or noncharacter, and
no size, count or depth limit within reach.  Anything else, including a
message split across chunks, goes through the faithful token-by-token path
(:mod:`qapi.json_lexer`, :mod:`qapi.json_parser`), which is exact by
construction; the fast path only ever has to be right when it says yes.
"""

from __future__ import annotations

import json
import re
from typing import Any, Optional, overload

from qapi.json_lexer import (
    IN_START,
    JSON_END_OF_INPUT,
    JSON_ERROR,
    JSON_LCURLY,
    JSON_LSQUARE,
    JSON_RCURLY,
    JSON_RSQUARE,
    MAX_TOKEN_SIZE,
    JSONLexer,
)
from qapi.json_parser import JSONError, json_parser_parse, mod_utf8_lossy

__all__ = [
    "MAX_NESTING",
    "MAX_TOKEN_COUNT",
    "MAX_TOKEN_SIZE",
    "JSONError",
    "JSONMessageParser",
]

MAX_TOKEN_COUNT = 2 << 20
MAX_NESTING = 1 << 10

_WS = re.compile(rb"[ \t\r\n]*").match
#: Bytes decoded at a time for the C scanner when the caller wants only a
#: few messages (most QMP requests are far smaller).
_WINDOW = 4096
_NON_ASCII = re.compile(rb"[\x80-\xff]")
# \u escapes json would turn into a lone surrogate or a noncharacter, which
# QEMU rejects.  Over-matching (e.g. an escaped backslash before "uD800") only
# costs a trip through the exact path.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:[dD][89a-fA-F]|[fF][dD][dDeE]|[fF]{3}[eEfF])")


class _Fallback(Exception):
    """The fast path cannot vouch for this message; use the exact path."""


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _Fallback  # duplicate key: QEMU reports an error
    return obj


def _parse_int(text: str) -> int:
    if len(text) > 18:
        raise _Fallback  # may not fit int64: QEMU picks uint64 or double
    return int(text)


def _parse_float(text: str) -> float:
    if "." not in text and (text[0] == "0" or text[:2] == "-0"):
        raise _Fallback  # "0e5": QEMU lexes the number 0, then a keyword
    return float(text)


def _parse_constant(text: str) -> Any:
    raise _Fallback  # NaN, Infinity: lexical errors in QEMU


_DECODER = json.JSONDecoder(
    object_pairs_hook=_object_pairs,
    parse_int=_parse_int,
    parse_float=_parse_float,
    parse_constant=_parse_constant,
)
_SCAN = _DECODER.scan_once  # type: ignore[attr-defined]


def _within_limits(s: str, start: int, end: int) -> bool:
    """Cheap upper bounds proving no streamer limit is hit in ``s[start:end]``."""
    if s.count("{", start, end) + s.count("[", start, end) > MAX_NESTING:
        return False
    size = end - start
    if size + 1 > MAX_TOKEN_SIZE:
        return False
    if size > MAX_TOKEN_COUNT:
        # Every scalar follows '[', ',' or ':', so tokens <= 2 * structural.
        structural = sum(s.count(c, start, end) for c in "{}[]:,")
        if 2 * structural > MAX_TOKEN_COUNT:
            return False
    return True


def _scan(text: str, start: int) -> Optional[tuple[Any, int]]:
    """The value starting at ``text[start]`` and its end, if QEMU would agree."""
    try:
        value, end = _SCAN(text, start)
    except (ValueError, StopIteration, RecursionError, _Fallback):
        return None
    if text.find("\\", start, end) >= 0 and _SUSPECT_ESCAPE.search(text, start, end):
        return None
    # Fewer than 2050 characters cannot hold 1025 balanced openers.
    if end - start >= 2050 and not _within_limits(text, start, end):
        return None
    return value, end


def _decode_region(data: bytes, start: int, end: int) -> tuple[str, bool]:
    """``data[start:end]`` decoded for the C scanner, and whether it was cut short.

    Stops before the first non-ASCII byte: messages with non-ASCII bytes
    take the exact path, which checks QEMU's modified UTF-8 rules.
    """
    chunk = data if start == 0 and end == len(data) else data[start:end]
    if chunk.isascii():
        return chunk.decode("ascii"), end < len(data)
    m = _NON_ASCII.search(chunk)
    assert m is not None
    return chunk[: m.start()].decode("ascii"), False


class JSONMessageParser:
    """QEMU's JSONMessageParser: lexer, token queue, limits and parser.

    ``feed(data)`` returns the messages completed by a chunk;
    ``feed(data, max_messages)`` stops early so a monitor can take input
    exactly as far as QEMU's one-byte-at-a-time reads would have before it
    suspended, and says how far that was.
    """

    def __init__(self, fast_path: bool = True) -> None:
        """``fast_path=False`` forces the byte-exact path for every message,
        for differential tests and for readers who want to watch QEMU's
        algorithm alone; results are the same either way."""
        self._fast_path = fast_path
        self._lexer = JSONLexer(self._process_token)
        self._types: list[int] = []
        self._texts: list[bytes] = []
        self._brace_count = 0
        self._bracket_count = 0
        self._token_size = 0
        self._out: list[Any] = []
        self._quota = 0

    def reset(self) -> None:
        """Drop any partial message, silently (QEMU re-creates the parser
        when the chardev closes)."""
        self._lexer.reset()
        self._drop_tokens()

    @overload
    def feed(self, data: bytes) -> list[Any]: ...

    @overload
    def feed(self, data: bytes, max_messages: int) -> tuple[list[Any], int]: ...

    def feed(
        self, data: bytes, max_messages: Optional[int] = None
    ) -> list[Any] | tuple[list[Any], int]:
        """Consume ``data``; return the messages it completed, in order.

        Without ``max_messages`` all of ``data`` is consumed and the list of
        messages is returned.

        With ``max_messages`` consumption stops once that many messages are
        complete, and ``(messages, consumed)`` is returned: the caller keeps
        ``data[consumed:]`` and offers it again later.  ``consumed`` counts
        the bytes QEMU's monitor would have read, one at a time, up to and
        including the byte that completed the last message.  One byte can
        complete two messages (in ``42}`` the ``}`` ends the number and is
        itself a stray closer), so the list may be longer than asked; it is
        never cut in the middle of a byte.
        """
        if max_messages is None:
            return self._run(data, 0)[0]
        if max_messages < 1:
            raise ValueError("max_messages must be at least 1")
        return self._run(data, max_messages)

    def flush(self) -> list[Any]:
        """End of input: finish a pending number/keyword, report the rest.

        Queued tokens of an unfinished message are parsed, which usually
        gives ``JSON parse error, premature EOI``.
        """
        self._out, self._quota = [], 0
        self._lexer.flush()
        out, self._out = self._out, []
        return out

    # -- the loop -----------------------------------------------------------

    def _run(self, data: bytes, quota: int) -> tuple[list[Any], int]:
        if not isinstance(data, bytes):
            data = bytes(data)
        out: list[Any] = []
        self._out = out
        self._quota = quota
        lexer = self._lexer
        n = len(data)
        j = 0
        try:
            while j < n:
                if self._fast_path and lexer.state == IN_START and not self._types:
                    j = self._fast(data, j, n)
                    if j >= n or (quota and len(out) >= quota):
                        break
                lexer.yield_at_start = False
                j = lexer.feed(data, j, n)
                if quota and len(out) >= quota:
                    break
        finally:
            self._out = []
        return out, j

    def _fast(self, data: bytes, j: int, n: int) -> int:
        """Take whole objects/arrays at C speed while that is provably exact.

        Returns the offset where it stopped: everything before it has been
        consumed (whitespace included), and the exact path resumes there.
        The C scanner reads ``text``, the ASCII region ``data[base:]``
        decoded once per call (only a window of it when taking one message
        at a time: most QMP requests are far smaller); being local, it never
        keeps input alive between calls.
        """
        out = self._out
        quota = self._quota
        text, base, cut = "", 0, False
        while True:
            j = _WS(data, j, n).end()  # type: ignore[union-attr]
            if j >= n or data[j] not in b"{[":
                return j
            if not base <= j < base + len(text):
                text, cut = _decode_region(data, j, min(n, j + _WINDOW) if quota else n)
                base = j
            found = _scan(text, j - base)
            if found is None and cut:
                text, cut = _decode_region(data, j, n)  # perhaps it did not fit
                base = j
                found = _scan(text, 0)
            if found is None:
                return j
            out.append(found[0])
            j = base + found[1]
            if quota and len(out) >= quota:
                return j

    # -- json_message_process_token() ---------------------------------------

    def _process_token(self, typ: int, text: bytes, size: int) -> bool:
        """Queue one token; emit a message when one is complete.

        Returns True when the caller's message quota is reached.
        """
        if typ == JSON_LCURLY:
            self._brace_count += 1
        elif typ == JSON_RCURLY:
            self._brace_count -= 1
        elif typ == JSON_LSQUARE:
            self._bracket_count += 1
        elif typ == JSON_RSQUARE:
            self._bracket_count -= 1
        elif typ == JSON_ERROR:
            return self._emit(JSONError(f"JSON parse error, stray '{mod_utf8_lossy(text)}'"))
        elif typ == JSON_END_OF_INPUT:
            if not self._types:
                return False
            return self._emit(json_parser_parse(self._types, self._texts))
        # Limits: checked before queueing, so the offending token is dropped too.
        if self._token_size + size + 1 > MAX_TOKEN_SIZE:
            return self._emit(JSONError("JSON token size limit exceeded"))
        if len(self._types) + 1 > MAX_TOKEN_COUNT:
            return self._emit(JSONError("JSON token count limit exceeded"))
        if self._brace_count + self._bracket_count > MAX_NESTING:
            return self._emit(JSONError("JSON nesting depth limit exceeded"))
        self._types.append(typ)
        self._texts.append(text)
        self._token_size += size
        brace, bracket = self._brace_count, self._bracket_count
        if (brace > 0 or bracket > 0) and brace >= 0 and bracket >= 0:
            return False
        return self._emit(json_parser_parse(self._types, self._texts))

    def _emit(self, message: Any) -> bool:
        self._drop_tokens()
        self._out.append(message)
        self._lexer.yield_at_start = True
        return bool(self._quota) and len(self._out) >= self._quota

    def _drop_tokens(self) -> None:
        self._types = []
        self._texts = []
        self._brace_count = 0
        self._bracket_count = 0
        self._token_size = 0
