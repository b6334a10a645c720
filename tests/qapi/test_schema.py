"""The schema loader: the emulator's definitions, and rejection of bad schemas."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from qapi.schema import (
    ArrayType,
    EnumType,
    ObjectType,
    QAPISemError,
    load_schema,
    qapi_schema,
)
from tests.qapi.support import load_test_schema

REQUIRED_COMMANDS = {
    # control
    "qmp_capabilities", "query-version", "query-commands", "query-qmp-schema", "query-name",
    "query-status", "stop", "cont", "system_reset", "system_powerdown", "quit",
    "human-monitor-command", "getfd", "closefd", "add-fd", "remove-fd", "query-fdsets",
    "migrate-pause", "yank", "query-yank", "query-kvm", "query-uuid", "query-iothreads",
    "x-exit-preconfig", "query-cpus-fast", "device_add",
    # chardev
    "chardev-add", "chardev-remove", "query-chardev", "query-chardev-backends",
    "ringbuf-write", "ringbuf-read", "chardev-send-break",
    # hotplug (proposed upstream design)
    "monitor-add", "monitor-remove", "query-monitors",
    # QOM (object-add with QEMU 11.1's monitor types)
    "qom-list", "qom-get", "qom-list-types", "object-add", "object-del",
    # emulator-only
    "x-oob-test", "x-debug-emit-event", "x-debug-co-sleep",
}  # fmt: skip
REQUIRED_EVENTS = {
    "SHUTDOWN", "POWERDOWN", "RESET", "STOP", "RESUME", "RTC_CHANGE", "WATCHDOG",
    "VSERPORT_CHANGE", "BALLOON_CHANGE", "MEMORY_DEVICE_SIZE_CHANGE", "QUORUM_REPORT_BAD",
    "QUORUM_FAILURE",
}  # fmt: skip


def test_declares_exactly_the_commands_and_events_we_implement() -> None:
    schema = qapi_schema()
    assert {c.name for c in schema.commands()} == REQUIRED_COMMANDS
    assert {e.name for e in schema.events()} == REQUIRED_EVENTS


def test_qapi_schema_is_loaded_once() -> None:
    assert qapi_schema() is qapi_schema()


def test_command_flags_match_qemu() -> None:
    schema = qapi_schema()
    oob = {c.name for c in schema.commands() if c.allow_oob}
    assert oob == {"migrate-pause", "yank", "query-yank", "x-oob-test"}
    assert [c.name for c in schema.commands() if c.coroutine] == ["x-debug-co-sleep"]
    preconfig = {c.name for c in schema.commands() if c.allow_preconfig}
    # As QEMU 7.2 answers under --preconfig, plus our own query-monitors.
    assert preconfig == {
        "qmp_capabilities", "query-version", "query-commands", "query-qmp-schema",
        "query-name", "query-status", "query-uuid", "query-iothreads", "query-chardev",
        "quit", "x-exit-preconfig", "query-monitors",
        "qom-list", "qom-get", "qom-list-types", "object-add", "object-del",
    }  # fmt: skip
    assert all(c.success_response for c in schema.commands())


def test_emulator_only_commands_are_marked_unstable() -> None:
    schema = qapi_schema()
    for name in ("x-oob-test", "x-debug-emit-event", "x-debug-co-sleep", "x-exit-preconfig"):
        assert "unstable" in schema.lookup_command(name).features


def test_chardev_backend_is_a_flat_union_with_wrappers() -> None:
    backend = qapi_schema().lookup_type("ChardevBackend")
    assert isinstance(backend, ObjectType) and backend.variants is not None
    assert [m.name for m in backend.members] == ["type"]
    cases = {v.name: v.type.name for v in backend.variants.variants}
    assert cases["socket"] == "ChardevSocketWrapper"
    assert cases["memory"] == cases["ringbuf"] == "ChardevRingbufWrapper"
    socket = qapi_schema().lookup_type("ChardevSocket")
    assert isinstance(socket, ObjectType)
    assert [m.name for m in socket.members][:3] == ["logfile", "logappend", "addr"]


def test_union_branches_left_out_get_the_empty_type_in_enum_order() -> None:
    schema = qapi_schema()
    yank = schema.lookup_type("YankInstance")
    assert isinstance(yank, ObjectType) and yank.variants is not None
    assert [(v.name, v.type.name) for v in yank.variants.variants] == [
        ("block-node", "YankInstanceBlockNode"),
        ("chardev", "YankInstanceChardev"),
        ("migration", "q_empty"),
    ]
    assert yank.variants.variants[2].type is schema.the_empty_object_type


def test_implicit_types_and_lists() -> None:
    schema = qapi_schema()
    cmd = schema.lookup_command("human-monitor-command")
    assert cmd.arg_type is not None and cmd.arg_type.implicit
    assert cmd.arg_type.name == "q_obj_human-monitor-command-arg"
    assert [(m.name, m.optional) for m in cmd.arg_type.members] == [
        ("command-line", False),
        ("cpu-index", True),
    ]
    ret = schema.lookup_command("query-fdsets").ret_type
    assert isinstance(ret, ArrayType) and ret.name == "FdsetInfoList"
    assert schema.lookup_command("stop").arg_type is None


def test_test_schema_module_order_and_features() -> None:
    schema = load_test_schema()
    names = [e.name for e in schema.entities()]
    # The top file's own definitions come first, then the included module's.
    assert names[0] == "test-args" and names[-2:] == ["types-module-cmd", "TYPES_EVENT"]
    enum = schema.lookup_type("TestEnum")
    assert isinstance(enum, EnumType)
    assert [(m.name, m.features) for m in enum.members][2] == ("three", ["deprecated"])
    struct = schema.lookup_type("TestStruct")
    assert isinstance(struct, ObjectType)
    assert [m.name for m in struct.members] == ["base-a", "base-b", "s", "in", "n", "flag"]
    assert struct.members[-1].features == ["unstable"]
    assert schema.lookup_command("test-boxed").boxed


def _load(tmp_path: Path, exprs: list[dict[str, Any]]) -> None:
    top = tmp_path / "s.json"
    top.write_text(json.dumps(exprs))
    load_schema(top)


BAD_SCHEMAS = [
    ([{"enum": "E", "data": ["a"]}, {"enum": "E", "data": ["b"]}], "already defined"),
    ([{"command": "c", "data": {"x": "Nope"}}], "undefined type 'Nope'"),
    ([{"command": "c"}, {"command": "c"}], "already defined"),
    ([{"struct": "S", "data": {"a": "int", "a-": "int"}}], None),
    ([{"struct": "S", "data": {"a-b": "int", "a_b": "int"}}], "clashing member names"),
    (
        [{"union": "U", "base": {"t": "str"}, "discriminator": "t", "data": {}}],
        "discriminator of 'U' must be a required enum member",
    ),
    (
        [
            {"enum": "E", "data": ["a"]},
            {"union": "U", "base": {"t": "E"}, "discriminator": "t", "data": {"b": "q_empty"}},
        ],
        "'b' is not a value of the discriminator",
    ),
    ([{"command": "c", "allow-oob": True, "coroutine": True}], "incompatible"),
    ([{"command": "c", "data": {"a": "int"}, "boxed": True}], "'boxed' needs a named"),
    (
        [
            {"enum": "E", "data": ["a"]},
            {"union": "U", "base": {"t": "E"}, "discriminator": "t", "data": {}},
            {"command": "c", "data": "U"},
        ],
        "needs 'boxed'",
    ),
    ([{"alternate": "A", "data": {"a": "int", "b": "number"}}], "must differ in JSON type"),
    ([{"alternate": "A", "data": {"a": "any"}}], "must differ in JSON type"),
    ([{"struct": "S", "base": "S", "data": {}}], "depends on itself"),
    ([{"struct": "S", "base": "int", "data": {}}], "must be an object type"),
    ([{"enum": "E", "data": ["NOPE"]}, {"pragma": {"event-enums": ["E"]}}], "is not an event"),
    ([{"frob": "x"}], "unknown expression"),
    ([{"command": "c", "returns": ["int", "str"]}], "exactly one element type"),
]


@pytest.mark.parametrize(("exprs", "message"), BAD_SCHEMAS)
def test_bad_schemas_fail_at_load(tmp_path: Path, exprs: list[Any], message: Any) -> None:
    if message is None:  # a control: legal despite looking odd
        _load(tmp_path, exprs)
        return
    with pytest.raises(QAPISemError, match=message):
        _load(tmp_path, exprs)


def test_top_file_must_be_an_array(tmp_path: Path) -> None:
    top = tmp_path / "s.json"
    top.write_text("{}")
    with pytest.raises(QAPISemError, match="JSON array"):
        load_schema(top)
