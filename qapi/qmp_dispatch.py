"""Run one QMP request: validate it, find the command, call it, build the reply.

Mirrors ``qapi/qmp-dispatch.c`` (QEMU 9.0 and later for *where* handlers run,
QEMU 7.2 for every wire-visible string) and ``compat_policy_input_ok()`` from
``qapi/qapi-util.c``.

Threads and contexts, as in QEMU:

* in-band requests arrive in the dispatcher coroutine, in the main loop
  thread, holding the BQL.  A ``coroutine`` command runs right there, in the
  coroutine, moved to ``qemu_aio_context`` first (``aio_co_schedule`` and a
  yield: the main thread's current context is always qemu_aio_context, so
  only a real reschedule makes the coroutine's wake-ups, a timer's say, land
  in the context nested ``AIO_WAIT_WHILE`` loops poll) and back to
  ``iohandler_ctx`` afterwards.
  Every other command runs in a one-shot bottom half in ``iohandler_ctx``
  while the coroutine waits: a nested ``aio_poll(qemu_aio_context)`` can
  therefore never start monitor work;
* out-of-band requests arrive outside coroutine context, in the monitor I/O
  thread without the BQL, and run directly.

What the layers above must supply (:class:`QmpDispatchEnv`), since qapi/ never
imports monitor/ or system/: ``monitor_cur``/``monitor_set_cur`` (the
coroutine-to-monitor map lives in monitor/), whether the machine is ready
(the ``--preconfig`` phase lives in system/), and the ``-compat`` policy.  The
environment is passed on every call rather than stored on a command list,
because a monitor switches command lists during negotiation while the
environment stays the same for the whole process.

Replies are dicts: ``{"return": value}`` or ``{"error": {"class", "desc"}}``,
plus ``"id"`` copied unchanged (any JSON value, null included) whenever the
request was an object that had one.  Key order on the wire is the JSON
writer's business.  Only :class:`~qapi.error.QapiError` becomes an error
reply; any other exception is a bug and propagates.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Optional

from qapi.error import ErrorClass, QapiError, error_set, error_setg
from qapi.json_writer import qdict_keys
from qapi.qmp_registry import (
    QapiSpecialFeature,
    QmpCommand,
    QmpCommandList,
    qmp_command_available,
    qmp_find_command,
)
from util.aio import aio_bh_schedule_oneshot, aio_co_schedule, aio_co_wake
from util.coroutine import (
    Coroutine,
    qemu_coroutine_self,
    qemu_coroutine_yield,
    qemu_in_coroutine,
)
from util.main_loop import iohandler_get_aio_context, qemu_get_aio_context
from util.markers import coroutine_fn, main_loop_only, requires_bql

_ABSENT: Any = object()


class CompatPolicyInput(enum.Enum):
    """What ``-compat deprecated-input=`` / ``unstable-input=`` ask for."""

    ACCEPT = "accept"
    REJECT = "reject"
    CRASH = "crash"


# Plain classes rather than dataclasses: importing ``dataclasses`` (and with
# it ``inspect``) and compiling the generated methods is paid at every start-up.
# CompatPolicy and QmpDispatchEnv are read-only by convention.


class CompatPolicy:
    __slots__ = ("deprecated_input", "unstable_input")

    deprecated_input: CompatPolicyInput
    unstable_input: CompatPolicyInput

    def __init__(
        self,
        deprecated_input: CompatPolicyInput = CompatPolicyInput.ACCEPT,
        unstable_input: CompatPolicyInput = CompatPolicyInput.ACCEPT,
    ) -> None:
        self.deprecated_input = deprecated_input
        self.unstable_input = unstable_input


#: The default policy (accept everything); read-only, so one can be shared.
_ACCEPT_ALL = CompatPolicy()


def _machine_always_ready() -> bool:
    return True


class QmpDispatchEnv:
    """The hooks :func:`qmp_dispatch` needs from monitor/ and system/.

    ``monitor_cur()`` returns the current monitor of the calling coroutine (or
    thread); ``monitor_set_cur(co, mon)`` sets it (``None`` clears it) and
    returns the old one, both keyed by ``qemu_coroutine_self()``.  Monitors
    are opaque here, hence ``Any``.  ``machine_ready()`` is false while
    ``--preconfig`` holds the machine back.
    """

    __slots__ = ("compat_policy", "machine_ready", "monitor_cur", "monitor_set_cur")

    monitor_cur: Callable[[], Any]
    monitor_set_cur: Callable[[Coroutine, Any], Any]
    machine_ready: Callable[[], bool]
    compat_policy: CompatPolicy

    def __init__(
        self,
        monitor_cur: Callable[[], Any],
        monitor_set_cur: Callable[[Coroutine, Any], Any],
        machine_ready: Callable[[], bool] = _machine_always_ready,
        compat_policy: CompatPolicy = _ACCEPT_ALL,
    ) -> None:
        self.monitor_cur = monitor_cur
        self.monitor_set_cur = monitor_set_cur
        self.machine_ready = machine_ready
        self.compat_policy = compat_policy


# ---------------------------------------------------------------------------
# Request checks


#: Members a request may have whatever ``allow_oob`` says.
_PLAIN_REQUEST_MEMBERS = frozenset(("execute", "arguments", "id"))


def qmp_dispatch_check_obj(request: dict[str, Any], allow_oob: bool) -> None:
    """Check the request's own members, in QDict order (so with several
    problems, the one reported depends on the keys' hashes, as in QEMU)."""
    if (
        request.keys() <= _PLAIN_REQUEST_MEMBERS
        and type(request.get("execute")) is str
        and ("arguments" not in request or type(request["arguments"]) is dict)
    ):
        return  # the usual request: nothing to report, so no order to compute
    exec_key: Optional[str] = None
    for name in qdict_keys(request):
        value = request[name]
        if name == "execute" or (name == "exec-oob" and allow_oob):
            if not isinstance(value, str):
                raise error_setg("QMP input member '%s' must be a string", name)
            if exec_key is not None:
                raise error_setg("QMP input member '%s' clashes with '%s'", name, exec_key)
            exec_key = name
        elif name == "arguments":
            if not isinstance(value, dict):
                raise error_setg("QMP input member 'arguments' must be an object")
        elif name != "id":
            raise error_setg("QMP input member '%s' is unexpected", name)
    if exec_key is None:
        raise error_setg("QMP input lacks member 'execute'")


