"""Replay QEMU 7.2's recorded QMP transcripts against a live target.

``data/qemu72_transcripts.json`` holds exact request/response bytes captured
from qemu-system-x86_64 7.2 by ``tools/capture_qemu_transcripts.py``.  Replaying
them against the emulator gives byte-exact expectations on machines without
QEMU; replaying them against QEMU checks that the file still matches the
installed binary (skipped unless it is the same major.minor release).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Launcher
from tests.integration.harness import QEMU_BINARY, Instance, launched, mask_raw, target_program

DATA = Path(__file__).parent / "data" / "qemu72_transcripts.json"
TRANSCRIPTS: dict[str, Any] = json.loads(DATA.read_text())
CASES: list[dict[str, Any]] = TRANSCRIPTS["cases"]


def _release(version_line: str) -> tuple[int, int]:
    """(major, minor) from a ``QEMU emulator version X.Y.Z ...`` line."""
    m = re.search(r"version (\d+)\.(\d+)", version_line)
    assert m, version_line
    return int(m.group(1)), int(m.group(2))


def _skip_unless_same_qemu_release() -> None:
    binary = shutil.which(QEMU_BINARY)
    if binary is None:
        pytest.skip(f"{QEMU_BINARY} is not installed")
    installed = subprocess.run(
        [binary, "--version"], check=True, capture_output=True, text=True
    ).stdout.splitlines()[0]
    if _release(installed) != _release(TRANSCRIPTS["captured_with"]):
        pytest.skip(f"transcripts are from {TRANSCRIPTS['captured_with']}, not {installed}")


def test_transcript_file_is_well_formed() -> None:
    """Structure and masking of the recorded data (needs no target)."""
    assert _release(TRANSCRIPTS["captured_with"]) == (7, 2)
    names = [case["name"] for case in CASES]
    assert len(names) == len(set(names))
    for case in CASES:
        assert case["steps"][-1]["eof"], f"{case['name']} does not end with quit"
        for step in case["steps"]:
            step["send"].encode("latin-1")  # one character per byte
            assert step["expect"], f"{case['name']}: a step without replies"
            for text in step["expect"]:
                raw = text.encode("ascii")  # QEMU writes ASCII only
                assert raw.endswith(b"\r\n") and b"\n" not in raw.replace(b"\r\n", b"")
                assert mask_raw(raw) == raw, f"{case['name']}: unmasked {text!r}"


def run_case(inst: Instance, case: dict[str, Any]) -> list[list[str]]:
    """Send each step's bytes to *inst*; return each step's masked replies.

    A step reads as many messages as QEMU sent when it was recorded, or up to
    EOF for the final ``quit`` (after which the process must exit with 0);
    unordered steps come back sorted.
    """
    client = inst.connect()
    replies = []
    for step in case["steps"]:
        sent = step["send"].encode("latin-1")
        if sent:
            client.send(sent)
        if step["eof"]:
            got = [raw for raw, _ in client.recv_until_eof()]
            assert inst.wait_exit() == 0, f"{inst.target} exit status after quit"
        else:
            got = [client.recv_msg()[0] for _ in step["expect"]]
        masked = [mask_raw(raw).decode("ascii") for raw in got]
        replies.append(sorted(masked) if step["unordered"] else masked)
    return replies


def _expected(case: dict[str, Any]) -> list[list[str]]:
    return [sorted(s["expect"]) if s["unordered"] else s["expect"] for s in case["steps"]]


def _first_difference(case: dict[str, Any], want: list[list[str]], got: list[list[str]]) -> str:
    for n, (w, g) in enumerate(zip(want, got)):
        if w != g:
            sent = case["steps"][n]["send"].encode("latin-1")
            return f"{case['name']} step {n}: sent {sent!r}\n  want {w!r}\n  got  {g!r}"
    return f"{case['name']}: {len(want)} steps wanted, {len(got)} run"


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_replay(target: str, launcher: Launcher, case: dict[str, Any]) -> None:
    """The target's replies match the recorded QEMU 7.2 bytes (after masking)."""
    if target == "qemu":
        _skip_unless_same_qemu_release()
    inst = launcher(case["extra_args"], pretty=case["pretty"])
    want, got = _expected(case), run_case(inst, case)
    assert got == want, _first_difference(case, want, got)


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
def test_live_differential(case: dict[str, Any]) -> None:
    """The same bytes sent to QEMU and to the emulator, side by side, get the same replies
    (whatever QEMU release is installed).

    Deliberately not marked ``qemu``: ``-k qemu`` checks the specification
    against QEMU alone; this test needs both targets and skips without either.
    """
    target_program("qemu")
    target_program("emu")
    outputs = []
    for target in ("qemu", "emu"):
        with launched(target, case["extra_args"], pretty=case["pretty"]) as inst:
            outputs.append(run_case(inst, case))
    assert outputs[1] == outputs[0], _first_difference(case, outputs[0], outputs[1])
