"""Property tests: chunking never matters, the fast path never differs from
the exact one, and what the writer prints the reader reads back.

Feeding one byte at a time never gives the C-scanner fast path a whole
value, so it exercises the exact (QEMU-modelled) path alone; comparing it
with whole-chunk feeding is the differential test of the fast path.
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from qapi.json_parser import JSONError
from qapi.json_streamer import JSONMessageParser
from qapi.json_writer import _write, to_json

SETTINGS = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text QEMU can carry: no surrogates; noncharacters are rejected by its parser.
_NONCHAR = re.compile(
    "[\ufdd0-\ufdef"
    + "".join(chr(p << 16 | 0xFFFE) + chr(p << 16 | 0xFFFF) for p in range(17))
    + "]"
)
text = st.text(st.characters(codec="utf-8"), max_size=12).filter(lambda s: not _NONCHAR.search(s))
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | text
)
values = st.recursive(
    scalars,
    lambda kids: st.lists(kids, max_size=4) | st.dictionaries(text, kids, max_size=4),
    max_leaves=20,
)
messages = st.dictionaries(text, values, max_size=5)


def normalise(value: Any) -> Any:
    """What QEMU reads back from its own output: ``%.17g`` of an integral
    double has no dot, so it comes back as an integer."""
    if isinstance(value, float):
        printed = format(value, ".17g")
        return int(printed) if re.fullmatch(r"-?\d+", printed) else float(printed)
    if isinstance(value, list):
        return [normalise(v) for v in value]
    if isinstance(value, dict):
        return {k: normalise(v) for k, v in value.items()}
    return value


def feed_chunks(data: bytes, cuts: list[int], fast_path: bool = True) -> list[Any]:
    parser = JSONMessageParser(fast_path=fast_path)
    out: list[Any] = []
    prev = 0
    for cut in [*sorted(set(cuts)), len(data)]:
        out += parser.feed(data[prev:cut])
        prev = cut
    return out


def bytewise(data: bytes) -> list[Any]:
    parser = JSONMessageParser()
    out: list[Any] = []
    for i in range(len(data)):
        out += parser.feed(data[i : i + 1])
    return out


@SETTINGS
@given(messages)
def test_round_trip(value: dict[str, Any]) -> None:
    data = to_json(value).encode("ascii")
    assert JSONMessageParser().feed(data) == [normalise(value)]


@SETTINGS
@given(messages)
def test_round_trip_pretty(value: dict[str, Any]) -> None:
    data = to_json(value, pretty=True).encode("ascii")
    assert JSONMessageParser().feed(data) == [normalise(value)]


@SETTINGS
@given(messages)
def test_c_encoder_path_equals_python_encoder(value: dict[str, Any]) -> None:
    # to_json() takes json's C encoder unless a float is present; the
    # plain Python encoder is the reference for both.
    assert to_json(value) == _write(value, False)


_ESCAPE = re.compile(r"\\(?:u(....)|(.))")


@SETTINGS
@given(messages, st.booleans())
def test_writer_escapes(value: dict[str, Any], pretty: bool) -> None:
    out = to_json(value, pretty)
    assert out.isascii()
    assert not re.search(r"[\x00-\x09\x0b-\x1f\x7f]", out)
    for m in _ESCAPE.finditer(out):
        if m.group(1) is not None:
            assert re.fullmatch(r"[0-9A-F]{4}", m.group(1))
            assert int(m.group(1), 16) >= 0x7F or int(m.group(1), 16) < 0x20
        else:
            assert m.group(2) in '"\\bfnrt'


@settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(messages)
def test_split_at_every_byte_boundary(value: dict[str, Any]) -> None:
    data = (to_json(value) + "\r\n").encode()
    expected = [normalise(value)]
    for cut in range(len(data) + 1):
        assert feed_chunks(data, [cut]) == expected
    assert bytewise(data) == expected


@SETTINGS
@given(st.lists(messages, min_size=1, max_size=4), st.sampled_from(["", " ", "\n", "\r\n\t"]))
def test_back_to_back(values: list[dict[str, Any]], sep: str) -> None:
    data = sep.join(to_json(v) for v in values).encode()
    expected = [normalise(v) for v in values]
    assert JSONMessageParser().feed(data) == expected
    assert bytewise(data) == expected


# Streams mixing valid messages, QEMU extensions and every kind of garbage.
# fmt: off
FRAGMENTS = [
    b"{", b"}", b"[", b"]", b":", b",", b" ", b"\n", b"\t",
    b'"a"', b"'b'", b'"x\\"y"', b"'\\''", b'"\\u00e9"', b'"\\uD83D\\uDE00"', b'"\\uD800"',
    b'"\\uFFFF"', b'"\\q"', b'"\xc3\xa9"', b'"\xc0\x80"', b'"\xed\xa0\x80"', b"\xc3\xa9",
    b"0", b"1", b"-", b".5", b"e3", b"E-1", b"12345678901234567890", b"0e5",
    b"true", b"false", b"null", b"nul", b"x", b"T", b"NaN", b"Infinity", b"%",
    b"\x01", b"\x00", b"\xff", b"\xfe", b'"', b"\\",
    b'{"execute": "query-status", "id": 1}', b'{"a": 1, "a": 2}', b'{"a": [1, 2.5, {}]}',
    b"[[[[", b"]]]]", b'{"b":{"c":{', b"}}}",
]
# fmt: on


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(FRAGMENTS), max_size=25),
    st.lists(st.integers(min_value=0, max_value=400), max_size=6),
)
def test_any_stream_any_chunking(parts: list[bytes], cuts: list[int]) -> None:
    data = b"".join(parts)
    reference = bytewise(data)
    assert feed_chunks(data, []) == reference
    assert feed_chunks(data, [], fast_path=False) == reference
    assert feed_chunks(data, [c for c in cuts if c <= len(data)]) == reference


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(FRAGMENTS), max_size=25))
def test_one_message_at_a_time_stops_where_bytewise_reading_does(parts: list[bytes]) -> None:
    data = b"".join(parts)
    parser = JSONMessageParser()
    expected: list[tuple[Any, int]] = []
    for i in range(len(data)):
        expected += [(m, i + 1) for m in parser.feed(data[i : i + 1])]
    parser = JSONMessageParser()
    got: list[tuple[Any, int]] = []
    pos = 0
    while pos < len(data):
        msgs, used = parser.feed(data[pos:], max_messages=1)
        assert used > 0
        pos += used
        got += [(m, pos) for m in msgs]
    assert got == expected


@SETTINGS
@given(st.binary(max_size=60))
def test_arbitrary_bytes(data: bytes) -> None:
    reference = bytewise(data)
    assert JSONMessageParser().feed(data) == reference
    for msg in reference:
        if isinstance(msg, JSONError):
            assert msg.desc.startswith("JSON ")
        to_json(msg.desc if isinstance(msg, JSONError) else msg)  # always printable
