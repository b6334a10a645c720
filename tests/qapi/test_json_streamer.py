"""JSONMessageParser against QEMU 7.2: error texts, recovery, delimiting.

Every expectation in the tables below was checked against a real
``qemu-system-x86_64`` 7.2 by sending the bytes over a QMP socket (the QMP
layer turns a value that is not an object into ``QMP input must be a JSON
object``; here we see the value itself).  No QEMU is needed to run them.
"""

from __future__ import annotations

from typing import Any

import pytest

from qapi.json_streamer import JSONError, JSONMessageParser


def E(desc: str) -> JSONError:
    return JSONError(desc)


def P(desc: str) -> JSONError:
    return JSONError("JSON parse error, " + desc)


def feed_all(data: bytes, fast_path: bool = True) -> list[Any]:
    return JSONMessageParser(fast_path=fast_path).feed(data)


def feed_bytewise(data: bytes) -> list[Any]:
    parser = JSONMessageParser()
    out: list[Any] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


def check(data: bytes, expected: list[Any]) -> None:
    """Same result whole, byte by byte, and on the exact path alone."""
    assert feed_all(data) == expected
    assert feed_all(data, fast_path=False) == expected
    assert feed_bytewise(data) == expected


# -- values ------------------------------------------------------------------

VALUES = [
    (b'{"execute": "query-status", "id": 1}', [{"execute": "query-status", "id": 1}]),
    (b"{'execute': 'qmp_capabilities'}", [{"execute": "qmp_capabilities"}]),
    (b"['a\"b\\'c']", [["a\"b'c"]]),
    (b'["\\\'"]', [["'"]]),
    (b'["\\u0000", "\xc0\x80"]', [["\0", "\0"]]),
    (b'["\xc3\xa9\xf0\x9f\x98\x80", "\\u00e9\\ud83d\\ude00"]', [["\u00e9\U0001f600"] * 2]),
    (b'["\\"\\\\\\/\\b\\f\\n\\r\\t"]', [['"\\/\b\f\n\r\t']]),
    (b"[true, false, null]", [[True, False, None]]),
    (b"[-0, 0, 9223372036854775807, -9223372036854775808]", [[0, 0, 2**63 - 1, -(2**63)]]),
    (b"[18446744073709551615]", [[2**64 - 1]]),
    (
        b"[18446744073709551616, -9223372036854775809]",
        [[1.8446744073709552e19, -9.223372036854775808e18]],
    ),
    (
        b"[1.5, 1e2, 1E+2, 2e-1, 0.5e1, -0.0, 1e400]",
        [[1.5, 100.0, 100.0, 0.2, 5.0, -0.0, float("inf")]],
    ),
    (b'{"a": {"b": [{}, []]}}', [{"a": {"b": [{}, []]}}]),
    (b" \t\r\n{}\n", [{}]),
    (b'"abc"', ["abc"]),
    (b"42 ", [42]),
    (b"true\n", [True]),
]


@pytest.mark.parametrize(("data", "expected"), VALUES)
def test_values(data: bytes, expected: list[Any]) -> None:
    check(data, expected)


def test_number_types_keep_double_distinction() -> None:
    (msg,) = feed_all(b"[1, 1.0, 1e0, 18446744073709551615, 18446744073709551616]")
    assert [type(v) for v in msg] == [int, float, float, int, float]


def test_member_order_is_the_clients() -> None:
    (msg,) = feed_all(b'{"z": 1, "a": 2, "m": 3}')
    assert list(msg) == ["z", "a", "m"]


# -- every error message -------------------------------------------------------

