"""JSON parser: the Python counterpart of QEMU's ``qobject/json-parser.c``.

Sans-I/O and thread-agnostic: pure functions from a list of tokens (as the
streamer queued them) to a Python value or a :class:`JSONError`.

Values: ``dict`` (members in the order the client wrote them), ``list``,
``str``, ``int``, ``float``, ``bool``, ``None``.  A JSON integer that fits
int64, or else uint64, becomes an ``int``; any other number becomes a
``float``, so "came from a double" stays visible as the Python type, as
QEMU's QNum kind does.

Only the first error of a message is reported, with QEMU's wording, and in
QEMU's order (left to right, a member's value before the duplicate-key
check, the key's own errors before "key is not a string").  The parser is
iterative, because QEMU allows 1024 levels of nesting and Python's default
recursion limit is lower.

This module also holds the modified UTF-8 rules of QEMU's
``util/unicode.c``, which both the string parser and error texts need.

Facts checked on QEMU 7.2 that the reference notes leave out: Unicode
noncharacters (U+FDD0..U+FDEF, U+xFFFE, U+xFFFF) are refused like
surrogates, raw (``invalid UTF-8 sequence in string``) and escaped
(``\\uFFFE is not a valid Unicode character``); a raw C0 80 is accepted as
U+0000 just like ``\\u0000``; a parser message is cut to 1023 bytes (QEMU
formats it into a 1 KiB buffer), which shows with a long invalid keyword.
"""

from __future__ import annotations

import re
from typing import Any

from qapi.json_lexer import (
    JSON_COLON,
    JSON_COMMA,
    JSON_FLOAT,
    JSON_INTEGER,
    JSON_KEYWORD,
    JSON_LCURLY,
    JSON_LSQUARE,
    JSON_RCURLY,
    JSON_RSQUARE,
    JSON_STRING,
)

__all__ = ["JSONError", "json_parser_parse", "mod_utf8_lossy"]


class JSONError:
    """A syntax or limit error for one message: data for the client, not an exception.

    ``desc`` is QEMU's exact text; the QMP monitor sends it back as a
    GenericError without an ``id``.

    Read-only by convention.  A plain class, not a frozen dataclass: that
    would import ``dataclasses`` (and ``inspect``) at every start-up.  It
    keeps a frozen dataclass's equality, hash and repr (tests compare them).
    """

    __slots__ = ("desc",)

    desc: str

    def __init__(self, desc: str) -> None:
        self.desc = desc

    def __repr__(self) -> str:
        return f"JSONError(desc={self.desc!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, JSONError) or other.__class__ is not self.__class__:
            return NotImplemented
        return self.desc == other.desc

    def __hash__(self) -> int:
        return hash((self.desc,))


class _ParseError(Exception):
    """Internal: stops parsing at the first error, carrying its message."""


# Unicode noncharacters (U+FDD0..U+FDEF and the last two code points of every
# plane): QEMU refuses them both raw and as \u escapes.
_NONCHAR_RE = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(17))
    + "]"
)
_SURROGATE_OR_NONCHAR_RE = re.compile("[\ud800-\udfff]|" + _NONCHAR_RE.pattern)


def is_valid_codepoint(cp: int) -> bool:
    """QEMU's test for a code point it will store or print as itself."""
    if cp < 0 or cp > 0x10FFFF:
        return False
    if 0xFDD0 <= cp <= 0xFDEF or (cp & 0xFFFE) == 0xFFFE:
        return False
    return not 0xD800 <= cp <= 0xDFFF


def _codepoint_at(raw: bytes, j: int) -> tuple[int, int]:
    """Decode one modified-UTF-8 sequence at ``raw[j]``: ``(cp or -1, end)``.

    Follows QEMU's ``mod_utf8_codepoint()`` exactly, including how far an
    invalid sequence reaches (that decides how many U+FFFD a bad text shows).
    The input is treated as if followed by a NUL byte, as a C string is.
    """
    byte = raw[j]
    if byte < 0x80:
        return byte, j + 1
    if byte >= 0xFE or not byte & 0x40:
        return -1, j + 1  # impossible byte or unexpected continuation byte
    length = 0
    mask = 0x80
    while byte & mask:
        length += 1
        mask >>= 1
    cp = byte & (mask - 1)
    for k in range(1, length):
        nxt = raw[j + k] if j + k < len(raw) else 0
        if nxt & 0xC0 != 0x80:
            return -1, j + k  # continuation byte missing
        cp = cp << 6 | (nxt & 0x3F)
    if not is_valid_codepoint(cp):
        return -1, j + length
    min_cp = (0x80, 0x800, 0x10000, 0x200000, 0x4000000)[length - 2]
    if cp < min_cp and not (cp == 0 and length == 2):
        return -1, j + length  # overlong, other than C0 80 for U+0000
    return cp, j + length


