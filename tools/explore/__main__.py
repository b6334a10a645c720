"""``python -m tools.explore``: search, replay, shrink and look at interleavings.

    python -m tools.explore --list
    python -m tools.explore SCENARIO [--bug NAME ...] [--opt KEY=VALUE ...]
        --strategy random|pct:D|guided:D|pb:K --runs N --seed S [--jobs J]
        [--shard I/N] [--json FILE] [--trace FILE] [--shrink] [--stop-on-failure] [-q]
    python -m tools.explore SCENARIO [--bug NAME ...] [--opt ...] --replay SCHEDULE [--trace FILE]
    python -m tools.explore merge FILE... [--json FILE] [--shrink]
    python -m tools.explore diff TRACE_A TRACE_B

Exit status: 0 no run failed, 1 a run failed, 2 a usage error.  The
process re-executes itself with PYTHONHASHSEED=0, so the same arguments
give the same JSON and traces byte for byte.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any, NoReturn, Optional


def _usage_error(msg: str) -> NoReturn:
    sys.stderr.write(f"explore: {msg}\n")
    sys.exit(2)


def _pin_hash_seed(argv: list[str]) -> None:
    """Strings hash the same in every run only with a fixed seed."""
    if os.environ.get("PYTHONHASHSEED") != "0":
        env = {**os.environ, "PYTHONHASHSEED": "0"}
        os.execve(sys.executable, [sys.executable, "-m", "tools.explore", *argv], env)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tools.explore", add_help=True)
    p.add_argument("scenario", nargs="?")
    p.add_argument("--list", action="store_true", help="list the scenarios")
    p.add_argument("--bug", action="append", default=[], metavar="NAME")
    p.add_argument("--opt", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--strategy", default="random")
    p.add_argument("--runs", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=1)
    p.add_argument("--shard", default="0/1", metavar="I/N")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--trace", metavar="FILE")
    p.add_argument("--shrink", action="store_true")
    p.add_argument("--stop-on-failure", action="store_true")
    p.add_argument("--replay", metavar="SCHEDULE")
    p.add_argument(
        "--scenarios",
        action="append",
        default=[],
        metavar="MODULE",
        help="also load scenarios from MODULE",
    )
    p.add_argument("-q", "--quiet", action="store_true")
    return p


def _replay_command(scenario: str, bugs: list[str], opts: list[str], schedule: str) -> str:
    parts = ["python -m tools.explore", scenario]
    parts += [f"--bug {b}" for b in bugs] + [f"--opt {o}" for o in opts]
    parts.append(f"--replay '{schedule}'")
    return " ".join(parts)


def _check_bugs(bugs: list[str]) -> list[str]:
    from util.bugs import UnknownBugError, bug_names

    names: list[str] = []
    try:
        for b in bugs:
            names += bug_names(b)
    except UnknownBugError as e:
        _usage_error(str(e))
    return names


def _parse_shard(text: str) -> tuple[int, int]:
    i, sep, n = text.partition("/")
    if not sep or not i.isdigit() or not n.isdigit() or int(n) < 1 or int(i) >= int(n):
        _usage_error(f"--shard wants I/N with 0 <= I < N, not {text!r}")
    return int(i), int(n)


def _write_json(doc: dict[str, Any], path: Optional[str]) -> None:
    if path is not None:
        with open(path, "w", encoding="utf-8") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")


def _progress(quiet: bool, total: int) -> Any:
    if quiet or (not sys.stderr.isatty() and os.environ.get("EXPLORE_PROGRESS") != "1"):
        return None
    start = time.monotonic()
    last = [0.0]

    def show(done: int, failed: int) -> None:
        now = time.monotonic()
        if now - last[0] < 0.25 and done < total:
            return
        last[0] = now
        rate = done / max(now - start, 1e-9)
        end = "\n" if done >= total else ""
        sys.stderr.write(
            f"\r[explore] {done}/{total} runs, {failed} failed, {rate:.0f} runs/s{end}"
        )
        sys.stderr.flush()

    return show


def main(argv: list[str]) -> int:
    if argv and argv[0] in ("merge", "diff"):
        from tools.explore.tools_cli import diff_main, merge_main

        return merge_main(argv[1:]) if argv[0] == "merge" else diff_main(argv[1:])
    args = _parser().parse_args(argv)
    from tools.explore.harness import SCENARIOS
    from tools.explore.scenarios import load_scenarios

    try:
        load_scenarios(tuple(args.scenarios))
    except ImportError as e:
        _usage_error(f"cannot load scenarios: {e}")
    if args.list:
        width = max(len(n) for n in SCENARIOS)
        for sc in sorted(SCENARIOS.values(), key=lambda s: s.name):
            print(f"{sc.name:<{width}}  {sc.description}")
        return 0
    if args.scenario is None:
        _usage_error("a scenario is needed (--list shows them)")
    if args.scenario not in SCENARIOS:
        _usage_error(f"unknown scenario '{args.scenario}' (--list shows them)")
    bugs = _check_bugs(args.bug)
    from tools.explore.campaign import Campaign, explore, shrink
    from tools.explore.harness import check_mon_opts
    from tools.explore.strategies import ScheduleError, parse_schedule, parse_strategy

    problem = check_mon_opts(args.opt)
    if problem:
        _usage_error(problem)
    if args.replay is not None:
        try:
            entries = parse_schedule(args.replay)
        except ScheduleError as e:
            _usage_error(str(e))
        c = Campaign(args.scenario, bugs, args.opt, ("replay", 0), 0, 1)
        result = c.replay(entries, args.trace)
        _write_json(
            {
                "scenario": args.scenario,
                "bugs": bugs,
                "opts": args.opt,
                "replayed": args.replay,
                "schedule": result["schedule"],
                "reason": result["reason"],
                "divergence": result.get("divergence") or [],
                "points": result["points"],
            },
            args.json,
        )
        for line in result.get("divergence") or []:
            print(f"diverged: {line}")
        if result["reason"] is None:
            print(f"replay: passed ({result['points']} points)")
            return 0
        print(f"replay: failed: {result['reason']}")
        print(f"schedule: {result['schedule']}")
        return 1
    try:
        strategy = parse_strategy(args.strategy)
    except ValueError as e:
        _usage_error(str(e))
    shard = _parse_shard(args.shard)
    if shard[1] > 1 and (args.shrink or args.stop_on_failure):
        _usage_error(
            "--shrink and --stop-on-failure need the whole campaign: not with --shard "
            "(merge the shards, then 'merge --shrink')"
        )
    if args.runs < 1 or args.jobs < 1:
        _usage_error("--runs and --jobs must be at least 1")
    c = Campaign(args.scenario, bugs, args.opt, strategy, args.seed, args.runs, shard)
    doc = explore(c, args.jobs, args.stop_on_failure, _progress(args.quiet, _owned(c)))
    if args.shrink and doc["failures"]:
        first = doc["failures"][0]  # the others keep "shrunk": null
        first["shrunk"] = shrink(c, first["schedule"], first["reason"])
    _write_json(doc, args.json)
    if args.trace is not None:
        first = (
            doc["failures"][0]["shrunk" if args.shrink else "schedule"]
            if doc["failures"]
            else "v1:"
        )
        c.replay(parse_schedule(first), args.trace)
    return report(doc, args.quiet)


def _owned(c: Any) -> int:
    return sum(1 for r in range(c.runs) if c.owns(r))


def report(doc: dict[str, Any], quiet: bool) -> int:
    """Print the campaign's outcome; the exit status."""
    failures = doc["failures"]
    ran = sum(1 for p in doc["points_per_run"] if p is not None)
    if not quiet or failures:
        print(f"{doc['scenario']}: {ran} runs of {doc['strategy']}, {len(failures)} failed")
    if failures:
        f = failures[0]
        schedule = f["shrunk"] or f["schedule"]
        print(f"first failure: run {f['run']}: {f['reason']}")
        print(f"schedule: {schedule}")
        print("replay: " + _replay_command(doc["scenario"], doc["bugs"], doc["opts"], schedule))
        return 1
    return 0


if __name__ == "__main__":
    _pin_hash_seed(sys.argv[1:])
    sys.exit(main(sys.argv[1:]))