ERRORS = [
    (b"%\n", [P("stray '%'")]),
    (b"True\n", [P("stray 'T'")]),
    (b"foo\n", [P("invalid keyword 'foo'")]),
    (b'{"a":1,"a":2}', [P("duplicate key")]),
    (b"[0e5]", [P("expected separator in list")]),
    (b"0e5\n", [0, P("invalid keyword 'e'"), 5]),
    (b"}", [P("expecting value")]),
    (b"]", [P("expecting value")]),
    (b",", [P("expecting value")]),
    (b":", [P("expecting value")]),
    (b'{"a":1]', [P("expected separator in dict")]),
    (b"[1}]", [P("expected separator in list"), P("expecting value")]),
    (b"[1,2", []),
    (b"[1,2\n", []),
    (b"\x01", [P("stray '\x01'")]),
    (b"\xff", [P("stray '\ufffd'")]),
    (b'"a\x01', [P("stray '\"a\x01'")]),
    (b"-x\n", [P("stray '-x'")]),
    (b"01 ", [P("stray '01'")]),
    (b"1. ", [P("stray '1. '")]),
    (b"1e ", [P("stray '1e '")]),
    (b"-\n", [P("stray '-\n'")]),
    (b"\x00", [P("stray ''")]),
    (b'"\xc0\x80\x00"\n', [P("stray '\"\0'")]),
    (b'"\xed\xa0\x80\x01', [P("stray '\"\ufffd\x01'")]),
    (b'"\xc0\xaf\x01', [P("stray '\"\ufffd\x01'")]),
    (b'"\xe2\x82\x01', [P("stray '\"\ufffd\x01'")]),
    (b'"\xf0\x9f\x98\x80\x01', [P("stray '\"\U0001f600\x01'")]),
    (b'"\xef\xbf\xbe\x01', [P("stray '\"\ufffd\x01'")]),
    (b'"\x80\x80\x01', [P("stray '\"\ufffd\ufffd\x01'")]),
    (b'"\xfd\xbf\xbf\xbf\xbf\xbf\x01', [P("stray '\"\ufffd\x01'")]),
    (b"%\xff", [P("stray '%'"), P("stray '\ufffd'")]),
    (b'["\\uD800"]', [P("\\uD800 is not a valid Unicode character")]),
    (b'["\\uDC00"]', [P("\\uDC00 is not a valid Unicode character")]),
    (b'["\\uD800\\u0041"]', [P("\\uD800 is not a valid Unicode character")]),
    (b'["\\uD83F\\uDFFE"]', [P("\\uD83F\\uDFFE is not a valid Unicode character")]),
    (b'["\\uFFFE"]', [P("\\uFFFE is not a valid Unicode character")]),
    (b'["\\uFDD0"]', [P("\\uFDD0 is not a valid Unicode character")]),
    (b'["\\u12"]', [P('\\u12" is not a valid Unicode character')]),
    (b'["\\u"]', [P('\\u" is not a valid Unicode character')]),
    (b'["\\uZZZZ"]', [P("\\uZZZZ is not a valid Unicode character")]),
    (b'"\\u00\xc3\xa9"', [P("\\u00\u00e9 is not a valid Unicode character")]),
    (b'["\xef\xbf\xbe"]', [P("invalid UTF-8 sequence in string")]),
    (b'["\xed\xa0\x80"]', [P("invalid UTF-8 sequence in string")]),
    (b'["\xc3"]', [P("invalid UTF-8 sequence in string")]),
    (b'["\xf8\x88\x80\x80\x80"]', [P("invalid UTF-8 sequence in string")]),
    (b'["\\q"]', [P("invalid escape sequence in string")]),
    (b'["\\\xc3\xa9"]', [P("invalid escape sequence in string")]),
    (b"[NaN]", [P("stray 'N'"), P("expecting value")]),
    (b"[Infinity]", [P("stray 'I'"), P("expecting value")]),
    (b"[-Infinity]", [P("stray '-I'"), P("expecting value")]),
    (b"{1:2}", [P("key is not a string in object")]),
    (b"{[1,2]:3}", [P("key is not a string in object")]),
    (b"{[1,x]:3}", [P("invalid keyword 'x'")]),
    (b'{"a" 1}', [P("missing : in object pair")]),
    (b'{"a":}', [P("expecting value")]),
    (b'{"a":1,}', [P("expecting value")]),
    (b"[1 2]", [P("expected separator in list")]),
    (b'{"a":1 "b":2}', [P("expected separator in dict")]),
    (b'{"a":x}', [P("invalid keyword 'x'")]),
    (b'{"a":1,"a":x}', [P("invalid keyword 'x'")]),
    (b"[\xc3\xa9]", [P("stray '\ufffd'"), P("expecting value")]),
    # Errors inside strings come in source order.
    (b'["\\q\xff"]', [P("stray '\"\\q\ufffd'"), P("expecting value")]),
    (b'["\\q\xc3"]', [P("invalid escape sequence in string")]),
    (b'["\xc3\\q"]', [P("invalid UTF-8 sequence in string")]),
]


@pytest.mark.parametrize(("data", "expected"), ERRORS)
def test_errors(data: bytes, expected: list[Any]) -> None:
    check(data, expected)


def test_long_invalid_keyword_is_cut_like_qemus_message_buffer() -> None:
    (err,) = feed_all(b"a" * 2000 + b" ")
    assert err == P("invalid keyword '" + "a" * (1023 - len("invalid keyword '")))


def test_premature_eoi_only_on_flush() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b'{"execute": "x"') == []
    assert parser.flush() == [P("premature EOI")]
    assert parser.feed(b"[1, 2") == []
    assert parser.flush() == [P("premature EOI")]
    assert parser.feed(b"[1 2") == []
    assert parser.flush() == [P("expected separator in list")]


