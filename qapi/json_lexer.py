"""JSON lexer: the Python counterpart of QEMU's ``qobject/json-lexer.c``.

Sans-I/O and thread-agnostic: a :class:`JSONLexer` owns no socket, lock or
thread.  It is fed bytes by whoever owns it (in the monitor: the thread that
reads the chardev, the I/O thread or the main loop) and hands every token to
a *sink* callable, exactly as QEMU's lexer calls
``json_message_process_token()``.

What is kept from QEMU, because clients can observe it:

* the same states and transitions (RFC 8259 plus single-quoted strings and
  the ``\\'`` escape; keywords are any ``[a-z]+``, numbers and keywords end
  only when the next byte arrives);
* string contents are not validated here: any byte 0x20-0xFD is accepted and
  the parser checks UTF-8 and escapes later;
* a byte with no valid transition makes a ``JSON_ERROR`` token whose text is
  the partial token *including* that byte, then the lexer skips input until a
  structural character, an ASCII control character other than tab, or 0xFE /
  0xFF, which is handed back to the start state (so it can itself be another
  error);
* a token that grows past 64 MiB is handed over unfinished (its "type" is the
  lexer state, which the streamer rejects for its size) and lexing restarts
  in the start state in the middle of it.

What is different is the loop: QEMU takes one byte per call.  Here each
state that loops on itself (whitespace, string bodies, digit runs, keyword
letters, recovery) consumes its whole run with one compiled regular
expression, so a 1 MiB string costs one C-level scan, and Python code runs
once per token, not once per byte.
"""

from __future__ import annotations

import re
from typing import Callable, Optional

MAX_TOKEN_SIZE = 64 << 20

# Token types (QEMU: JSONTokenType in json-parser-int.h).  They are kept
# numerically apart from the lexer states below, because an over-long token
# is handed to the sink with its *state* as its type, as QEMU does.
JSON_ERROR = 0
JSON_LCURLY = 100
JSON_RCURLY = 101
JSON_LSQUARE = 102
JSON_RSQUARE = 103
JSON_COLON = 104
JSON_COMMA = 105
JSON_INTEGER = 106
JSON_FLOAT = 107
JSON_KEYWORD = 108
JSON_STRING = 109
JSON_END_OF_INPUT = 110
JSON_MIN = JSON_LCURLY

# Lexer states (QEMU: enum json_lexer_state).
IN_RECOVERY = 1
IN_DQ_STRING_ESCAPE = 2
IN_DQ_STRING = 3
IN_SQ_STRING_ESCAPE = 4
IN_SQ_STRING = 5
IN_ZERO = 6
IN_EXP_DIGITS = 7
IN_EXP_SIGN = 8
IN_EXP_E = 9
IN_MANTISSA = 10
IN_MANTISSA_DIGITS = 11
IN_DIGITS = 12
IN_SIGN = 13
IN_KEYWORD = 14
IN_START = 15
_NUM_STATES = 16

#: Flag on a transition: the byte is not part of the token just finished and
#: must be looked at again from the start state.
LOOKAHEAD = 0x1000

#: sink(type, text, size) -> stop.  ``text`` is the token's bytes (empty for
#: an over-long token, whose length is ``size``).  Returning True asks the
#: lexer to stop once it has finished with the byte being processed.
TokenSink = Callable[[int, bytes, int], bool]

_DIGITS = b"0123456789"
_LOWER = bytes(range(ord("a"), ord("z") + 1))
_WHITESPACE = b" \t\r\n"


