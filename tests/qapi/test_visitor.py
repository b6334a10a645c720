"""The argument visitor: every message QEMU's input visitor produces, exactly.

Cases on the emulator's schema were checked against a real QEMU 7.2 (and are
re-checked live by test_introspect_qemu.py when QEMU is installed); the test
schema covers constructs the emulator's commands do not use.
"""

from __future__ import annotations

import math
from typing import Any, Callable

import pytest

from qapi.error import ErrorClass, QapiError
from qapi.qmp_event import qapi_event_input_data
from qapi.qobject_input_visitor import qmp_input_command_args, qobject_input_visit
from qapi.schema import Schema, qapi_schema
from tests.qapi.support import load_test_schema

TEST_SCHEMA = load_test_schema()


def visit(command: str, args: dict[str, Any], schema: Schema = TEST_SCHEMA) -> dict[str, Any]:
    return qmp_input_command_args(schema.lookup_command(command), args)


def error_of(command: str, args: dict[str, Any], schema: Schema = TEST_SCHEMA) -> str:
    with pytest.raises(QapiError) as info:
        visit(command, args, schema)
    assert info.value.error_class is ErrorClass.GENERIC_ERROR
    return info.value.desc


def sock(addr_data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "id": "c",
        "backend": {
            "type": "socket",
            "data": {"addr": {"type": "unix", "data": addr_data}, **extra},
        },
    }


# Requests on the emulator's schema with the text QEMU 7.2 answered.
EMULATOR_CASES = [
    ("chardev-add", {"backend": {"type": "null", "data": {}}}, "Parameter 'id' is missing"),
    ("chardev-add", {"id": "a", "backend": {}}, "Parameter 'backend.type' is missing"),
    (
        "chardev-add",
        {"id": "a", "backend": {"type": "bogus"}},
        "Parameter 'type' does not accept value 'bogus'",
    ),
    (
        "chardev-add",
        {"id": "a", "backend": {"type": 1}},
        "Invalid parameter type for 'backend.type', expected: string",
    ),
    ("chardev-add", sock({}), "Parameter 'backend.data.addr.data.path' is missing"),
    (
        "chardev-add",
        sock({"path": "/x", "zz": 1}),
        "Parameter 'backend.data.addr.data.zz' is unexpected",
    ),
    (
        "chardev-add",
        sock({"path": "/x"}, server="yes"),
        "Invalid parameter type for 'backend.data.server', expected: boolean",
    ),
    (
        "chardev-add",
        {"id": "a", "backend": {"type": "null", "data": []}},
        "Invalid parameter type for 'backend.data', expected: object",
    ),
    (
        "chardev-add",
        {
            "id": "a",
            "backend": {
                "type": "socket",
                "data": {"addr": {"type": "inet", "data": {"host": "h", "port": "1", "to": 70000}}},
            },
        },
        "Parameter 'to' expects uint16_t",
    ),
    (
        "yank",
        {"instances": [{"type": "chardev", "id": "x"}, {"type": "chardev"}]},
        "Parameter 'instances[1].id' is missing",
    ),
    (
        "yank",
        {"instances": [{"type": "chardev", "id": "x"}, 5]},
        "Invalid parameter type for 'instances[1]', expected: object",
    ),
    ("yank", {"instances": [{"type": "zz"}]}, "Parameter 'type' does not accept value 'zz'"),
    ("yank", {"instances": {}}, "Invalid parameter type for 'instances', expected: array"),
    (
        "yank",
        {"instances": [{"type": "migration", "id": "x"}]},
        "Parameter 'instances[0].id' is unexpected",
    ),
    ("yank", {}, "Parameter 'instances' is missing"),
    (
        "ringbuf-write",
        {"device": "x", "data": "y", "format": "bad"},
        "Parameter 'format' does not accept value 'bad'",
    ),
    (
        "ringbuf-write",
        {"device": "x", "data": "y", "format": 1},
        "Invalid parameter type for 'format', expected: string",
    ),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": 1.5},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": 2**63},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"command-line": "x", "cpu-index": "1"},
        "Invalid parameter type for 'cpu-index', expected: integer",
    ),
    (
        "human-monitor-command",
        {"command-line": True},
        "Invalid parameter type for 'command-line', expected: string",
    ),
    ("human-monitor-command", {}, "Parameter 'command-line' is missing"),
    ("qmp_capabilities", {"enable": ["foo"]}, "Parameter 'null' does not accept value 'foo'"),
    ("qmp_capabilities", {"enable": "oob"}, "Invalid parameter type for 'enable', expected: array"),
    ("query-status", {"a": 1}, "Parameter 'a' is unexpected"),
    ("stop", {"a": 1, "b": 2, "c": 3}, "Parameter 'b' is unexpected"),
    # A missing member is found before any leftover: leftovers are checked last.
    ("getfd", {"zz": 1}, "Parameter 'fdname' is missing"),
]


