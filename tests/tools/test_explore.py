"""The explorer end to end: its command line, its determinism, its reports.

Every call runs ``python -m tools.explore`` in a child process, as a user
would; campaigns are small so the module stays within seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tools.explore.pytest_plugin import Explorer

ROOT = Path(__file__).resolve().parents[2]
TEST_SCENARIOS = ("--scenarios", "tests.tools.explore_scenarios")
BUG3 = "disconnect-with-queued-requests"

REQUIRED = (
    "oob-vs-inband",
    "disconnect-with-queued-requests",
    "queue-full-suspend-resume",
    "event-fan-out",
    "hotplug-self-removal",
    "monitor-remove-while-reading",
    "quit-with-queued-requests",
    "two-monitors-round-robin",
)


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.explore", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        timeout=200,
        check=False,
    )


def campaign(tmp_path: Path, name: str, *args: str) -> tuple[int, bytes, dict[str, Any]]:
    out = tmp_path / name
    proc = run(*args, "-q", "--json", str(out))
    assert proc.returncode in (0, 1), proc.stderr
    data = out.read_bytes()
    return proc.returncode, data, json.loads(data)


def test_list_names_every_scenario_with_a_description() -> None:
    proc = run("--list")
    assert proc.returncode == 0
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    for name in REQUIRED:
        assert lines.get(name, "").strip(), f"{name} missing from --list"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("no-such-scenario", "--runs", "1"), "unknown scenario 'no-such-scenario'"),
        ((BUG3, "--bug", "no_such_bug"), "no_such_bug"),
        ((BUG3, "--replay", "v2:main@1>io[x]"), "malformed schedule"),
        ((BUG3, "--replay", "v1:main@1io[x]"), "malformed schedule entry"),
        ((BUG3, "--strategy", "pct:x"), "unknown strategy"),
        ((BUG3, "--opt", "no-such-option=on"), "--opt no-such-option=on"),
        ((BUG3, "--shard", "0/2", "--shrink"), "not with --shard"),
        ((BUG3, "--shard", "2/2"), "--shard wants I/N"),
    ],
)
def test_usage_errors_exit_2_with_a_message(args: tuple[str, ...], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2
    assert message in proc.stderr


def test_bug_3_found_with_qemu_default_and_not_with_the_fix(tmp_path: Path) -> None:
    """The issue's acceptance: pct:3, 500 runs, seed 1; replay; shrink."""
    args = (BUG3, "--strategy", "pct:3", "--runs", "500", "--seed", "1", "--jobs", "2")
    rc, _, found = campaign(tmp_path, "qemu.json", *args, "--shrink")
    assert rc == 1
    first = found["failures"][0]
    assert first["reason"].startswith("wrong reply: mon0 session 2 got the reply to")
    assert found["first_failure_run"] == first["run"]
    assert len(found["points_per_run"]) == 500 and all(found["points_per_run"])

    rc, _, fixed = campaign(tmp_path, "fixed.json", *args, "--opt", "x-session-check=on")
    assert rc == 0 and fixed["failures"] == [] and fixed["first_failure_run"] is None

    replay = run(BUG3, "--replay", first["schedule"])
    assert replay.returncode == 1
    assert f"replay: failed: {first['reason']}" in replay.stdout
    assert "diverged" not in replay.stdout

    shrunk = first["shrunk"]
    assert shrunk.count(";") <= first["schedule"].count(";")
    again = run(BUG3, "--replay", shrunk)
    assert again.returncode == 1 and "wrong reply" in again.stdout
    assert run(BUG3, "--opt", "x-session-check=on", "--replay", shrunk).returncode == 0


def test_same_json_with_any_jobs_and_from_merged_shards(tmp_path: Path) -> None:
    args = (BUG3, "--strategy", "random", "--runs", "24", "--seed", "7")
    _, one, doc = campaign(tmp_path, "one.json", *args, "--jobs", "1")
    _, two, _ = campaign(tmp_path, "two.json", *args, "--jobs", "2")
    assert one == two
    assert doc["failures"], "random finds bug 3 within 24 runs with seed 7"
    shards = [tmp_path / f"s{i}.json" for i in range(3)]
    for i, path in enumerate(shards):
        proc = run(*args, "--shard", f"{i}/3", "-q", "--json", str(path))
        assert proc.returncode in (0, 1)
        part = json.loads(path.read_text())
        assert [p is not None for p in part["points_per_run"]] == [r % 3 == i for r in range(24)]
    merged = tmp_path / "merged.json"
    assert run("merge", *map(str, shards), "--json", str(merged), "-q").returncode == 1
    assert merged.read_bytes() == one
    bad = run("merge", str(shards[0]), str(shards[1]))
    assert bad.returncode == 2 and "do not make up 3" in bad.stderr