def qmp_is_oob(request: dict[str, Any]) -> bool:
    """Does the request ask to be run out of band?"""
    return "exec-oob" in request and "execute" not in request


def qmp_error_response(err: QapiError) -> dict[str, Any]:
    return {"error": {"class": err.error_class.value, "desc": err.desc}}


def compat_policy_input_ok(
    features: QapiSpecialFeature,
    policy: CompatPolicy,
    error_class: ErrorClass,
    kind: str,
    name: str,
) -> None:
    """Raise if ``-compat`` rejects input marked deprecated or unstable."""
    if not features:
        return  # most input is neither, and Flag ``&`` is slow
    checks = (
        (QapiSpecialFeature.QAPI_DEPRECATED, "Deprecated", policy.deprecated_input),
        (QapiSpecialFeature.QAPI_UNSTABLE, "Unstable", policy.unstable_input),
    )
    for flag, adjective, verdict in checks:
        if not features & flag or verdict is CompatPolicyInput.ACCEPT:
            continue
        if verdict is CompatPolicyInput.CRASH:
            raise AssertionError(f"{adjective} {kind} {name} used with {kind}-input=crash")
        raise error_set(error_class, "%s %s %s disabled by policy", adjective, kind, name)


def _lookup(
    cmds: QmpCommandList, request: dict[str, Any], allow_oob: bool, env: QmpDispatchEnv
) -> tuple[QmpCommand, bool]:
    """Find the command and check it may run now; returns it and whether OOB."""
    qmp_dispatch_check_obj(request, allow_oob)
    oob = "execute" not in request
    assert allow_oob or not oob
    command: str = request["exec-oob" if oob else "execute"]
    cmd = qmp_find_command(cmds, command)
    if cmd is None:
        raise error_set(ErrorClass.COMMAND_NOT_FOUND, "The command %s has not been found", command)
    compat_policy_input_ok(
        cmd.special_features, env.compat_policy, ErrorClass.COMMAND_NOT_FOUND, "command", command
    )
    if not cmd.enabled:
        reason = cmd.disable_reason
        raise error_set(
            ErrorClass.COMMAND_NOT_FOUND,
            "Command %s has been disabled%s%s",
            command,
            ": " if reason else "",
            reason or "",
        )
    if oob and not cmd.allow_oob:
        raise error_setg("The command %s does not support OOB", command)
    qmp_command_available(cmd, env.machine_ready())
    return cmd, oob


# ---------------------------------------------------------------------------
# Running the handler