def test_flush_finishes_a_pending_scalar_or_rejects_a_partial_token() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b"42") == []
    assert parser.flush() == [42]
    assert parser.feed(b"nul") == []
    assert parser.flush() == [P("invalid keyword 'nul'")]
    assert parser.feed(b'"abc') == []
    assert parser.flush() == [P("stray '\"abc'")]
    assert parser.flush() == []


def test_flush_with_a_partial_token_after_queued_tokens() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b"[1, -") == []
    # The lexical error drops the queue, so EOI finds nothing to parse.
    assert parser.flush() == [P("stray '-'")]


# -- delimiting and lookahead ----------------------------------------------------


def test_values_back_to_back() -> None:
    data = b'{"a":1}{"b":2}[3]"x"4 '
    check(data, [{"a": 1}, {"b": 2}, [3], "x", 4])


def test_scalar_waits_for_the_next_byte() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b"42") == []
    assert parser.feed(b"3") == []
    assert parser.feed(b"}") == [423, P("expecting value")]
    assert parser.feed(b"true") == []
    assert parser.feed(b"{") == [True]
    assert parser.feed(b"}") == [{}]


def test_partial_message_is_dropped_silently_by_reset() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b'{"execute": "qu') == []
    parser.reset()
    assert parser.feed(b'{"execute": "x"}') == [{"execute": "x"}]


# -- recovery --------------------------------------------------------------------

RECOVERY = [
    (b'\xfe{"execute":"query-status"}', [P("stray '\ufffd'"), {"execute": "query-status"}]),
    (
        b'abc\x01def\n{"execute":"query-status"}',
        [P("invalid keyword 'abc'"), P("stray '\x01'"), {"execute": "query-status"}],
    ),
    # Recovery skips quotes and letters, stops at newline (whitespace).
    (b'%"no string here\n{"a": 1}', [P("stray '%'"), {"a": 1}]),
    # Recovery stops at a structural character, which is then lexed.
    (b'%abc}{"a": 1}', [P("stray '%'"), P("expecting value"), {"a": 1}]),
    # A control character or 0xFF ends recovery and is itself an error.
    (b"%abc\x02", [P("stray '%'"), P("stray '\x02'")]),
    (b"%abc\xff", [P("stray '%'"), P("stray '\ufffd'")]),
    (b"%ab\tc\n", [P("stray '%'")]),
    # The classic resync: a control character inside a broken request.
    (
        b'{"execute": "a\x01"} {"execute": "b"}',
        [P("stray '\"a\x01'"), P("expecting value"), {"execute": "b"}],
    ),
    # A stray error throws away the queued part of the message.
    (b'{"execute": %}', [P("stray '%'"), P("expecting value")]),
]


@pytest.mark.parametrize(("data", "expected"), RECOVERY)
def test_recovery(data: bytes, expected: list[Any]) -> None:
    check(data, expected)


# -- feed(data, max_messages): consume only up to the end of a message ---------


def test_max_messages_reports_bytes_consumed() -> None:
    a = b' {"execute": "a"}'
    b = b'\n{"execute": "b"}\n'
    parser = JSONMessageParser()
    msgs, used = parser.feed(a + b, max_messages=1)
    assert (msgs, used) == ([{"execute": "a"}], len(a))
    msgs, used = parser.feed((a + b)[used:], max_messages=1)
    assert (msgs, used) == ([{"execute": "b"}], len(b) - 1)
    assert parser.feed(b"\n", max_messages=1) == ([], 1)


def test_max_messages_on_the_exact_path() -> None:
    data = b"{'a': 1} {'b': 2}"
    parser = JSONMessageParser()
    assert parser.feed(data, max_messages=1) == ([{"a": 1}], 8)
    assert parser.feed(data[8:], max_messages=1) == ([{"b": 2}], 9)


def test_max_messages_one_byte_can_complete_two_messages() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b"42}{}", max_messages=1) == ([42, P("expecting value")], 3)


def test_max_messages_lookahead_byte_is_consumed_and_lexed() -> None:
    parser = JSONMessageParser()
    msgs, used = parser.feed(b'42{"a": 1}', max_messages=1)
    assert (msgs, used) == ([42], 3)  # the '{' was read, as QEMU reads it
    assert parser.feed(b'"a": 1}') == [{"a": 1}]


def test_max_messages_partial_message_consumes_everything() -> None:
    parser = JSONMessageParser()
    assert parser.feed(b'{"execute": ', max_messages=1) == ([], 12)
    assert parser.feed(b'"x"}{"y"', max_messages=1) == ([{"execute": "x"}], 4)


