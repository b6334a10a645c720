"""Differential tests against a real qemu-system-x86_64 (skipped when absent).

QEMU gets its QMP monitor on one end of a socketpair (``-chardev
socket,fd=N``), so nothing waits for a socket path to appear; ``-qmp stdio``
would be simpler but QEMU 7.2 stops reading stdio once OOB is enabled.  Every
request here fails before a handler runs, or only reads, so the emulator side
needs no real handlers: the same requests go through qmp_dispatch with
stand-ins.
"""

from __future__ import annotations

import json
import random
import shutil
import socket
import subprocess
from typing import Any, Optional

import pytest

from qapi.introspect import qmp_schema_info
from qapi.qmp_dispatch import CompatPolicy, CompatPolicyInput, QmpDispatchEnv, qmp_dispatch
from qapi.qmp_marshal import qmp_init_marshal
from qapi.qmp_registry import QmpCommandList
from qapi.schema import qapi_schema
from tests.qapi.support import FakeMonitors, assert_subset, resolve, stand_in_handlers
from tests.qapi.test_dispatch import ROW2
from tests.qapi.test_visitor import EMULATOR_CASES

QEMU = "qemu-system-x86_64"
pytestmark = [
    pytest.mark.qemu,
    pytest.mark.skipif(shutil.which(QEMU) is None, reason=f"{QEMU} is not installed"),
]
QUIT = {"execute": "quit", "id": "the-end"}


def _converse(requests: list[Any], options: tuple[str, ...]) -> list[dict[str, Any]]:
    """Every reply QEMU sends until it answers ``quit`` (events left out)."""
    ours, theirs = socket.socketpair()
    argv = [QEMU, "-nodefaults", "-machine", "none", "-display", "none"]
    argv += ["-chardev", f"socket,id=qmp,fd={theirs.fileno()}", "-mon", "chardev=qmp,mode=control"]
    proc = subprocess.Popen([*argv, *options], pass_fds=[theirs.fileno()])
    theirs.close()
    ours.settimeout(30)
    try:
        with ours, ours.makefile("rwb") as f:
            lines = [{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}]
            f.write(b"".join(json.dumps(r).encode() + b"\n" for r in [*lines, *requests, QUIT]))
            f.flush()
            replies: list[dict[str, Any]] = []
            while not replies or replies[-1].get("id") != QUIT["id"]:
                msg = json.loads(f.readline())
                if "event" not in msg and "QMP" not in msg:
                    replies.append(msg)
        proc.wait(30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return replies[1:-1]


def ask_qemu(requests: list[Any], *options: str) -> list[dict[str, Any]]:
    """Send ``requests`` after negotiating OOB; return one reply per request.

    Replies carrying an ``id`` are matched by it (an OOB reply may overtake);
    the others keep their order, as in-band replies do.
    """
    replies = _converse(requests, options)
    by_id = {json.dumps(r["id"]): r for r in replies if "id" in r}
    anonymous = iter([r for r in replies if "id" not in r])
    out = []
    for req in requests:
        has_id = isinstance(req, dict) and "id" in req
        out.append(by_id[json.dumps(req["id"])] if has_id else next(anonymous))
    return out


def ask_emulator(requests: list[Any], env: Optional[QmpDispatchEnv] = None) -> list[Any]:
    cmds = QmpCommandList()
    qmp_init_marshal(cmds, qapi_schema(), stand_in_handlers(qapi_schema(), []))
    env = env or FakeMonitors().env()
    return [qmp_dispatch(cmds, req, True, None, env) for req in requests]


def with_ids(requests: list[dict[str, Any]], prefix: str = "r") -> list[dict[str, Any]]:
    return [{**req, "id": f"{prefix}{i}"} for i, req in enumerate(requests)]


def test_request_validation_matches() -> None:
    requests: list[Any] = [[1], "x", None, 3, {}]
    requests += with_ids([req for req, _ in ROW2])
    requests += with_ids(
        prefix="s",
        requests=[
            {"execute": "nope"},
            {"exec-oob": "stop"},
            {"exec-oob": "query-yank", "arguments": {"x": 1}},
            {"execute": "stop", "arguments": {"a": 1, "b": 2}},
        ],
    )
    odd_ids: list[Any] = [[], {"a": None}, None, True, -1.5]
    requests += [{"id": i, "execute": "nope"} for i in odd_ids]
    assert ask_emulator(requests) == ask_qemu(requests)


def test_argument_errors_match() -> None:
    requests = with_ids([{"execute": cmd, "arguments": args} for cmd, args, _ in EMULATOR_CASES])
    assert ask_emulator(requests) == ask_qemu(requests)


def test_preconfig_and_compat_policy_match() -> None:
    names = [c.name for c in qapi_schema().commands() if c.name in _QEMU_COMMANDS]
    requests = with_ids([{"execute": n, "arguments": {"zz": 1}} for n in names if n != "quit"])
    env = FakeMonitors().env(machine_ready=lambda: False)
    assert ask_emulator(requests, env) == ask_qemu(requests, "--preconfig")
    requests = with_ids([{"execute": "x-exit-preconfig"}])
    policy = CompatPolicy(CompatPolicyInput.REJECT, CompatPolicyInput.REJECT)
    env = FakeMonitors().env(compat_policy=policy)
    compat = ("-compat", "deprecated-input=reject,unstable-input=reject")
    assert ask_emulator(requests, env) == ask_qemu(requests, *compat)


_QEMU_COMMANDS = {c.name for c in qapi_schema().commands()} - {
    "monitor-add", "monitor-remove", "query-monitors",
    "object-add",  # QEMU 11.1's ObjectOptions, monitor types only
    "x-oob-test", "x-debug-emit-event", "x-debug-co-sleep",
}  # fmt: skip


def test_leftover_member_order_matches() -> None:
    rng = random.Random(72)
    alphabet = "abcdefghijklmnopqrstuvwxyz-_0123456789"
    requests = []
    for i in range(80):
        keys = {"".join(rng.choices(alphabet, k=rng.randint(1, 9))) for _ in range(1 + i % 23)}
        args = dict.fromkeys(keys, 1)
        if i % 2:
            args.update({"fdset-id": 1, "fd": 2})
        requests.append({"execute": "remove-fd" if i % 2 else "query-status", "arguments": args})
    requests = with_ids(requests)
    assert ask_emulator(requests) == ask_qemu(requests)


def test_introspection_matches_live_qemu() -> None:
    (reply,) = ask_qemu([{"execute": "query-qmp-schema", "id": 0}])
    theirs = {e["name"]: e for e in reply["return"]}
    ours = {e["name"]: e for e in qmp_schema_info(qapi_schema())}
    for name in sorted(_QEMU_COMMANDS | {e.name for e in qapi_schema().events()}):
        if name == "chardev-add":
            assert_subset(resolve(ours, name), resolve(theirs, name), name)
        else:
            assert resolve(ours, name) == resolve(theirs, name), name
