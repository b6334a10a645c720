#!/usr/bin/env python3
"""Record QMP request/response byte transcripts from a real qemu-system-x86_64.

Writes ``tests/integration/data/qemu72_transcripts.json``, which
``tests/integration/test_transcripts.py`` replays against the emulator, so the
suite has byte-exact expectations on machines without QEMU.

Each case starts QEMU with the integration tier's argv (``harness.launch``),
opens one connection and runs its steps.  A step sends bytes and records every
message up to a stop condition: the greeting, the reply to a given id, or EOF.
Steps without an explicit stop append ``harness.PROBE`` and stop at its reply,
so id-less error replies are captured too.  Every case ends with ``qmp_capabilities`` and ``quit``.
Only the greeting's version/package and event timestamps are masked
(``harness.mask_raw``).

Usage (from the repository root)::

    python -m tools.capture_qemu_transcripts [--output PATH] [--check]

``--check`` captures afresh and fails if the result differs from the file.
Runs in the main thread only; QEMU is the only other process involved.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

from tests.integration.harness import (
    PROBE,
    QEMU_BINARY,
    QMPLine,
    launched,
    mask_raw,
    monitor_args,
)
from tests.integration.test_qmp_protocol import HMP, IDS, MALFORMED

REPO_ROOT = Path(__file__).resolve().parents[1]

DEFAULT_OUTPUT = REPO_ROOT / "tests" / "integration" / "data" / "qemu72_transcripts.json"

FORMAT_NOTE = (
    "Each case: start the target with the common argv plus extra_args (pretty adds "
    "',pretty=on' to -mon), connect once, run the steps in order. A step sends 'send' "
    "(a latin-1 string: one character per byte) and then receives len(expect) messages "
    "(each 'expect' item is one message's exact bytes, CRLF included, after masking the "
    "greeting's version/package and event timestamps); with 'unordered' the messages may "
    "arrive in any order; with 'eof' the server then closes the connection."
)


@dataclass
class Step:
    """Bytes to send and where to stop reading."""

    send: bytes = b""
    #: "probe" (append PROBE, stop at its reply), "greeting", "eof", or "id"
    stop: str = "probe"
    #: the reply id to stop at when ``stop == "id"``
    until_id: Any = None


@dataclass
class Case:
    """One QEMU process, one connection, several steps."""

    name: str
    description: str
    steps: list[Step]
    extra_args: list[str] = field(default_factory=list)
    pretty: bool = False


def req(send: bytes, until_id: Any) -> Step:
    """A request whose reply (id *until_id*) ends the step."""
    return Step(send, "id", until_id)


NEGOTIATE = req(b'{"execute": "qmp_capabilities", "id": "neg"}\n', "neg")
NEGOTIATE_OOB = req(
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}, "id": "neg"}\n', "neg"
)
#: Ends every case; negotiates first in case the case did not (else that part just fails).
QUIT = Step(
    b'{"execute": "qmp_capabilities", "id": "fin"}\n{"execute": "quit", "id": "quit"}', "eof"
)


def hmp(command_line: str, req_id: str) -> Step:
    """A human-monitor-command request."""
    msg = {"execute": "human-monitor-command", "arguments": {"command-line": command_line}}
    msg["id"] = req_id
    return req(json.dumps(msg).encode() + b"\n", req_id)


def build_cases() -> list[Case]:
    """The protocol cases of the integration tier, as transcripts."""
    malformed = [Step(data) for _, data, _ in MALFORMED]
    ids_negotiating = [Step(b'{"execute": "query-name", "id": ' + s + b"}") for s, _ in IDS]
    ids_command = [
        Step(b'{"execute": "query-name", "id": %s}{"execute": "nope", "id": %s}' % (s, s))
        for s, _ in IDS
    ]
    oob_errors = [
        b"{ 'exec-oob': 'query-name', 'id': 1 }",
        b"{ 'exec-oob': 'query-status' }",
        b'{"exec-oob": "qmp_capabilities", "id": 2}',
        b'{"exec-oob": "no-such-cmd", "id": 3}',
        b'{"exec-oob": 1, "id": 4}',
        b'{"exec-oob": "query-name", "execute": "query-name", "id": 5}',
        b'{"execute": "query-name", "exec-oob": "query-name", "id": 6}',
        b'{"exec-oob": "migrate-pause", "arguments": [], "id": 7}',
        b'{"exec-oob": "migrate-pause", "arguments": {"x": 1}, "id": 8}',
        b'{"exec-oob": "migrate-pause", "id": 9, "extra": 1}',
        b'{"exec-oob": "migrate-pause", "id": 10}',
        b'{"execute": "migrate-pause", "id": 11}',
    ]
    status = req(b'{"execute": "query-status", "id": "qs"}', "qs")
    return [
        Case("greeting", "the greeting on a socket chardev", [Step(stop="greeting")]),
        Case(
            "negotiation",
            "commands before qmp_capabilities, bad capabilities, success, repetition",
            [
                Step(stop="greeting"),
                Step(b"{ 'execute': 'query-version' }"),
                req(b'{"execute": "query-version", "id": 1}', 1),
                req(b'{"execute": "query-name", "arguments": {"x": 1}, "id": 2}', 2),
                Step(
                    b"{'execute': 'qmp_capabilities',"
                    b" 'arguments': {'enable': ['cap-does-not-exist']}}"
                ),
                req(b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 3}', 3),
                req(b'{"execute": "qmp_capabilities", "arguments": {"bogus": 1}, "id": 4}', 4),
                req(
                    b'{"execute": "qmp_capabilities",'
                    b' "arguments": {"enable": ["oob", "oob"]}, "id": 5}',
                    5,
                ),
                req(b'{"execute": "qmp_capabilities", "id": 6}', 6),
                Step(b"{ 'execute': 'qmp_capabilities' }"),
            ],
        ),
        Case(
            "malformed-negotiating",
            "qmp-test.c test_malformed and more, before negotiation, each followed by a probe",
            [Step(stop="greeting"), *malformed],
        ),
        Case(
            "malformed-command",
            "the same inputs after negotiation without OOB",
            [Step(stop="greeting"), NEGOTIATE, *malformed],
        ),
        Case(
            "ids",
            "an id of every JSON type, echoed in errors and successes",
            [Step(stop="greeting"), *ids_negotiating, NEGOTIATE, *ids_command],
        ),
        Case(
            "exec-oob",
            "exec-oob validation and migrate-pause outside postcopy, OOB enabled",
            [Step(stop="greeting"), NEGOTIATE_OOB, *(Step(b) for b in oob_errors)],
        ),
        Case(
            "run-state",
            "query-name/query-status, stop/cont with events, system_reset, unknown command",
            [
                Step(stop="greeting"),
                NEGOTIATE,
                req(b'{"execute": "query-name", "id": "n"}', "n"),
                status,
                req(b'{"execute": "stop", "id": "s1"}', "s1"),
                status,
                req(b'{"execute": "stop", "id": "s2"}', "s2"),
                req(b'{"execute": "cont", "id": "c1"}', "c1"),
                req(b'{"execute": "cont", "id": "c2"}', "c2"),
                req(b'{"execute": "system_reset", "id": "r"}', "r"),
                req(b'{"execute": "foo", "id": "u"}', "u"),
                req(b'{"execute": "human-monitor-command", "id": 2}', 2),
            ],
            extra_args=["-name", "vm1"],
        ),
        Case(
            "prelaunch",
            "-S: prelaunch until cont",
            [
                Step(stop="greeting"),
                NEGOTIATE,
                status,
                req(b'{"execute": "cont", "id": "c"}', "c"),
                status,
            ],
            extra_args=["-S"],
        ),
        Case(
            "hmp",
            "human-monitor-command output",
            [Step(stop="greeting"), NEGOTIATE, *(hmp(c, f"h{i}") for i, (c, _) in enumerate(HMP))],
        ),
        Case(
            "preconfig",
            "--preconfig: commands refused until x-exit-preconfig, then running",
            [
                Step(stop="greeting"),
                NEGOTIATE,
                status,
                req(b'{"execute": "stop", "id": 1}', 1),
                req(b'{"execute": "system_reset", "id": 2}', 2),
                req(b'{"execute": "query-name", "id": 3}', 3),
                req(b'{"execute": "x-exit-preconfig", "id": "x"}', "x"),
                status,
                req(b'{"execute": "x-exit-preconfig", "id": "again"}', "again"),
            ],
            extra_args=["--preconfig"],
        ),
        Case(
            "pretty",
            "pretty=on output",
            [
                Step(stop="greeting"),
                Step(b'{"execute": "query-name"}'),
                NEGOTIATE,
                req(b'{"execute": "query-name", "id": "n"}', "n"),
                status,
                req(b'{"execute": "stop", "id": "s"}', "s"),
                req(b'{"execute": "nope", "id": "e"}', "e"),
                req(
                    b'{"execute": "query-name", "id": [1, {"a": [], "b": {}}]}',
                    [1, {"a": [], "b": {}}],
                ),
                Step(b"{]\n"),
            ],
            extra_args=["-name", "vm1"],
            pretty=True,
        ),
    ]


def _read_step(client: QMPLine, step: Step) -> list[bytes]:
    """Receive the messages of *step* (its bytes already sent)."""
    if step.stop == "greeting":
        return [client.recv_greeting()[0]]
    if step.stop == "eof":
        return [raw for raw, _ in client.recv_until_eof()]
    want = "probe" if step.stop == "probe" else step.until_id
    out = []
    while True:
        raw, msg = client.recv_msg()
        out.append(raw)
        if isinstance(msg, dict) and "event" not in msg and msg.get("id", object()) == want:
            return out


def capture_case(case: Case) -> dict[str, Any]:
    """Run *case* against QEMU and return its transcript record."""
    steps = []
    with launched("qemu", case.extra_args, pretty=case.pretty) as inst:
        client = inst.connect()
        for step in [*case.steps, QUIT]:
            data = step.send + (PROBE if step.stop == "probe" else b"")
            if data:
                client.send(data)
            got = [mask_raw(raw).decode("ascii") for raw in _read_step(client, step)]
            if step.stop == "eof":
                got.sort()  # quit's reply and SHUTDOWN may come in either order
            steps.append(
                {
                    "send": data.decode("latin-1"),
                    "expect": got,
                    "unordered": step.stop == "eof",
                    "eof": step.stop == "eof",
                }
            )
        status = inst.wait_exit()
        if status != 0:
            raise RuntimeError(f"{case.name}: QEMU exited with {status}")
    return {
        "name": case.name,
        "description": case.description,
        "extra_args": case.extra_args,
        "pretty": case.pretty,
        "steps": steps,
    }


def qemu_version() -> str:
    """First line of ``qemu-system-x86_64 --version`` (or ``$QEMU_SYSTEM_BINARY``)."""
    out = subprocess.run(
        [QEMU_BINARY, "--version"], check=True, capture_output=True, text=True
    ).stdout
    return out.splitlines()[0]


def capture(cases: Optional[list[Case]] = None) -> dict[str, Any]:
    """Capture every case; return the whole document."""
    return {
        "captured_with": qemu_version(),
        "generated_by": "tools/capture_qemu_transcripts.py",
        "argv": ["<qemu-system-x86_64>", *monitor_args("<tmpdir>/mon.sock"), "<extra_args>"],
        "format": FORMAT_NOTE,
        "cases": [capture_case(c) for c in (cases or build_cases())],
    }


def dumps(doc: dict[str, Any]) -> str:
    """Stable, diff-friendly JSON."""
    return json.dumps(doc, indent=1, ensure_ascii=True) + "\n"


def main(argv: Optional[list[str]] = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    parser.add_argument(
        "--check", action="store_true", help="compare with --output instead of writing it"
    )
    args = parser.parse_args(argv)
    if shutil.which(QEMU_BINARY) is None:
        print(f"{QEMU_BINARY} is not installed", file=sys.stderr)
        return 2
    text = dumps(capture())
    if args.check:
        if args.output.read_text() != text:
            print(f"{args.output} is out of date; rerun without --check", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(text)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