@pytest.mark.parametrize(("command", "args", "desc"), EMULATOR_CASES)
def test_emulator_schema_messages(command: str, args: dict[str, Any], desc: str) -> None:
    assert error_of(command, args, qapi_schema()) == desc


# Constructs only the test schema has.
TEST_CASES = [
    ({"sized": {"i8": 128}}, "Parameter 'i8' expects int8_t"),
    ({"sized": {"i8": -129}}, "Parameter 'i8' expects int8_t"),
    ({"sized": {"i16": 2**15}}, "Parameter 'i16' expects int16_t"),
    ({"sized": {"i32": -(2**31) - 1}}, "Parameter 'i32' expects int32_t"),
    ({"sized": {"u8": 256}}, "Parameter 'u8' expects uint8_t"),
    ({"sized": {"u8": -1}}, "Parameter 'u8' expects uint8_t"),
    ({"sized": {"u16": 65536}}, "Parameter 'u16' expects uint16_t"),
    ({"sized": {"u32": 2**32}}, "Parameter 'u32' expects uint32_t"),
    ({"bytes": [1, 300]}, "Parameter 'null' expects uint8_t"),
    ({"sized": {"i8": "x"}}, "Invalid parameter type for 'sized.i8', expected: integer"),
    ({"sized": {"u8": "x"}}, "Parameter 'sized.u8' expects uint64"),
    ({"sized": {"i64": 1.0}}, "Invalid parameter type for 'sized.i64', expected: integer"),
    ({"sized": {"i64": True}}, "Invalid parameter type for 'sized.i64', expected: integer"),
    ({"sized": {"u64": "x"}}, "Parameter 'sized.u64' expects uint64"),
    ({"sized": {"u64": 1.5}}, "Parameter 'sized.u64' expects uint64"),
    ({"sized": {"u64": 2**64}}, "Parameter 'sized.u64' expects uint64"),
    ({"sized": {"u64": -(2**63) - 1}}, "Parameter 'sized.u64' expects uint64"),
    ({"sized": {"sz": False}}, "Parameter 'sized.sz' expects uint64"),
    ({"sized": {"num": "1"}}, "Invalid parameter type for 'sized.num', expected: number"),
    ({"sized": {"num": False}}, "Invalid parameter type for 'sized.num', expected: number"),
    ({"sized": {"nul": 0}}, "Invalid parameter type for 'sized.nul', expected: null"),
    ({"sized": {"anything": None, "zz": 1}}, "Parameter 'sized.zz' is unexpected"),
    ({"nested": [[1], [2, "x"]]}, "Invalid parameter type for 'nested[1][1]', expected: integer"),
    ({"nested": [[1], 2]}, "Invalid parameter type for 'nested[1]', expected: array"),
    ({"list": [{"base-a": 1}]}, "Parameter 'list[0].s' is missing"),
    (
        {"list": [{"base-a": 1, "s": "", "n": 1, "flag": 1}]},
        "Invalid parameter type for 'list[0].flag', expected: boolean",
    ),
    ({"e": "four"}, "Parameter 'e' does not accept value 'four'"),
    ({"u": {"kind": "two", "y": ["one", "nine"]}}, "Parameter 'null' does not accept value 'nine'"),
    ({"u": {"kind": "one"}}, "Parameter 'u.x' is missing"),
    ({"u": {"kind": "three", "x": 1}}, "Parameter 'u.x' is unexpected"),
    (
        {"u": {"kind": "one", "x": 1, "common": "c"}},
        "Invalid parameter type for 'u.common', expected: integer",
    ),
    ({"u": {"kind": "seven"}}, "Parameter 'kind' does not accept value 'seven'"),
    ({"alt": 1.5}, "Invalid parameter type for 'alt', expected: integer"),
    ({"alt": [1]}, "Invalid parameter type for 'alt', expected: TestAlt"),
    ({"alt": "four"}, "Parameter 'alt' does not accept value 'four'"),
    ({"alt": {}}, "Parameter 'alt.x' is missing"),
    ({"alt": {"x": 1, "y": 2}}, "Parameter 'alt.y' is unexpected"),
    ({"alts": [1, [2]]}, "Invalid parameter type for 'null', expected: TestAlt"),
]  # fmt: skip