def _build_table() -> list[list[int]]:
    """Transition table: ``table[state][byte]`` is the next state or token type.

    Anything not listed is ``JSON_ERROR`` (0), the same default QEMU relies on.
    """
    t = [[JSON_ERROR] * 256 for _ in range(_NUM_STATES)]

    def put(state: int, chars: bytes | range, nxt: int) -> None:
        for c in chars:
            t[state][c] = nxt

    # Recovery: skip until a promising resynchronisation point.
    put(IN_RECOVERY, range(0x00, 0x20), IN_START | LOOKAHEAD)
    put(IN_RECOVERY, range(0x20, 0xFE), IN_RECOVERY)
    put(IN_RECOVERY, b"\xfe\xff", IN_START | LOOKAHEAD)
    put(IN_RECOVERY, b"\t", IN_RECOVERY)
    put(IN_RECOVERY, b"[]{}:,", IN_START | LOOKAHEAD)
    # Strings: bodies take 0x20-0xFD, the escape takes any one of those.
    for body, esc, quote in (
        (IN_DQ_STRING, IN_DQ_STRING_ESCAPE, b'"'),
        (IN_SQ_STRING, IN_SQ_STRING_ESCAPE, b"'"),
    ):
        put(esc, range(0x20, 0xFE), body)
        put(body, range(0x20, 0xFE), body)
        put(body, b"\\", esc)
        put(body, quote, JSON_STRING)
    # Numbers.
    put(IN_ZERO, range(256), JSON_INTEGER | LOOKAHEAD)
    put(IN_ZERO, _DIGITS, JSON_ERROR)
    put(IN_ZERO, b".", IN_MANTISSA)
    put(IN_EXP_DIGITS, range(256), JSON_FLOAT | LOOKAHEAD)
    put(IN_EXP_DIGITS, _DIGITS, IN_EXP_DIGITS)
    put(IN_EXP_SIGN, _DIGITS, IN_EXP_DIGITS)
    put(IN_EXP_E, b"-+", IN_EXP_SIGN)
    put(IN_EXP_E, _DIGITS, IN_EXP_DIGITS)
    put(IN_MANTISSA_DIGITS, range(256), JSON_FLOAT | LOOKAHEAD)
    put(IN_MANTISSA_DIGITS, _DIGITS, IN_MANTISSA_DIGITS)
    put(IN_MANTISSA_DIGITS, b"eE", IN_EXP_E)
    put(IN_MANTISSA, _DIGITS, IN_MANTISSA_DIGITS)
    put(IN_DIGITS, range(256), JSON_INTEGER | LOOKAHEAD)
    put(IN_DIGITS, _DIGITS, IN_DIGITS)
    put(IN_DIGITS, b"eE", IN_EXP_E)
    put(IN_DIGITS, b".", IN_MANTISSA)
    put(IN_SIGN, b"0", IN_ZERO)
    put(IN_SIGN, b"123456789", IN_DIGITS)
    # Keywords: any run of lower-case letters; the parser judges them.
    put(IN_KEYWORD, range(256), JSON_KEYWORD | LOOKAHEAD)
    put(IN_KEYWORD, _LOWER, IN_KEYWORD)
    # Start state (QMP never enables interpolation, so '%' is an error).
    put(IN_START, b'"', IN_DQ_STRING)
    put(IN_START, b"'", IN_SQ_STRING)
    put(IN_START, b"0", IN_ZERO)
    put(IN_START, b"123456789", IN_DIGITS)
    put(IN_START, b"-", IN_SIGN)
    put(IN_START, b"{", JSON_LCURLY)
    put(IN_START, b"}", JSON_RCURLY)
    put(IN_START, b"[", JSON_LSQUARE)
    put(IN_START, b"]", JSON_RSQUARE)
    put(IN_START, b",", JSON_COMMA)
    put(IN_START, b":", JSON_COLON)
    put(IN_START, _LOWER, IN_KEYWORD)
    put(IN_START, _WHITESPACE, IN_START)
    return t


#: The transition table and its start row; built with the run matchers on
#: the first ``feed`` (a flush before any feed finds the lexer at the start)
_TABLE: list[list[int]] = []
_START_ROW: list[int] = []

_Matcher = Callable[[bytes, int, int], Optional["re.Match[bytes]"]]


def _run_matcher(state: int) -> Optional[_Matcher]:
    """A compiled matcher for the bytes that keep ``state`` in place, if any.

    Derived from the table itself so the fast scan can never disagree with
    the byte-by-byte definition.  (It always matches, possibly empty.)
    """
    loop = bytes(c for c in range(256) if _TABLE[state][c] == state)
    if not loop:
        return None
    cls = "".join(f"\\x{c:02x}" for c in loop)
    return re.compile(f"[{cls}]*".encode()).match


# The table and the run matchers are built on the first ``feed``, not at
# import: that takes a few milliseconds, which start-up (and the greeting)
# need not wait for.  ``_RUNS`` is assigned last, so whoever sees it also
# sees the others.
_RUNS: Optional[list[Optional[_Matcher]]] = None
_WS_RUN: _Matcher
_RECOVERY_RUN: _Matcher


def _compile_runs() -> list[Optional[_Matcher]]:
    """Build the table and the run matchers (once; a racing second build is harmless)."""
    global _TABLE, _START_ROW, _RUNS, _WS_RUN, _RECOVERY_RUN
    _TABLE = _build_table()
    _START_ROW = _TABLE[IN_START]
    runs = [_run_matcher(state) for state in range(_NUM_STATES)]
    _WS_RUN = runs[IN_START] or re.compile(b"").match
    _RECOVERY_RUN = runs[IN_RECOVERY] or re.compile(b"").match
    _RUNS = runs
    return runs