def mod_utf8_lossy(raw: bytes) -> str:
    """Decode bytes as QEMU's JSON writer reads a C string.

    The text ends at the first NUL (it is a C string); each invalid sequence
    becomes one U+FFFD, and C0 80 becomes U+0000.  Used for error messages
    that quote client input, such as ``stray '...'``.
    """
    nul = raw.find(b"\0")
    if nul >= 0:
        raw = raw[:nul]
    out: list[str] = []
    i = 0
    while i < len(raw):
        try:
            out.append(raw[i:].decode("utf-8"))
            break
        except UnicodeDecodeError as e:
            j = i + e.start
            out.append(raw[i:j].decode("utf-8"))
            cp, i = _codepoint_at(raw, j)
            out.append(chr(cp) if cp >= 0 else "\ufffd")
    text = "".join(out)
    if not text.isascii():
        text = _NONCHAR_RE.sub("\ufffd", text)
    return text


def _decode_raw(raw: bytes) -> str:
    """Validate and decode unescaped string bytes (modified UTF-8)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        if b"\xc0\x80" not in raw:
            raise _ParseError("invalid UTF-8 sequence in string") from None
        try:
            text = "\0".join(part.decode("utf-8") for part in raw.split(b"\xc0\x80"))
        except UnicodeDecodeError:
            raise _ParseError("invalid UTF-8 sequence in string") from None
    if not text.isascii() and _NONCHAR_RE.search(text):
        raise _ParseError("invalid UTF-8 sequence in string")
    return text


_SIMPLE_ESCAPES = {
    ord('"'): '"',
    ord("'"): "'",
    ord("\\"): "\\",
    ord("/"): "/",
    ord("b"): "\b",
    ord("f"): "\f",
    ord("n"): "\n",
    ord("r"): "\r",
    ord("t"): "\t",
}
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")


def _hex4(text: bytes, k: int) -> int:
    """Four hex digits at ``text[k]``, or -1 (QEMU's ``cvt4hex``)."""
    return int(text[k : k + 4], 16) if _HEX4.match(text, k) else -1


def _unicode_escape(text: bytes, k: int) -> tuple[str, int]:
    """Decode ``\\uXXXX`` (and a following low surrogate) at ``text[k]``.

    Returns the character and the index after the escape.  On error the
    message quotes the escape's source text as QEMU does: six bytes from
    the backslash (twelve for a surrogate pair), cut at the token's end.
    """
    cp = _hex4(text, k + 2)
    end = k + 6
    if 0xD800 <= cp <= 0xDBFF and text[end : end + 2] == b"\\u":
        low = _hex4(text, end + 2)
        if 0xDC00 <= low <= 0xDFFF:
            cp = 0x10000 + ((cp & 0x3FF) << 10) | (low & 0x3FF)
            end += 6
        else:
            cp = -1
    if not is_valid_codepoint(cp):
        quoted = mod_utf8_lossy(text[k:end])
        raise _ParseError(f"{quoted} is not a valid Unicode character")
    return chr(cp), end


def parse_string(text: bytes) -> str:
    """Decode a string token (quotes included), or raise _ParseError.

    Errors come in source order: raw bytes are checked for modified UTF-8,
    escapes for validity, whichever is met first.
    """
    last = len(text) - 1
    k = text.find(b"\\", 1, last)
    if k < 0:
        return _decode_raw(text[1:last])
    parts: list[str] = []
    pos = 1
    while k >= 0:
        if k > pos:
            parts.append(_decode_raw(text[pos:k]))
        c = text[k + 1]
        if c == 0x75:  # 'u'
            ch, pos = _unicode_escape(text, k)
            parts.append(ch)
        else:
            simple = _SIMPLE_ESCAPES.get(c)
            if simple is None:
                raise _ParseError("invalid escape sequence in string")
            parts.append(simple)
            pos = k + 2
        k = text.find(b"\\", pos, last)
    if pos < last:
        parts.append(_decode_raw(text[pos:last]))
    return "".join(parts)


def parse_integer(text: bytes) -> int | float:
    """int64 if it fits, else uint64 (non-negative only), else a double."""
    value = int(text)
    if -(1 << 63) <= value < 1 << 64:  # a negative value below int64 is a double
        return value
    return float(text)


_KEYWORDS: dict[bytes, Any] = {b"true": True, b"false": False, b"null": None}

# Frames of the explicit parse stack.
_IN_KEY = 0  # parsing a member name (any value; must turn out a string)
_IN_VALUE = 1  # parsing a member value
_IN_LIST = 2  # parsing a list element


def _scalar(typ: int, text: bytes) -> Any:
    if typ == JSON_STRING:
        return parse_string(text)
    if typ == JSON_INTEGER:
        return parse_integer(text)
    if typ == JSON_FLOAT:
        return float(text)
    if typ == JSON_KEYWORD:
        if text in _KEYWORDS:
            return _KEYWORDS[text]
        raise _ParseError(f"invalid keyword '{text.decode('ascii')}'")
    raise _ParseError("expecting value")


def _parse(types: list[int], texts: list[bytes]) -> Any:
    """Recursive descent without recursion: ``stack`` holds open containers."""
    ntok = len(types)
    pos = 0
    stack: list[list[Any]] = []  # [kind, container, pending key]

    def next_type() -> int:
        nonlocal pos
        if pos >= ntok:
            raise _ParseError("premature EOI")
        pos += 1
        return types[pos - 1]

    while True:
        # parse_value: one value starts at ``pos``.
        if pos >= ntok:
            raise _ParseError("premature EOI")
        typ = types[pos]
        pos += 1
        if typ == JSON_LCURLY or typ == JSON_LSQUARE:
            close = JSON_RCURLY if typ == JSON_LCURLY else JSON_RSQUARE
            if pos >= ntok:
                raise _ParseError("premature EOI")
            if types[pos] != close:
                if typ == JSON_LCURLY:
                    stack.append([_IN_KEY, {}, None])
                else:
                    stack.append([_IN_LIST, [], None])
                continue
            pos += 1
            value: Any = {} if typ == JSON_LCURLY else []
        else:
            value = _scalar(typ, texts[pos - 1])
        # A value is complete: hand it to the innermost open container.
        while True:
            if not stack:
                return value
            frame = stack[-1]
            kind, container = frame[0], frame[1]
            if kind == _IN_KEY:
                if not isinstance(value, str):
                    raise _ParseError("key is not a string in object")
                if next_type() != JSON_COLON:
                    raise _ParseError("missing : in object pair")
                frame[0], frame[2] = _IN_VALUE, value
                break
            if kind == _IN_VALUE:
                if frame[2] in container:
                    raise _ParseError("duplicate key")
                container[frame[2]] = value
                sep = next_type()
                if sep == JSON_COMMA:
                    frame[0] = _IN_KEY
                    break
                if sep != JSON_RCURLY:
                    raise _ParseError("expected separator in dict")
            else:
                container.append(value)
                sep = next_type()
                if sep == JSON_COMMA:
                    break
                if sep != JSON_RSQUARE:
                    raise _ParseError("expected separator in list")
            stack.pop()
            value = container


def json_parser_parse(types: list[int], texts: list[bytes]) -> Any:
    """Parse one message's tokens: a value, or a :class:`JSONError`.

    QEMU formats parser messages into a 1024-byte buffer, so an overlong
    one (a huge invalid keyword) is cut to 1023 bytes before the
    ``JSON parse error, `` prefix is added.
    """
    try:
        return _parse(types, texts)
    except _ParseError as e:
        msg = str(e)
        if len(msg) > 1023:
            msg = mod_utf8_lossy(msg.encode("utf-8", "surrogatepass")[:1023])
        return JSONError(f"JSON parse error, {msg}")