@pytest.mark.parametrize(("args", "desc"), TEST_CASES)
def test_test_schema_messages(args: dict[str, Any], desc: str) -> None:
    assert error_of("test-args", args) == desc


def test_conversions() -> None:
    sized = {
        "i8": -128, "u8": 255, "u64": -1, "sz": 2**64 - 1, "num": 3,
        "nul": None, "anything": {"any": [1]}, "i64": -(2**63),
    }  # fmt: skip
    out = visit("test-args", {"sized": sized, "alt": None, "e": "three"})
    assert out["sized"]["u64"] == 2**64 - 1  # negative uint64 wraps, for compatibility
    assert out["sized"]["num"] == 3.0 and isinstance(out["sized"]["num"], float)
    assert out["sized"]["nul"] is None and out["sized"]["anything"] == {"any": [1]}
    assert out["alt"] is None and out["e"] == "three"
    assert list(out) == ["alt", "sized", "e"]  # schema order, not the client's


def test_alternate_branches() -> None:
    assert visit("test-args", {"alt": 5})["alt"] == 5
    assert visit("test-args", {"alt": "two"})["alt"] == "two"
    assert visit("test-args", {"alt": True})["alt"] is True
    assert visit("test-args", {"alt": {"x": 1}})["alt"] == {"x": 1}
    assert visit("test-args", {"alts": [1, "one", None]})["alts"] == [1, "one", None]


def test_objects_are_rebuilt_in_schema_order_without_absent_members() -> None:
    args = {"u": {"x": 1, "kind": "one"}, "list": [{"flag": True, "n": 1, "s": "s", "base-a": 2}]}
    out = visit("test-args", args)
    assert list(out["u"]) == ["kind", "x"]
    assert list(out["list"][0]) == ["base-a", "s", "n", "flag"]
    assert out["list"][0]["n"] == 1.0


def test_boxed_union_variants() -> None:
    out = visit("test-boxed", {"kind": "two", "y": [], "common": 4})
    assert out == {"kind": "two", "common": 4, "y": []}
    assert error_of("test-boxed", {"kind": "one", "x": 1, "q": 0}) == "Parameter 'q' is unexpected"


def test_huge_number_does_not_crash() -> None:
    assert visit("test-args", {"sized": {"num": 10**400}})["sized"]["num"] == math.inf


def desc_of(fn: Callable[[], Any]) -> str:
    with pytest.raises(QapiError) as info:
        fn()
    return info.value.desc


def test_root_value_without_name() -> None:
    obj = TEST_SCHEMA.lookup_type("TestBranchOne")
    assert desc_of(lambda: qobject_input_visit(obj, [])) == (
        "Invalid parameter type for '<anonymous>', expected: object"
    )
    assert desc_of(lambda: qobject_input_visit(obj, {})) == "Parameter 'x' is missing"
    assert desc_of(lambda: qobject_input_visit(obj, {}, "top")) == "Parameter 'top.x' is missing"


def test_event_data_from_a_client() -> None:
    schema = qapi_schema()
    assert desc_of(lambda: qapi_event_input_data(schema, "RTC_CHANGE", None)) == (
        "Parameter 'data.offset' is missing"
    )
    assert desc_of(lambda: qapi_event_input_data(schema, "WATCHDOG", {"action": "x"})) == (
        "Parameter 'action' does not accept value 'x'"
    )
    assert desc_of(lambda: qapi_event_input_data(schema, "WATCHDOG", 3)) == (
        "Invalid parameter type for 'data', expected: object"
    )
    data = {"qom-path": "/m", "offset": -3}
    assert qapi_event_input_data(schema, "RTC_CHANGE", data) == {"offset": -3, "qom-path": "/m"}