class QmpDispatchBH:
    """Everything the bottom half needs, and what it hands back (QEMU's struct)."""

    __slots__ = ("args", "bug", "cmd", "co", "cur_mon", "env", "err", "ret")

    cmd: QmpCommand
    cur_mon: Optional[object]
    args: dict[str, Any]
    env: QmpDispatchEnv
    co: Coroutine
    ret: Any
    err: Optional[QapiError]
    bug: Optional[BaseException]

    def __init__(
        self,
        cmd: QmpCommand,
        cur_mon: Optional[object],
        args: dict[str, Any],
        env: QmpDispatchEnv,
        co: Coroutine,
        ret: Any = None,
        err: Optional[QapiError] = None,
        bug: Optional[BaseException] = None,
    ) -> None:
        self.cmd = cmd
        self.cur_mon = cur_mon
        self.args = args
        self.env = env
        self.co = co
        self.ret = ret
        self.err = err
        self.bug = bug


def _call_handler(
    cmd: QmpCommand, args: dict[str, Any], cur_mon: Optional[object], env: QmpDispatchEnv
) -> Any:
    """Run the handler with the current monitor set (QEMU's ``cmd->fn()``
    between two ``monitor_set_cur()``)."""
    co = qemu_coroutine_self()
    env.monitor_set_cur(co, cur_mon)
    try:
        return cmd.fn(args)
    finally:
        env.monitor_set_cur(co, None)


def _call_handler_captured(data: QmpDispatchBH) -> None:
    """Run the handler for a hand-off, keeping its outcome in ``data``."""
    try:
        data.ret = _call_handler(data.cmd, data.args, data.cur_mon, data.env)
    except QapiError as err:
        data.err = err


@main_loop_only
@requires_bql
def do_qmp_dispatch_bh(data: QmpDispatchBH) -> None:
    """One-shot BH in iohandler_ctx: run an ordinary command, wake the dispatcher.

    A bug in the handler is handed to the coroutine to re-raise, so the
    dispatcher fails loudly instead of waiting forever for this wake-up.
    """
    try:
        assert data.env.monitor_cur() is None
        _call_handler_captured(data)
    except BaseException as bug:
        data.bug = bug
    aio_co_wake(data.co)


@coroutine_fn
def _run_in_coroutine(data: QmpDispatchBH) -> None:
    aio_co_schedule(qemu_get_aio_context(), data.co)
    qemu_coroutine_yield()
    _call_handler_captured(data)
    aio_co_schedule(iohandler_get_aio_context(), data.co)
    qemu_coroutine_yield()


@coroutine_fn
def _run_in_bh(data: QmpDispatchBH) -> None:
    aio_bh_schedule_oneshot(
        iohandler_get_aio_context(), do_qmp_dispatch_bh, data, f"qmp_dispatch:{data.cmd.name}"
    )
    qemu_coroutine_yield()
    if data.bug is not None:
        raise data.bug


def _run_command(
    cmd: QmpCommand, args: dict[str, Any], oob: bool, cur_mon: Optional[object], env: QmpDispatchEnv
) -> Any:
    in_coroutine = qemu_in_coroutine()
    assert not (oob and in_coroutine)
    assert env.monitor_cur() is None
    if not cmd.coroutine and not in_coroutine:
        return _call_handler(cmd, args, cur_mon, env)  # OOB, or any caller outside coroutines
    data = QmpDispatchBH(cmd, cur_mon, args, env, qemu_coroutine_self())
    if cmd.coroutine and in_coroutine:
        _run_in_coroutine(data)
    else:
        # Only an ordinary command inside the dispatcher gets here: OOB calls
        # come from outside coroutines and OOB commands are never coroutine ones.
        assert not oob and in_coroutine and not cmd.coroutine
        _run_in_bh(data)
    if data.err is not None:
        raise data.err
    return data.ret


def qmp_dispatch(
    cmds: QmpCommandList,
    request: Any,
    allow_oob: bool,
    cur_mon: Optional[object],
    env: QmpDispatchEnv,
) -> Optional[dict[str, Any]]:
    """Execute ``request`` and return the reply, or None for a command
    without success response (QCO_NO_SUCCESS_RESP) that succeeded."""
    request_id = _ABSENT
    try:
        if not isinstance(request, dict):
            raise error_setg("QMP input must be a JSON object")
        request_id = request.get("id", _ABSENT)
        cmd, oob = _lookup(cmds, request, allow_oob, env)
        ret = _run_command(cmd, request.get("arguments", {}), oob, cur_mon, env)
        if not cmd.success_response:
            assert ret is None, f"{cmd.name} has no success response but returned {ret!r}"
            return None
        rsp: dict[str, Any] = {"return": {} if ret is None else ret}
    except QapiError as err:
        rsp = qmp_error_response(err)
    if request_id is not _ABSENT:
        rsp["id"] = request_id
    return rsp
