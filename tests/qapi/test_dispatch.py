"""qmp_dispatch: every validation row of the reference, in QEMU's order, with
QEMU 7.2's classes and texts, and ``id`` echoed whatever its JSON type.

These run outside coroutine context (as OOB dispatch does), so handlers run
directly; the coroutine/BH hand-off has its own tests.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from qapi.error import ErrorClass, error_set
from qapi.qmp_dispatch import (
    CompatPolicy,
    CompatPolicyInput,
    QmpDispatchEnv,
    qmp_dispatch,
    qmp_error_response,
    qmp_is_oob,
)
from qapi.qmp_marshal import qmp_init_marshal
from qapi.qmp_registry import (
    QmpCommandList,
    qmp_disable_command,
    qmp_enable_command,
    qmp_find_command,
)
from qapi.schema import Schema, qapi_schema
from tests.qapi.support import Call, FakeMonitors, load_test_schema, stand_in_handlers

MON = object()  # stands for the monitor the request came from


class Rig:
    """A command list bound to recording handlers, and a fake monitor map."""

    def __init__(self, schema: Schema) -> None:
        self.calls: list[Call] = []
        self.cmds = QmpCommandList()
        qmp_init_marshal(self.cmds, schema, stand_in_handlers(schema, self.calls))
        self.monitors = FakeMonitors()
        self.env = self.monitors.env()

    def dispatch(
        self, request: Any, allow_oob: bool = True, env: Optional[QmpDispatchEnv] = None
    ) -> Optional[dict[str, Any]]:
        return qmp_dispatch(self.cmds, request, allow_oob, MON, env or self.env)


@pytest.fixture
def rig() -> Rig:
    return Rig(qapi_schema())


@pytest.fixture
def test_rig() -> Rig:
    return Rig(load_test_schema())


def generic(desc: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}, **extra}


def not_found(desc: str, **extra: Any) -> dict[str, Any]:
    return {"error": {"class": "CommandNotFound", "desc": desc}, **extra}


# -- row 1: not an object (no id, since there is nothing to take it from)


@pytest.mark.parametrize("request_", [[1], "x", None, 3, 1.5, True, [{"id": 1}]])
def test_not_an_object(rig: Rig, request_: Any) -> None:
    assert rig.dispatch(request_) == generic("QMP input must be a JSON object")


# -- rows 2a-2e: the request's own members


ROW2: list[tuple[dict[str, Any], str]] = [
    ({"execute": 1}, "QMP input member 'execute' must be a string"),
    ({"execute": None}, "QMP input member 'execute' must be a string"),
    ({"exec-oob": ["stop"]}, "QMP input member 'exec-oob' must be a string"),
    ({"execute": "stop", "exec-oob": "stop"}, "QMP input member 'execute' clashes with 'exec-oob'"),
    ({"exec-oob": "stop", "execute": "stop"}, "QMP input member 'execute' clashes with 'exec-oob'"),
    ({"exec-oob": 1, "execute": 2}, "QMP input member 'exec-oob' must be a string"),
    ({"execute": "stop", "arguments": []}, "QMP input member 'arguments' must be an object"),
    ({"execute": "stop", "arguments": None}, "QMP input member 'arguments' must be an object"),
    ({"execute": "stop", "foo": 1}, "QMP input member 'foo' is unexpected"),
    ({"execute": "stop", "foo": 1, "bar": 2}, "QMP input member 'bar' is unexpected"),
    ({"bar": 2, "foo": 1, "execute": "stop"}, "QMP input member 'bar' is unexpected"),
    ({"arguments": {}}, "QMP input lacks member 'execute'"),
    ({}, "QMP input lacks member 'execute'"),
]


@pytest.mark.parametrize(("request_", "desc"), ROW2)
def test_request_members(rig: Rig, request_: dict[str, Any], desc: str) -> None:
    assert rig.dispatch(request_) == generic(desc)
    assert rig.dispatch({**request_, "id": "r"}) == generic(desc, id="r")


def test_exec_oob_is_unexpected_without_oob(rig: Rig) -> None:
    rsp = rig.dispatch({"exec-oob": "yank", "arguments": {"instances": []}}, allow_oob=False)
    assert rsp == generic("QMP input member 'exec-oob' is unexpected")
    rsp = rig.dispatch({"execute": "stop", "exec-oob": "stop"}, allow_oob=False)
    assert rsp == generic("QMP input member 'exec-oob' is unexpected")


def test_lacks_execute_with_only_an_id(rig: Rig) -> None:
    assert rig.dispatch({"id": 5}) == generic("QMP input lacks member 'execute'", id=5)


# -- rows 3-7: the command


def test_command_not_found(rig: Rig) -> None:
    rsp = rig.dispatch({"execute": "nope", "id": "x"})
    assert rsp == not_found("The command nope has not been found", id="x")


@pytest.mark.parametrize(
    ("policy", "command", "desc"),
    [
        (
            CompatPolicy(deprecated_input=CompatPolicyInput.REJECT),
            "test-deprecated",
            "Deprecated command test-deprecated disabled by policy",
        ),
        (
            CompatPolicy(unstable_input=CompatPolicyInput.REJECT),
            "test-unstable",
            "Unstable command test-unstable disabled by policy",
        ),
    ],
)
def test_compat_policy_rejects(
    test_rig: Rig, policy: CompatPolicy, command: str, desc: str
) -> None:
    env = test_rig.monitors.env(compat_policy=policy)
    assert test_rig.dispatch({"execute": command, "id": 1}, env=env) == not_found(desc, id=1)
    # the other kind is still accepted
    other = "test-unstable" if command == "test-deprecated" else "test-deprecated"
    assert test_rig.dispatch({"execute": other}, env=env) == {"return": {}}


def test_compat_policy_crash_is_an_abort(test_rig: Rig) -> None:
    env = test_rig.monitors.env(compat_policy=CompatPolicy(unstable_input=CompatPolicyInput.CRASH))
    with pytest.raises(AssertionError, match="Unstable command test-unstable"):
        test_rig.dispatch({"execute": "test-unstable"}, env=env)


def test_emulator_unstable_commands_follow_policy(rig: Rig) -> None:
    env = rig.monitors.env(compat_policy=CompatPolicy(unstable_input=CompatPolicyInput.REJECT))
    rsp = rig.dispatch({"execute": "x-exit-preconfig"}, env=env)
    assert rsp == not_found("Unstable command x-exit-preconfig disabled by policy")


def test_disabled_command(rig: Rig) -> None:
    qmp_disable_command(rig.cmds, "stop")
    assert rig.dispatch({"execute": "stop", "id": []}) == not_found(
        "Command stop has been disabled", id=[]
    )
    qmp_disable_command(rig.cmds, "stop", "the agent is in frozen state")
    assert rig.dispatch({"execute": "stop"}) == not_found(
        "Command stop has been disabled: the agent is in frozen state"
    )
    qmp_enable_command(rig.cmds, "stop")
    assert rig.dispatch({"execute": "stop"}) == {"return": {}}


def test_oob_for_a_command_without_allow_oob(rig: Rig) -> None:
    rsp = rig.dispatch({"exec-oob": "stop", "id": {"a": 1}})
    assert rsp == generic("The command stop does not support OOB", id={"a": 1})


def test_oob_command_runs_out_of_band(rig: Rig) -> None:
    rsp = rig.dispatch({"exec-oob": "yank", "arguments": {"instances": []}, "id": None})
    assert rsp == {"return": {}, "id": None}
    assert rig.calls == [("yank", {"instances": []})]
    # and in band too
    assert rig.dispatch({"execute": "query-yank"}) == {"return": []}


def test_preconfig(rig: Rig) -> None:
    env = rig.monitors.env(machine_ready=lambda: False)
    rsp = rig.dispatch({"execute": "system_reset", "id": 2}, env=env)
    desc = "The command 'system_reset' is permitted only after machine initialization has completed"
    assert rsp == generic(desc, id=2)
    assert rig.dispatch({"execute": "query-status"}, env=env) == {
        "return": {"running": False, "singlestep": False, "status": "debug"}
    }


def test_checks_run_in_qemus_order(test_rig: Rig, rig: Rig) -> None:
    # policy before disabled
    qmp_disable_command(test_rig.cmds, "test-unstable")
    env = test_rig.monitors.env(compat_policy=CompatPolicy(unstable_input=CompatPolicyInput.REJECT))
    rsp = test_rig.dispatch({"execute": "test-unstable"}, env=env)
    assert rsp == not_found("Unstable command test-unstable disabled by policy")
    # disabled before "does not support OOB"
    qmp_disable_command(rig.cmds, "stop")
    assert rig.dispatch({"exec-oob": "stop"}) == not_found("Command stop has been disabled")
    # "does not support OOB" before preconfig
    env = rig.monitors.env(machine_ready=lambda: False)
    assert rig.dispatch({"exec-oob": "cont"}, env=env) == generic(
        "The command cont does not support OOB"
    )
    # preconfig before argument checking
    rsp = rig.dispatch({"execute": "getfd", "arguments": {"x": 1}}, env=env)
    assert rsp is not None and "machine initialization" in rsp["error"]["desc"]
    # request members before the command lookup
    assert rig.dispatch({"execute": "nope", "foo": 1}) == generic(
        "QMP input member 'foo' is unexpected"
    )


# -- rows 8-9: arguments and handlers


def test_argument_errors_keep_the_id(rig: Rig) -> None:
    rsp = rig.dispatch({"execute": "system_reset", "arguments": {"a": 1}, "id": 1.5})
    assert rsp == generic("Parameter 'a' is unexpected", id=1.5)
    assert rig.calls == []


def test_handler_errors_keep_their_class(rig: Rig) -> None:
    def chardev_remove(id: str) -> None:
        raise error_set(ErrorClass.DEVICE_NOT_FOUND, "Chardev '%s' not found", id)

    cmd = qmp_find_command(rig.cmds, "chardev-remove")
    assert cmd is not None
    cmd.fn = lambda args: chardev_remove(**args)
    rsp = rig.dispatch({"execute": "chardev-remove", "arguments": {"id": "c"}, "id": 7})
    assert rsp == {"error": {"class": "DeviceNotFound", "desc": "Chardev 'c' not found"}, "id": 7}


def test_bugs_in_handlers_are_not_replies(rig: Rig) -> None:
    cmd = qmp_find_command(rig.cmds, "stop")
    assert cmd is not None

    def broken(args: dict[str, Any]) -> None:
        raise KeyError("oops")

    cmd.fn = broken
    with pytest.raises(KeyError):
        rig.dispatch({"execute": "stop"})
    assert rig.monitors.cur == {}  # the current monitor was still cleared


# -- success replies


def test_missing_arguments_mean_empty_object(rig: Rig) -> None:
    assert rig.dispatch({"execute": "add-fd"}) == {"return": {"fdset-id": 0, "fd": 0}}
    assert rig.calls == [("add-fd", {"fdset_id": None, "opaque": None})]


def test_no_returns_gives_empty_object_and_no_success_response_gives_nothing(
    test_rig: Rig,
) -> None:
    request = {"execute": "test-kw", "arguments": {"in": "", "dash-name": True}}
    assert test_rig.dispatch(request) == {"return": {}}
    assert test_rig.dispatch({"execute": "test-noresp", "id": 1}) is None
    # an error still gets a reply
    assert test_rig.dispatch({"execute": "test-noresp", "arguments": {"x": 1}}) == generic(
        "Parameter 'x' is unexpected"
    )


IDS = [0, -1, 2**64 - 1, 1.5, "", "x", None, True, False, [], [1, "a"], {}, {"a": {"b": [None]}}]


@pytest.mark.parametrize("request_id", IDS, ids=repr)
def test_id_of_every_json_type_is_echoed(rig: Rig, request_id: Any) -> None:
    rsp = rig.dispatch({"id": request_id, "execute": "query-kvm"})
    assert rsp == {"return": {"enabled": False, "present": False}, "id": request_id}
    assert rsp is not None and rsp["id"] is request_id
    rsp = rig.dispatch({"execute": "nope", "id": request_id})
    assert rsp is not None and rsp["id"] is request_id
    rsp = rig.dispatch({"execute": 0, "id": request_id})
    assert rsp is not None and rsp["id"] is request_id


def test_no_id_no_id_member(rig: Rig) -> None:
    rsp = rig.dispatch({"execute": "stop"})
    assert rsp == {"return": {}}


def test_current_monitor_is_set_only_around_the_handler(rig: Rig) -> None:
    seen: list[object] = []
    cmd = qmp_find_command(rig.cmds, "stop")
    assert cmd is not None
    cmd.fn = lambda args: seen.append(rig.monitors.monitor_cur())
    assert rig.dispatch({"execute": "stop"}) == {"return": {}}
    assert seen == [MON] and rig.monitors.cur == {}
    leader = rig.monitors.log[-1][0]
    assert rig.monitors.log[-2:] == [(leader, MON), (leader, None)]


def test_a_current_monitor_left_set_is_a_bug(rig: Rig) -> None:
    rig.monitors.monitor_set_cur(_leader(), MON)
    with pytest.raises(AssertionError):
        rig.dispatch({"execute": "stop"})


def _leader() -> Any:
    from util.coroutine import qemu_coroutine_self

    return qemu_coroutine_self()


def test_qmp_is_oob() -> None:
    assert qmp_is_oob({"exec-oob": "x"})
    assert not qmp_is_oob({"execute": "x"})
    assert not qmp_is_oob({"execute": "x", "exec-oob": "y"})
    assert not qmp_is_oob({})


def test_qmp_error_response() -> None:
    err = error_set(ErrorClass.KVM_MISSING_CAP, "no %s", "kvm")
    assert qmp_error_response(err) == {"error": {"class": "KVMMissingCap", "desc": "no kvm"}}
