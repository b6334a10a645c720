"""The command registry and the binding of schema commands to handlers."""

from __future__ import annotations

import types
from typing import Any, Optional

import pytest

from qapi.error import QapiError
from qapi.introspect import query_commands_list
from qapi.qmp_marshal import (
    QmpBindError,
    handler_name,
    py_name,
    qmp_collect_handlers,
    qmp_command_options,
    qmp_init_marshal,
    qmp_marshal,
)
from qapi.qmp_registry import (
    QCO_ALLOW_OOB,
    QCO_ALLOW_PRECONFIG,
    QCO_COROUTINE,
    QCO_NO_OPTIONS,
    QCO_NO_SUCCESS_RESP,
    QapiSpecialFeature,
    QmpCommand,
    QmpCommandList,
    qmp_command_available,
    qmp_command_is_enabled,
    qmp_disable_command,
    qmp_enable_command,
    qmp_find_command,
    qmp_for_each_command,
    qmp_has_success_response,
    qmp_register_command,
)
from qapi.schema import qapi_schema
from tests.qapi.support import Call, load_test_schema, stand_in_handler, stand_in_handlers

TEST_SCHEMA = load_test_schema()


def nothing(args: dict[str, Any]) -> None:
    return None


# -- registry


def test_register_find_and_order() -> None:
    cmds = QmpCommandList()
    qmp_register_command(cmds, "a", nothing)
    qmp_register_command(cmds, "b", nothing, QCO_ALLOW_OOB, QapiSpecialFeature.QAPI_UNSTABLE)
    b = qmp_find_command(cmds, "b")
    assert b is not None and b.options == QCO_ALLOW_OOB
    assert b.special_features == QapiSpecialFeature.QAPI_UNSTABLE
    assert qmp_find_command(cmds, "c") is None
    seen: list[str] = []
    qmp_for_each_command(cmds, lambda cmd: seen.append(cmd.name))
    assert seen == ["a", "b"]


def test_registration_rules_are_asserted() -> None:
    cmds = QmpCommandList()
    with pytest.raises(AssertionError):
        qmp_register_command(cmds, "x", nothing, QCO_ALLOW_OOB | QCO_COROUTINE)
    qmp_register_command(cmds, "x", nothing)
    with pytest.raises(AssertionError, match="registered twice"):
        qmp_register_command(cmds, "x", nothing)


def test_enable_disable() -> None:
    cmds = QmpCommandList()
    qmp_register_command(cmds, "a", nothing)
    cmd = qmp_find_command(cmds, "a")
    assert cmd is not None and qmp_command_is_enabled(cmd)
    qmp_disable_command(cmds, "a", "why")
    assert not qmp_command_is_enabled(cmd) and cmd.disable_reason == "why"
    qmp_enable_command(cmds, "a")
    assert qmp_command_is_enabled(cmd) and cmd.disable_reason is None
    qmp_disable_command(cmds, "unknown")  # ignored, as in QEMU


def test_success_response_and_availability() -> None:
    quiet = QmpCommand("q", nothing, QCO_NO_SUCCESS_RESP)
    early = QmpCommand("e", nothing, QCO_ALLOW_PRECONFIG)
    late = QmpCommand("l", nothing, QCO_NO_OPTIONS)
    assert not qmp_has_success_response(quiet) and qmp_has_success_response(late)
    assert qmp_command_available(late, machine_ready=True)
    assert qmp_command_available(early, machine_ready=False)
    with pytest.raises(QapiError, match=r"^The command 'l' is permitted only after machine"):
        qmp_command_available(late, machine_ready=False)


def test_query_commands_lists_enabled_commands_newest_first() -> None:
    cmds = QmpCommandList()
    for name in ("a", "b", "c"):
        qmp_register_command(cmds, name, nothing)
    qmp_disable_command(cmds, "b")
    assert query_commands_list(cmds) == [{"name": "c"}, {"name": "a"}]


# -- binding


def test_options_come_from_the_schema() -> None:
    cmds = QmpCommandList()
    calls: list[Call] = []
    qmp_init_marshal(cmds, qapi_schema(), stand_in_handlers(qapi_schema(), calls))
    options = {c.name: c.options for c in cmds.commands}
    assert [c.name for c in cmds.commands] == [c.name for c in qapi_schema().commands()]
    assert options["yank"] == QCO_ALLOW_OOB
    assert options["x-debug-co-sleep"] == QCO_COROUTINE
    assert options["qmp_capabilities"] == QCO_ALLOW_PRECONFIG
    assert options["stop"] == QCO_NO_OPTIONS
    cmd = qmp_find_command(cmds, "x-oob-test")
    assert cmd is not None and cmd.special_features == QapiSpecialFeature.QAPI_UNSTABLE
    assert qmp_command_options(TEST_SCHEMA.lookup_command("test-noresp")) == QCO_NO_SUCCESS_RESP
    features = {c.name: c.special_features for c in _bind_test_schema()[0].commands}
    assert features["test-deprecated"] == QapiSpecialFeature.QAPI_DEPRECATED
    assert features["test-unstable"] == QapiSpecialFeature.QAPI_UNSTABLE