def test_pb_walks_a_bounded_tree_the_same_way_sharded(tmp_path: Path) -> None:
    args = ("oob-vs-inband", "--strategy", "pb:1", "--runs", "12")
    rc, whole, doc = campaign(tmp_path, "pb.json", *args)
    assert rc == 0 and len(doc["points_per_run"]) == 12 and all(doc["points_per_run"])
    assert len(set(doc["points_per_run"])) > 1, "the deviations change the runs"
    parts = []
    for i in range(2):
        path = tmp_path / f"pb{i}.json"
        assert run(*args, "--shard", f"{i}/2", "-q", "--json", str(path)).returncode == 0
        parts.append(str(path))
    merged = tmp_path / "pbm.json"
    assert run("merge", *parts, "--json", str(merged), "-q").returncode == 0
    assert merged.read_bytes() == whole


def test_same_schedule_same_trace_and_diff_shows_where_runs_part(tmp_path: Path) -> None:
    _, _, doc = campaign(
        tmp_path, "c.json", BUG3, "--strategy", "pct:3", "--runs", "60", "--seed", "1"
    )
    schedule = doc["failures"][0]["schedule"]
    a, b, ok = (tmp_path / n for n in ("a.json", "b.json", "ok.json"))
    assert run(BUG3, "--replay", schedule, "--trace", str(a)).returncode == 1
    assert run(BUG3, "--replay", schedule, "--trace", str(b)).returncode == 1
    assert a.read_bytes() == b.read_bytes()
    same = run("diff", str(a), str(b))
    assert same.returncode == 0 and same.stdout.startswith("same:")
    assert (
        run(
            BUG3, "--opt", "x-session-check=on", "--replay", schedule, "--trace", str(ok)
        ).returncode
        == 0
    )
    differ = run("diff", str(a), str(ok))
    assert differ.returncode == 1 and "the traces part at event" in differ.stdout


def test_replay_says_where_a_schedule_no_longer_fits() -> None:
    proc = run("oob-vs-inband", "--replay", "v1:nobody@1>main[qemu_mutex_lock(BQL)]")
    assert proc.returncode == 0
    assert "diverged: nobody@1>main[qemu_mutex_lock(BQL)]: never reached" in proc.stdout


@pytest.mark.parametrize(
    ("scenario", "reason"),
    [
        ("test-join-cycle", "deadlock: t2 waits for test_lock held by c0; c0 waits for thread t2"),
        ("test-abba", "assertion: thread t2 died: LockOrderError: lock order inversion"),
        (
            "test-hang",
            "hang: every thread is blocked: main poll main_loop; waiter qemu_event_wait; "
            "setter qemu_mutex_lock (held by waiter)",
        ),
        ("test-uncontrolled", "hang: c0 blocked outside the scheduler at c0 ("),
    ],
)
def test_stuck_runs_are_reported_not_waited_for(scenario: str, reason: str) -> None:
    proc = run(
        scenario,
        *TEST_SCENARIOS,
        "--strategy",
        "pb:0",
        "--runs",
        "1",
        env={"EXPLORE_WATCHDOG_S": "1"},
    )
    assert proc.returncode == 1
    assert f"run 0: {reason}" in proc.stdout


def test_virtual_time_jumps_to_the_next_deadline() -> None:
    proc = run("test-virtual-time", *TEST_SCENARIOS, "--strategy", "random", "--runs", "5")
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("scenario", (*REQUIRED[2:], "oob-vs-inband"))
def test_every_scenario_passes_under_each_strategy(explore: Explorer, scenario: str) -> None:
    """QEMU's invariants hold (bug 3 aside) in random, PCT and guided runs."""
    for strategy in ("random", "pct:3", "guided:2"):
        explore(scenario, strategy=strategy, runs=15, seed=3, jobs=2).assert_no_failure()


def test_fixture_reports_the_schedule_and_the_replay_command(explore: Explorer) -> None:
    res = explore(BUG3, strategy="random", runs=20, seed=7)
    with pytest.raises(AssertionError) as exc:
        res.assert_no_failure()
    message = str(exc.value)
    assert "schedule: v1:" in message and f"python -m tools.explore {BUG3} --replay 'v1:" in message
    schedule = res.assert_fails("wrong reply")["schedule"]
    replayed = explore.replay(BUG3, schedule)
    assert replayed.assert_fails("wrong reply")["reason"] == res.failures[0]["reason"]
    explore.replay(BUG3, schedule, opts=("x-session-check=on",)).assert_no_failure()
