"""to_json() against bytes captured from a real QEMU 7.2 (CRLF removed:
the monitor, not the writer, turns newlines into CRLF).

The values are built in the order QEMU's QAPI visitors insert members
(the schema's member order), so the writer must supply QDict's hash order
itself.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from qapi.json_writer import (
    QDICT_BUCKET_MAX,
    _write,
    format_double,
    qdict_keys,
    qdict_order,
    quoted_str,
    tdb_hash,
    to_json,
)

PACKAGE = "Debian 1:7.2+dfsg-7+deb12u18+b3"
VERSION = {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": PACKAGE}
GREETING = {"QMP": {"version": VERSION, "capabilities": ["oob"]}}
STATUS = {"running": True, "singlestep": False, "status": "running"}


def error(cls: str, desc: str) -> dict[str, Any]:
    return {"error": {"class": cls, "desc": desc}}


def event(name: str, data: dict[str, Any], seconds: int, micro: int) -> dict[str, Any]:
    return {
        "event": name,
        "data": data,
        "timestamp": {"seconds": seconds, "microseconds": micro},
    }


COMPACT = [
    (
        GREETING,
        '{"QMP": {"version": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
        '"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}, "capabilities": ["oob"]}}',
    ),
    ({"return": {}}, '{"return": {}}'),
    (
        {"return": VERSION},
        '{"return": {"qemu": {"micro": 22, "minor": 2, "major": 7}, '
        '"package": "Debian 1:7.2+dfsg-7+deb12u18+b3"}}',
    ),
    (
        {"return": STATUS, "id": {"b": 1, "a": [1.5, 0.1]}},
        '{"return": {"status": "running", "singlestep": false, "running": true}, '
        '"id": {"a": [1.5, 0.10000000000000001], "b": 1}}',
    ),
    (
        {"return": STATUS, "id": [None, True, False, -1, "x", {}]},
        '{"return": {"status": "running", "singlestep": false, "running": true}, '
        '"id": [null, true, false, -1, "x", {}]}',
    ),
    ({"return": {}, "id": "a"}, '{"return": {}, "id": "a"}'),
    (
        {"return": {"enabled": False, "present": True}, "id": 2},
        '{"return": {"enabled": false, "present": true}, "id": 2}',
    ),
    ({"return": {"arch": "x86_64"}}, '{"return": {"arch": "x86_64"}}'),
    (
        {"return": {"UUID": "00000000-0000-0000-0000-000000000000"}},
        '{"return": {"UUID": "00000000-0000-0000-0000-000000000000"}}',
    ),
    (
        {
            "return": [
                {
                    "label": "compat_monitor0",
                    "filename": "unix:/tmp/q.sock,server=on",
                    "frontend-open": True,
                }
            ]
        },
        '{"return": [{"frontend-open": true, "filename": "unix:/tmp/q.sock,server=on", '
        '"label": "compat_monitor0"}]}',
    ),
    ({"return": []}, '{"return": []}'),
    (
        error("CommandNotFound", "Capabilities negotiation is already complete, command ignored"),
        '{"error": {"class": "CommandNotFound", '
        '"desc": "Capabilities negotiation is already complete, command ignored"}}',
    ),
    (
        error("GenericError", "JSON parse error, stray '%'"),
        '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'%\'"}}',
    ),
    (
        error("GenericError", "JSON parse error, stray '\"a\x01'"),
        '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\"a\\u0001\'"}}',
    ),
    (
        error("GenericError", "JSON parse error, stray '\ufffd'"),
        '{"error": {"class": "GenericError", "desc": "JSON parse error, stray \'\\uFFFD\'"}}',
    ),
    (
        error("GenericError", "JSON parse error, \\uD800 is not a valid Unicode character"),
        '{"error": {"class": "GenericError", '
        '"desc": "JSON parse error, \\\\uD800 is not a valid Unicode character"}}',
    ),
    (
        {**error("GenericError", "QMP input member 'x' is unexpected"), "id": 2**64 - 1},
        '{"id": 18446744073709551615, "error": {"class": "GenericError", '
        '"desc": "QMP input member \'x\' is unexpected"}}',
    ),
    (
        {**error("GenericError", "QMP input lacks member 'execute'"), "id": 2.0**64},
        '{"id": 1.8446744073709552e+19, "error": {"class": "GenericError", '
        '"desc": "QMP input lacks member \'execute\'"}}',
    ),
    (
        {**error("GenericError", "QMP input lacks member 'execute'"), "id": -(2.0**63)},
        '{"id": -9.2233720368547758e+18, "error": {"class": "GenericError", '
        '"desc": "QMP input lacks member \'execute\'"}}',
    ),
    (
        {
            **error("CommandNotFound", "The command x has not been found"),
            "id": [float("inf"), -0.0, 100.0, 0.1, 1e23, 1.5e-320],
        },
        '{"id": [inf, -0, 100, 0.10000000000000001, 9.9999999999999992e+22, '
        '1.4999833007740245e-320], "error": {"class": "CommandNotFound", '
        '"desc": "The command x has not been found"}}',
    ),
    (
        {
            **error("GenericError", "QMP input lacks member 'execute'"),
            "id": "\u00e9\U0001f600\x7f/\b\f\n\r\t\x01",
        },
        '{"id": "\\u00E9\\uD83D\\uDE00\\u007F/\\b\\f\\n\\r\\t\\u0001", '
        '"error": {"class": "GenericError", "desc": "QMP input lacks member \'execute\'"}}',
    ),
    (
        event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}, 1795255976, 563894),
        '{"timestamp": {"seconds": 1795255976, "microseconds": 563894}, '
        '"event": "SHUTDOWN", "data": {"guest": false, "reason": "host-qmp-quit"}}',
    ),
]


@pytest.mark.parametrize(("value", "expected"), COMPACT)
def test_compact_matches_qemu(value: Any, expected: str) -> None:
    assert to_json(value) == expected


PRETTY_GREETING = """\
{
    "QMP": {
        "version": {
            "qemu": {
                "micro": 22,
                "minor": 2,
                "major": 7
            },
            "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"
        },
        "capabilities": [
            "oob"
        ]
    }
}"""

PRETTY_EMPTY_RETURN = """\
{
    "return": {
    }
}"""

PRETTY_NESTED = """\
{
    "return": {
        "qemu": {
            "micro": 22,
            "minor": 2,
            "major": 7
        },
        "package": "Debian 1:7.2+dfsg-7+deb12u18+b3"
    },
    "id": {
        "x": [
            1,
            {
                "a": [
                ]
            }
        ],
        "e": {
        },
        "l": [
        ]
    }
}"""

PRETTY_CHARDEV = """\
{
    "return": [
        {
            "frontend-open": true,
            "filename": "unix:/tmp/q.sock,server=on",
            "label": "c0"
        }
    ]
}"""

PRETTY_EVENT = """\
{
    "timestamp": {
        "seconds": 1795255977,
        "microseconds": 425285
    },
    "event": "SHUTDOWN",
    "data": {
        "guest": false,
        "reason": "host-qmp-quit"
    }
}"""

PRETTY = [
    (GREETING, PRETTY_GREETING),
    ({"return": {}}, PRETTY_EMPTY_RETURN),
    ({"return": VERSION, "id": {"e": {}, "l": [], "x": [1, {"a": []}]}}, PRETTY_NESTED),
    (
        {
            "return": [
                {"label": "c0", "filename": "unix:/tmp/q.sock,server=on", "frontend-open": True}
            ]
        },
        PRETTY_CHARDEV,
    ),
    (
        event("SHUTDOWN", {"guest": False, "reason": "host-qmp-quit"}, 1795255977, 425285),
        PRETTY_EVENT,
    ),
    ([], "[\n]"),
    ({}, "{\n}"),
    ("s", '"s"'),
    (1.5, "1.5"),
]


@pytest.mark.parametrize(("value", "expected"), PRETTY)
def test_pretty_matches_qemu(value: Any, expected: str) -> None:
    assert to_json(value, pretty=True) == expected


# -- strings -------------------------------------------------------------------

STRINGS = [
    ("", '""'),
    ("plain ascii / slash", '"plain ascii / slash"'),
    ('"\\', '"\\"\\\\"'),
    ("\b\f\n\r\t", '"\\b\\f\\n\\r\\t"'),
    ("\x00\x1f\x7f\x80", '"\\u0000\\u001F\\u007F\\u0080"'),
    ("\u00e9\u20ac\uffff", '"\\u00E9\\u20AC\\uFFFD"'),
    ("\U0001f600\U0010fffd", '"\\uD83D\\uDE00\\uDBFF\\uDFFD"'),
    ("\ud800", '"\\uFFFD"'),  # a lone surrogate cannot be in a QString
    ("\ufdd0\U0001fffe", '"\\uFFFD\\uFFFD"'),  # noncharacters
    ("\\u1234", '"\\\\u1234"'),  # a literal backslash-u is not an escape
    ("\\\u00e9", '"\\\\\\u00E9"'),
]


@pytest.mark.parametrize(("text", "expected"), STRINGS)
def test_strings(text: str, expected: str) -> None:
    assert quoted_str(text) == expected
    assert to_json(text) == expected
    assert to_json([text, 0.5]) == f"[{expected}, 0.5]"  # the Python encoder too
    assert to_json({text: 1}) == "{" + expected + ": 1}"


def test_doubles_use_percent_17g() -> None:
    assert format_double(0.1) == "0.10000000000000001"
    assert format_double(-0.0) == "-0"
    assert format_double(1e308 * 10) == "inf"
    assert format_double(-1e308 * 10) == "-inf"
    assert format_double(float("nan")) == "nan"
    assert format_double(-float("nan")) == "-nan"
    assert format_double(5e-324) == "4.9406564584124654e-324"


def test_integers_must_fit_int64_or_uint64() -> None:
    assert to_json([-(2**63), 2**64 - 1]) == "[-9223372036854775808, 18446744073709551615]"
    with pytest.raises(ValueError):
        to_json([2**64])
    with pytest.raises(ValueError):
        to_json({"a": [0.5, -(2**63) - 1]})


def test_rejects_what_qemu_cannot_hold() -> None:
    with pytest.raises(TypeError):
        to_json({1: 2})
    with pytest.raises(TypeError):
        to_json({"a": {1, 2}})
    with pytest.raises(TypeError):
        to_json(b"bytes", pretty=True)


def test_tuple_is_written_as_a_list() -> None:
    assert to_json((1, "a")) == '[1, "a"]'


def test_very_deep_values_are_written() -> None:
    value: Any = []
    for _ in range(1023):
        value = [value]
    assert to_json(value) == "[" * 1024 + "]" * 1024
    assert to_json({"id": value}) == '{"id": ' + "[" * 1024 + "]" * 1024 + "}"


def test_compact_fast_path_equals_python_encoder() -> None:
    value = {"z": [1, {"y": "\u00e9\x7f\\u"}], "a": None, "m": {"k": True, "j": "x"}}
    assert to_json(value) == _write(value, False)
    assert json.loads(to_json(value)) == value


# -- QDict order -------------------------------------------------------------------


def test_tdb_hash_buckets_of_the_greeting() -> None:
    # micro, minor, major print in that order (captured from QEMU above)
    buckets = [tdb_hash(k) % QDICT_BUCKET_MAX for k in ("micro", "minor", "major")]
    assert buckets == sorted(buckets)


def test_order_is_by_bucket_then_newest_first() -> None:
    keys = [f"k{i}" for i in range(3000)]
    order = qdict_order(keys)
    buckets = [tdb_hash(k) % QDICT_BUCKET_MAX for k in order]
    assert buckets == sorted(buckets)
    pos = {k: i for i, k in enumerate(keys)}
    for a, b in zip(order, order[1:]):
        if tdb_hash(a) % QDICT_BUCKET_MAX == tdb_hash(b) % QDICT_BUCKET_MAX:
            assert pos[a] > pos[b]  # newest first within a bucket


def test_insertion_order_matters_within_a_bucket() -> None:
    by_bucket: dict[int, list[str]] = {}
    for i in range(2000):
        by_bucket.setdefault(tdb_hash(f"k{i}") % QDICT_BUCKET_MAX, []).append(f"k{i}")
    a, b = next(keys for keys in by_bucket.values() if len(keys) >= 2)[:2]
    assert qdict_order([a, b]) == (b, a)
    assert qdict_order([b, a]) == (a, b)
    assert to_json({a: 1, b: 2}) == f'{{"{b}": 2, "{a}": 1}}'


def test_qdict_keys_of_a_request() -> None:
    request = {"execute": "query-status", "arguments": {}, "id": 1}
    assert qdict_keys(request) == qdict_order(("execute", "arguments", "id"))
    assert set(qdict_keys(request)) == set(request)


def test_a_reference_cycle_is_an_error_not_a_hang() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(ValueError):
        to_json(loop)
