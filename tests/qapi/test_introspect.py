"""query-qmp-schema: QEMU's masking and ordering, and the same shapes as QEMU 7.2.

Masked names differ between any two schemas, so entries are compared after
resolving every type reference into the structure it names.  The QEMU side is
``data/qemu-7.2-schema-subset.json``, captured from a real QEMU 7.2.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from qapi.introspect import qmp_schema_info, qmp_schema_info_unmasked
from qapi.qmp_marshal import qmp_marshal
from qapi.qobject_output_visitor import qobject_output_visit
from qapi.schema import qapi_schema
from tests.qapi.support import DATA, Entries, assert_subset, load_test_schema, resolve

QEMU_72: Entries = {
    e["name"]: e for e in json.loads((DATA / "qemu-7.2-schema-subset.json").read_text())["entries"]
}
# Where the emulator implements less than QEMU, it declares a subset.
SUBSET_COMMANDS = {"chardev-add"}


OURS: Entries = {e["name"]: e for e in qmp_schema_info(qapi_schema())}
SHARED = [n for n, e in OURS.items() if n in QEMU_72 and e["meta-type"] in ("command", "event")]


def test_everything_qemu_has_is_compared() -> None:
    emulator_only = {"monitor-add", "monitor-remove", "query-monitors"}
    # QEMU 11.1's shape (only the monitor types): the 7.2 capture has none of it
    emulator_only |= {"object-add"}
    # not in the 7.2 capture; test_introspect_qemu compares them with a live QEMU
    emulator_only |= {"qom-list", "qom-get", "qom-list-types", "object-del"}
    emulator_only |= {"x-oob-test", "x-debug-emit-event", "x-debug-co-sleep"}
    entities = {c.name for c in qapi_schema().commands()} | {e.name for e in qapi_schema().events()}
    assert set(SHARED) == entities - emulator_only


@pytest.mark.parametrize("name", SHARED)
def test_same_shape_as_qemu_7_2(name: str) -> None:
    ours, theirs = resolve(OURS, name), resolve(QEMU_72, name)
    if name in SUBSET_COMMANDS:
        assert_subset(ours, theirs, name)
    else:
        assert ours == theirs


def test_some_entries_verbatim() -> None:
    assert OURS["query-yank"] == {
        "arg-type": OURS["stop"]["arg-type"],
        "ret-type": OURS["query-yank"]["ret-type"],
        "allow-oob": True,
        "name": "query-yank",
        "meta-type": "command",
    }
    assert OURS["x-exit-preconfig"]["features"] == ["unstable"]
    assert OURS["human-monitor-command"]["ret-type"] == "str"
    assert "allow-oob" not in OURS["stop"] and "features" not in OURS["stop"]
    empty = OURS["stop"]["arg-type"]
    assert OURS["STOP"] == {"arg-type": empty, "name": "STOP", "meta-type": "event"}
    assert OURS["int"] == {"json-type": "int", "name": "int", "meta-type": "builtin"}


def _refs(entry: dict[str, Any]) -> list[str]:
    """Type references in the order QEMU's generator makes them."""
    kind = entry["meta-type"]
    if kind in ("command", "event"):
        return [entry[k] for k in ("arg-type", "ret-type") if k in entry]
    if kind == "array":
        return [entry["element-type"]]
    if kind == "object":
        variants = [v["type"] for v in entry.get("variants", [])]
        return [m["type"] for m in entry["members"]] + variants
    if kind == "alternate":
        return [m["type"] for m in entry["members"]]
    return []


@pytest.mark.parametrize("schema", [qapi_schema(), load_test_schema()], ids=["emulator", "test"])
def test_masking_follows_first_use(schema: Any) -> None:
    entries = qmp_schema_info(schema)
    kinds = [e["meta-type"] for e in entries]
    n_entities = len(schema.entities())
    assert set(kinds[:n_entities]) <= {"command", "event"}
    assert [e["name"] for e in entries[:n_entities]] == [e.name for e in schema.entities()]
    first_use: list[int] = []
    for entry in entries:
        for ref in _refs(entry):
            m = re.fullmatch(r"\[*(\d+)\]*", ref)
            if m and int(m.group(1)) not in first_use:
                first_use.append(int(m.group(1)))
    assert first_use == list(range(len(first_use)))
    masked = [e["name"] for e in entries if e["meta-type"] in ("object", "enum", "alternate")]
    assert sorted(masked, key=int) == [str(i) for i in range(len(first_use))]
    for entry in entries:
        if entry["meta-type"] == "array":
            assert entry["name"] == "[" + entry["element-type"] + "]"


def test_every_int_type_shows_as_int() -> None:
    entries = qmp_schema_info(load_test_schema())
    builtins = [e["name"] for e in entries if e["meta-type"] == "builtin"]
    assert sorted(builtins) == ["any", "bool", "int", "null", "number", "str"]
    assert "[int]" in {e["name"] for e in entries}  # lists of uint8 are lists of int


def test_order_of_the_first_entries() -> None:
    entries = qmp_schema_info(qapi_schema())
    head = [(e["name"], e.get("arg-type"), e.get("ret-type")) for e in entries[:3]]
    assert head == [
        ("qmp_capabilities", "0", "1"),
        ("query-version", "1", "2"),
        ("query-commands", "1", "[3]"),
    ]
    types = [e["name"] for e in entries if e["meta-type"] not in ("command", "event")]
    # The work list: each command's types in turn; a list comes before its element.
    assert types[:7] == ["0", "1", "2", "[3]", "3", "[4]", "4"]


def test_unmasked_names() -> None:
    entries = {e["name"]: e for e in qmp_schema_info_unmasked(load_test_schema())}
    assert entries["test-boxed"]["arg-type"] == "TestUnion"
    assert entries["TestUnion"]["tag"] == "kind"
    assert entries["TestUnion"]["variants"][2] == {"case": "three", "type": "q_empty"}
    assert entries["TestUnion"]["features"] == ["unstable"]
    assert entries["TestEnum"]["members"][2] == {"name": "three", "features": ["deprecated"]}
    assert entries["TestAlt"]["members"][0] == {"type": "int"}
    flag = {"name": "flag", "type": "bool", "features": ["unstable"]}
    assert entries["TestStruct"]["members"][-1] == flag
    assert entries["test-ret-list"]["ret-type"] == "[Sized]"


def test_query_qmp_schema_output_is_valid_schema_info_in_member_order() -> None:
    schema = qapi_schema()
    cmd = schema.lookup_command("query-qmp-schema")

    def qmp_query_qmp_schema() -> list[dict[str, Any]]:
        return qmp_schema_info(schema)

    result = qmp_marshal(cmd, qmp_query_qmp_schema)({})
    by_name = {e["name"]: e for e in result}
    assert list(by_name["yank"]) == ["name", "meta-type", "arg-type", "ret-type", "allow-oob"]
    assert list(by_name["x-oob-test"]) == [
        "name", "meta-type", "features", "arg-type", "ret-type", "allow-oob",
    ]  # fmt: skip
    assert cmd.ret_type is not None
    assert qobject_output_visit(cmd.ret_type, qmp_schema_info(load_test_schema())) is not None