def _bind_test_schema() -> tuple[QmpCommandList, list[Call]]:
    cmds = QmpCommandList()
    calls: list[Call] = []
    qmp_init_marshal(cmds, TEST_SCHEMA, stand_in_handlers(TEST_SCHEMA, calls))
    return cmds, calls


def test_every_declared_command_needs_a_handler() -> None:
    handlers = stand_in_handlers(qapi_schema(), [])
    del handlers["query-kvm"]
    handlers["no-such-command"] = nothing
    with pytest.raises(QmpBindError, match=r"no handler for \['query-kvm'\].*'no-such-command'"):
        qmp_init_marshal(QmpCommandList(), qapi_schema(), handlers)


def test_handler_signatures_must_match() -> None:
    cmd = qapi_schema().lookup_command("add-fd")

    def wrong(fdset_id: int) -> None: ...
    def variadic(**kwargs: Any) -> None: ...
    def positional_only(fdset_id: int, opaque: str, /) -> None: ...

    for handler in (wrong, variadic, positional_only):
        with pytest.raises(QmpBindError, match="add-fd"):
            qmp_marshal(cmd, handler)

    def boxed_two(a: Any, b: Any) -> None: ...

    with pytest.raises(QmpBindError, match="boxed handler takes one argument"):
        qmp_marshal(TEST_SCHEMA.lookup_command("test-boxed"), boxed_two)


def test_handler_arguments() -> None:
    got: dict[str, Any] = {}

    def qmp_test_kw(q_in: str, q_from: Optional[int], dash_name: bool) -> None:
        got.update(q_in=q_in, q_from=q_from, dash_name=dash_name)

    marshal = qmp_marshal(TEST_SCHEMA.lookup_command("test-kw"), qmp_test_kw)
    assert marshal.__name__ == "qmp_marshal_test_kw"
    assert marshal({"dash-name": True, "in": "i"}) is None
    assert got == {"q_in": "i", "q_from": None, "dash_name": True}
    assert py_name("in") == "q_in" and py_name("cpu-index") == "cpu_index"
    assert handler_name("human-monitor-command") == "qmp_human_monitor_command"


def test_boxed_handler_gets_the_whole_object() -> None:
    seen: list[Any] = []
    marshal = qmp_marshal(TEST_SCHEMA.lookup_command("test-boxed"), seen.append)
    marshal({"kind": "one", "x": 3})
    assert seen == [{"kind": "one", "x": 3}]


def test_results_are_checked_and_put_in_schema_order() -> None:
    cmd = TEST_SCHEMA.lookup_command("test-ret")
    value = {"flag": True, "n": 2, "s": "s", "base-a": 1}
    ret = qmp_marshal(cmd, stand_in_handler(cmd, [], result=value))({})
    assert list(ret) == ["base-a", "s", "n", "flag"] and ret["n"] == 2.0
    bad = qmp_marshal(cmd, stand_in_handler(cmd, [], result={"s": "s"}))
    with pytest.raises(AssertionError, match=r"test-ret\.base-a: required member"):
        bad({})
    noret = TEST_SCHEMA.lookup_command("test-oob")
    with pytest.raises(AssertionError, match="schema has no returns"):
        qmp_marshal(noret, stand_in_handler(noret, [], result={"x": 1}))({})


def test_collect_handlers_by_qemu_names() -> None:
    module = types.SimpleNamespace(qmp_test_oob=nothing, qmp_test_co=nothing, unrelated=1)

    class State:
        def qmp_test_ret(self) -> dict[str, Any]:
            return {}

    state = State()
    found = qmp_collect_handlers(TEST_SCHEMA, module, state)
    assert set(found) == {"test-oob", "test-co", "test-ret"}
    assert found["test-ret"] == state.qmp_test_ret
    with pytest.raises(QmpBindError, match="2 providers define qmp_test_oob"):
        qmp_collect_handlers(TEST_SCHEMA, module, types.SimpleNamespace(qmp_test_oob=nothing))
