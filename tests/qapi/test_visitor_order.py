"""Which of several problems is reported: QDict order and glib hash-table order.

The data file holds requests sent to a real QEMU 7.2 and the error it gave;
the emulator must name the same member in every case.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from qapi._ghash import GStrHashSet, g_str_hash
from qapi.error import QapiError
from qapi.json_writer import qdict_order, tdb_hash
from qapi.qmp_dispatch import qmp_dispatch_check_obj
from qapi.qobject_input_visitor import qmp_input_command_args
from qapi.schema import qapi_schema
from tests.qapi.support import DATA

CASES = json.loads((DATA / "qemu-7.2-member-order.json").read_text())["cases"]


def first_problem(request: dict[str, Any]) -> str:
    try:
        qmp_dispatch_check_obj(request, allow_oob=True)
        cmd = qapi_schema().lookup_command(request["execute"])
        qmp_input_command_args(cmd, request.get("arguments", {}))
    except QapiError as err:
        return err.desc
    raise AssertionError("no error")


@pytest.mark.parametrize("case", CASES, ids=range(len(CASES)))
def test_same_member_as_qemu(case: dict[str, Any]) -> None:
    assert first_problem(case["request"]) == case["desc"]


def test_qdict_order_matches_the_greeting() -> None:
    # QEMU's greeting lists VersionTriple as micro, minor, major: the first two
    # share bucket 225 and come out newest first.
    assert tdb_hash("micro") % 512 == tdb_hash("minor") % 512 == 225
    assert qdict_order(["major", "minor", "micro"]) == ("micro", "minor", "major")


def test_qdict_order_is_by_bucket_then_newest_first() -> None:
    keys = ["execute", "arguments", "id", "exec-oob"]
    order = qdict_order(keys)
    buckets = [tdb_hash(k) % 512 for k in order]
    assert buckets == sorted(buckets) and sorted(order) == sorted(keys)


def test_g_str_hash_reads_signed_chars() -> None:
    assert g_str_hash("") == 5381
    assert g_str_hash("a") == 5381 * 33 + 97
    assert g_str_hash("\u00e9") == ((5381 * 33 + (0xC3 - 256)) * 33 + (0xA9 - 256)) & 0xFFFFFFFF


def test_hash_set_grows_shrinks_and_keeps_members() -> None:
    table = GStrHashSet()
    keys = [f"k{i}" for i in range(40)]
    for key in keys:
        table.add(key)
    table.add("k3")  # already there: no change
    assert sorted(table) == sorted(keys) and len(table) == 40
    grown = table._size
    for key in keys[:37]:
        table.discard(key)
    table.discard("absent")
    assert sorted(table) == ["k37", "k38", "k39"] and len(table) == 3
    assert table._size < grown