def test_max_messages_must_be_positive() -> None:
    with pytest.raises(ValueError):
        JSONMessageParser().feed(b"{}", max_messages=0)


def test_max_messages_agrees_with_bytewise_feeding() -> None:
    data = b'{"a":1} 42 [1}] %x\x01 {"b":\n2} "s"{}\xff[]'
    # Where does each message appear when QEMU reads one byte at a time?
    parser = JSONMessageParser()
    ends: list[tuple[Any, int]] = []
    for i in range(len(data)):
        ends += [(m, i + 1) for m in parser.feed(data[i : i + 1])]
    # Taking one message at a time must stop at the same bytes.
    parser = JSONMessageParser()
    got: list[tuple[Any, int]] = []
    pos = 0
    while pos < len(data):
        msgs, used = parser.feed(data[pos:], max_messages=1)
        pos += used
        got += [(m, pos) for m in msgs]
    assert got == ends


# -- limits ---------------------------------------------------------------------


def nesting_depth(value: Any) -> int:
    depth = 0
    while isinstance(value, list):
        assert len(value) <= 1
        depth += 1
        value = value[0] if value else None
    return depth


def test_nesting_1024_is_fine() -> None:
    data = b"[" * 1024 + b"]" * 1024
    for msgs in feed_all(data), feed_all(data, fast_path=False), feed_bytewise(data):
        assert len(msgs) == 1
        assert nesting_depth(msgs[0]) == 1024


def test_nesting_1025_cascade() -> None:
    # QEMU 7.2: one limit error, then each ']' is a message of its own.
    data = b"[" * 1025 + b"]" * 1025
    expected = [E("JSON nesting depth limit exceeded")] + [P("expecting value")] * 1025
    assert feed_all(data) == expected
    assert feed_all(data, fast_path=False) == expected


def test_nesting_1025_objects_cascade() -> None:
    data = b'{"a":' * 1025 + b"1" + b"}" * 1025
    expected = [E("JSON nesting depth limit exceeded"), "a", P("expecting value"), 1]
    expected += [P("expecting value")] * 1025
    assert feed_all(data) == expected


def test_nesting_limit_counts_mixed_brackets() -> None:
    data = b'[{"a":' * 512 + b'{"b":1}' + b"}]" * 512
    msgs = feed_all(data)
    assert msgs[0] == E("JSON nesting depth limit exceeded")
    assert msgs[1:4] == ["b", P("expecting value"), 1]


def test_token_count_limit_cascade() -> None:
    # 1 + 2 * 2**20 tokens: the last ',' is one too many (checked with QEMU).
    data = b"[" + b"1," * (1 << 20) + b"2]"
    expected = [E("JSON token count limit exceeded"), 2, P("expecting value")]
    assert feed_all(data) == expected


def test_token_size_limit_single_huge_token() -> None:
    # A token is cut once it exceeds 64 MiB; the rest is fresh input.
    data = b'["' + b"a" * ((64 << 20) + 9) + b'"]"'
    expected = [E("JSON token size limit exceeded"), P("invalid keyword 'aaaaaaaaa'"), "]"]
    assert feed_all(data) == expected


def test_token_size_limit_sum_of_tokens() -> None:
    half = b'"' + b"a" * (32 << 20) + b'"'
    data = b"[" + half + b"," + half + b"]"
    assert feed_all(data) == [E("JSON token size limit exceeded"), P("expecting value")]


def test_token_size_limit_huge_token_in_small_chunks() -> None:
    parser = JSONMessageParser()
    chunk = b"a" * (1 << 20)
    out = parser.feed(b'["')
    for _ in range(63):
        out += parser.feed(chunk)
    assert out == []
    # '"' plus 64 MiB of 'a' is one byte too many: cut at the chunk's end.
    assert parser.feed(chunk) == [E("JSON token size limit exceeded")]
    assert parser.feed(b'aaaa"]"') == [P("invalid keyword 'aaaa'"), "]"]


def test_size_limit_boundary() -> None:
    # Checked per token: bytes queued so far + this token + 1 <= 64 MiB.
    # For '[', the string and ']' that allows a string body of 64 MiB - 5.
    body = (64 << 20) - 5
    (msg,) = feed_all(b'["' + b"a" * body + b'"]')
    assert msg == ["a" * body]
    del msg
    data = b'["' + b"a" * (body + 1) + b'"]'
    assert feed_all(data) == [E("JSON token size limit exceeded")]
    assert feed_all(data, fast_path=False) == [E("JSON token size limit exceeded")]
