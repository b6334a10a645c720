"""The ``explore`` fixture: a race regression test in a few lines.

Installed with the package (entry point ``pytest11``)::

    def test_no_stale_reply(explore):
        res = explore("disconnect-with-queued-requests", strategy="pct:3",
                      runs=200, seed=1, opts=("x-session-check=on",))
        res.assert_no_failure()

    def test_the_known_schedule_still_fails(explore):
        res = explore.replay("disconnect-with-queued-requests", SCHEDULE)
        res.assert_fails("wrong reply")

Each call runs ``python -m tools.explore`` in a child process (the
explorer forks per run, which a test process with threads of its own must
not do), so a failure message can show the schedule and the command that
replays it, exactly.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from typing import Any

import pytest

#: host seconds one explorer call may take inside a test
CALL_TIMEOUT_S = 240


class ExploreResult:
    """What one explorer call found."""

    def __init__(self, argv: list[str], data: dict[str, Any], output: str, status: int) -> None:
        self.argv = argv
        self.data = data
        self.output = output
        self.status = status

    @property
    def failures(self) -> list[dict[str, Any]]:
        return list(self.data.get("failures", []))

    @property
    def command(self) -> str:
        return " ".join(self.argv)

    def replay_command(self, failure: dict[str, Any]) -> str:
        schedule = failure.get("shrunk") or failure["schedule"]
        parts = ["python -m tools.explore", self.data["scenario"]]
        parts += [f"--bug {b}" for b in self.data.get("bugs", [])]
        parts += [f"--opt {o}" for o in self.data.get("opts", [])]
        return " ".join([*parts, f"--replay '{schedule}'"])

    def describe(self, failure: dict[str, Any]) -> str:
        schedule = failure.get("shrunk") or failure["schedule"]
        return (
            f"run {failure.get('run')}: {failure['reason']}\n"
            f"  schedule: {schedule}\n"
            f"  replay:   {self.replay_command(failure)}"
        )

    def assert_no_failure(self) -> None:
        if self.failures:
            first = self.failures[0]
            raise AssertionError(
                f"{len(self.failures)} failing run(s) of {self.command}\n" + self.describe(first)
            )

    def assert_fails(self, reason_prefix: str = "") -> dict[str, Any]:
        """The first failure, whose reason starts with ``reason_prefix``."""
        if not self.failures:
            raise AssertionError(f"no run failed: {self.command}")
        first = self.failures[0]
        if not first["reason"].startswith(reason_prefix):
            raise AssertionError(
                f"expected a failure starting {reason_prefix!r}, got:\n" + self.describe(first)
            )
        return first


def _common(bugs: Iterable[str], opts: Iterable[str]) -> list[str]:
    return [a for b in bugs for a in ("--bug", b)] + [a for o in opts for a in ("--opt", o)]


class Explorer:
    """The fixture's value: call it to explore, ``.replay`` to replay."""

    def __call__(
        self,
        scenario: str,
        *,
        strategy: str = "pct:3",
        runs: int = 100,
        seed: int = 1,
        bugs: Iterable[str] = (),
        opts: Iterable[str] = (),
        jobs: int = 1,
        shrink: bool = False,
        stop_on_failure: bool = False,
    ) -> ExploreResult:
        args = [scenario, *_common(bugs, opts), "--strategy", strategy]
        args += ["--runs", str(runs), "--seed", str(seed), "--jobs", str(jobs)]
        args += ["--shrink"] if shrink else []
        args += ["--stop-on-failure"] if stop_on_failure else []
        return self._run(args)

    def replay(
        self, scenario: str, schedule: str, *, bugs: Iterable[str] = (), opts: Iterable[str] = ()
    ) -> ExploreResult:
        """Replay ``schedule``; the result has its failure (run 0) or none."""
        return self._run([scenario, *_common(bugs, opts), "--replay", schedule], replay=True)

    def _run(self, args: list[str], replay: bool = False) -> ExploreResult:
        with tempfile.TemporaryDirectory(prefix="explore-") as tmp:
            path = os.path.join(tmp, "result.json")
            argv = [sys.executable, "-m", "tools.explore", *args, "-q", "--json", path]
            env = {**os.environ, "PYTHONHASHSEED": "0"}
            proc = subprocess.run(
                argv, capture_output=True, text=True, env=env, timeout=CALL_TIMEOUT_S, check=False
            )
            shown = ["python -m tools.explore", *args]
            if proc.returncode == 2:
                raise AssertionError(f"usage error from {' '.join(shown)}: {proc.stderr.strip()}")
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        if replay:  # one run, in the campaign document's shape
            failed = data["reason"] is not None
            data["failures"] = (
                [{"run": 0, "schedule": data["schedule"], "reason": data["reason"], "shrunk": None}]
                if failed
                else []
            )
        return ExploreResult(shown, data, proc.stdout + proc.stderr, proc.returncode)


@pytest.fixture
def explore() -> Explorer:
    """Run the explorer on a scenario (see the module's docstring)."""
    return Explorer()