class JSONLexer:
    """QEMU's JSONLexer: bytes in, tokens out through ``sink``.

    The token being built when a chunk ends is kept (``_partial``) so the
    next chunk continues it; nothing else of the input is retained.
    """

    def __init__(self, sink: TokenSink) -> None:
        self._sink = sink
        self.state = IN_START
        self._partial = bytearray()
        #: Set by the owner when the lexer should return control as soon as
        #: it is back in the start state (see ``feed``).
        self.yield_at_start = False

    def reset(self) -> None:
        """Forget any partial token (QEMU destroys and re-creates the lexer)."""
        self.state = IN_START
        self._partial = bytearray()
        self.yield_at_start = False

    def feed(self, data: bytes, i: int, n: int) -> int:
        """Lex ``data[i:n]``; return the offset up to which input was consumed.

        Returns early, with the offset of the first unconsumed byte, in two
        cases: the sink asked to stop (then every consequence of the byte that
        triggered the request has been processed, as when QEMU's monitor reads
        one byte at a time), or ``yield_at_start`` is set and the lexer is
        back in the start state, so the owner can try its fast path there.
        """
        runs = _RUNS
        if runs is None:
            runs = _compile_runs()
        table = _TABLE
        sink = self._sink
        state = self.state
        partial = self._partial
        plen = len(partial)
        tok = i  # start of the current token inside data
        stopping = False
        while i < n:
            if state == IN_START:
                if self.yield_at_start and not stopping:
                    break
                i = _WS_RUN(data, i, n).end()  # type: ignore[union-attr]
                if i >= n:
                    break
                tok = i
                nxt = _START_ROW[data[i]]
                i += 1
                if nxt >= JSON_MIN:
                    if sink(nxt, data[tok:i], 1):
                        stopping, n = True, i
                elif nxt == JSON_ERROR:
                    state = IN_RECOVERY
                    if sink(JSON_ERROR, data[tok:i], 1):
                        stopping, n = True, i
                else:
                    state = nxt
                    plen = 0
                continue
            if state == IN_RECOVERY:
                i = _RECOVERY_RUN(data, i, n).end()  # type: ignore[union-attr]
                if i < n:
                    state = IN_START  # the byte is looked at again
                continue
            # Inside a token (possibly begun in an earlier chunk: ``partial``).
            run = runs[state]
            if run is not None:
                limit = tok + MAX_TOKEN_SIZE + 1 - plen
                end = run(data, i, limit if limit < n else n).end()  # type: ignore[union-attr]
                if end == limit:
                    i = end
                    if self._cut(state, plen + i - tok):
                        stopping, n = True, i
                    state, plen = IN_START, 0
                    continue
                i = end
                if i >= n:
                    break
            nxt = table[state][data[i]]
            if nxt & LOOKAHEAD:
                text = self._text(data, tok, i, plen)
                plen = 0
                state = IN_START
                if sink(nxt ^ LOOKAHEAD, text, len(text)):
                    stopping, n = True, i + 1
                continue
            i += 1
            if nxt == JSON_ERROR or nxt >= JSON_MIN:
                text = self._text(data, tok, i, plen)
                plen = 0
                state = IN_START if nxt else IN_RECOVERY
                if sink(nxt, text, len(text)):
                    stopping, n = True, i
                continue
            state = nxt
            if i - tok + plen > MAX_TOKEN_SIZE:
                if self._cut(state, plen + i - tok):
                    stopping, n = True, i
                state, plen = IN_START, 0
        self.state = state
        if state not in (IN_START, IN_RECOVERY):
            if plen:
                partial += data[tok:i]
            else:
                self._partial = bytearray(data[tok:i])
        elif partial:
            self._partial = bytearray()
        return i

    def flush(self) -> None:
        """End of input: finish or reject the pending token, then send EOI.

        Mirrors ``json_lexer_flush()``: a pending number or keyword is
        complete; an unfinished string or number becomes a ``JSON_ERROR``
        token whose text has no extra byte.
        """
        text = bytes(self._partial)
        self._partial = bytearray()
        state = self.state
        while state != IN_START:
            nxt = _TABLE[state][0] & ~LOOKAHEAD
            if nxt >= JSON_MIN or nxt == JSON_ERROR:
                self._sink(nxt, text, len(text))
                text = b""
            state = IN_RECOVERY if nxt == JSON_ERROR else IN_START
        self.state = IN_START
        self._sink(JSON_END_OF_INPUT, b"", 0)

    def _text(self, data: bytes, tok: int, i: int, plen: int) -> bytes:
        """The current token's bytes, joining a part left by an earlier chunk."""
        if plen:
            text = bytes(self._partial + data[tok:i])
            self._partial = bytearray()
            return text
        return data[tok:i]

    def _cut(self, state: int, size: int) -> bool:
        """Hand over a token that just outgrew MAX_TOKEN_SIZE; lexing restarts.

        Like QEMU, the token goes out with its lexer *state* as its type; the
        streamer rejects it for its size whatever that type is.  The text is
        not copied: only its size matters.
        """
        self._partial = bytearray()
        return self._sink(state, b"", size)
