#!/usr/bin/env python3
"""The benchmark command: ``python -m tools.bench`` or ``python tools/bench/run.py``.

For every workload it starts each target once (QEMU, the emulator, the
floor), measures them alternately (one warm-up, then ``--rounds`` rounds),
prints the medians, spreads and ratios, checks the targets of issue 7, and
writes everything to README.md's ``## Performance`` section.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
import time
import traceback
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make ``tools.bench`` importable
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from tools.bench.report import (
    Result,
    all_checks,
    checks_table,
    fmt,
    fmt_ratio,
    render_section,
    results_table,
    update_readme,
)
from tools.bench.targets import (
    REPO_ROOT,
    Target,
    base_target,
    emu_target,
    floor_target,
    handoff_target,
    qemu_target,
    remove_pycache,
)
from tools.bench.workloads import Workload, all_workloads


def workload_number(wl: Workload) -> str:
    return wl.metrics[0].key.split("-")[0]


def run_workload(wl: Workload, targets: list[Target], rounds: int) -> list[Result]:
    """Open every target, one warm-up, then *rounds* alternating rounds."""
    results = [Result(m) for m in wl.metrics]
    states = {}
    try:
        for t in targets:
            try:
                states[t.key] = wl.open(t)
            except Exception as e:
                for r in results:
                    r.errors[t.key] = f"start: {e!r}"
                last = str(e).strip().splitlines()[-1:] or [repr(e)]
                print(f"  {t.label}: could not start: {last[0]}", file=sys.stderr)
        for rnd in range(rounds + 1):
            for t in targets:
                if t.key not in states or t.key in results[0].errors:
                    continue
                try:
                    values = wl.measure(states[t.key])
                except Exception as e:
                    traceback.print_exc()
                    for r in results:
                        r.errors[t.key] = repr(e)
                    continue
                if rnd > 0:  # round 0 is the warm-up
                    for r, v in zip(results, values):
                        r.samples.setdefault(t.key, []).append(v)
    finally:
        for key, state in states.items():
            try:
                wl.close(state)
            except Exception as e:
                print(f"  {key}: teardown failed: {e!r}", file=sys.stderr)
    return results


def base_cost(r: Result) -> str:
    """The emulator's extra cost against the base tree, in percent (positive: slower)."""
    ratio = r.ratio(other="base", this="emu")
    return "n/a" if ratio is None else f"{(1 / ratio - 1) * 100:+.1f}%"


def emulator_source(root: Path) -> str:
    """Which emulator was measured: the tree, and its commit when it is a checkout."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
        dirty = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=30, check=True,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return f"emulator from {root}"
    return f"emulator at commit {commit}" + (" with uncommitted changes" if dirty else "")


def emulator_placement() -> str:
    """The emulator's CPU placement, which the environment may turn off
    (``QEMU_MONITOR_EMU_AFFINITY``, read by system/main.py)."""
    if os.environ.get("QEMU_MONITOR_EMU_AFFINITY", "").lower() == "off":
        return "its threads placed freely (QEMU_MONITOR_EMU_AFFINITY=off)"
    return "its threads on one CPU (the default)"


def machine_lines(qemu: Target | None, emu: Target, load_start: float, elapsed: float) -> list[str]:
    cpu = "unknown CPU"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    if qemu is None:
        qemu_version = "not installed (QEMU skipped)"
    else:
        out = subprocess.run(
            [*qemu.program, "--version"], capture_output=True, text=True, timeout=30
        ).stdout
        qemu_version = out.splitlines()[0] if out else "unknown"
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return [
        f"Measured {now} on {len(os.sched_getaffinity(0))} CPUs ({cpu}), "
        f"Linux {platform.release()}, Python {platform.python_version()}, {qemu_version}, "
        f"{emulator_source(emu.root)} with {emulator_placement()}; suite {elapsed:.0f} s, "
        "1-minute load average "
        f"{load_start:.2f} before and {os.getloadavg()[0]:.2f} after (anything above 0 is other "
        "work sharing the CPUs: read the ratios, which alternate targets, not absolute numbers)."
    ]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tools.bench", description=__doc__)
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (default 5)")
    p.add_argument("--only", default="", help="comma-separated workload numbers, e.g. 1,2,6")
    p.add_argument("--quick", action="store_true", help="short smoke run; README untouched")
    p.add_argument("--no-readme", action="store_true", help="do not rewrite README.md")
    p.add_argument("--readme", default=str(REPO_ROOT / "README.md"), help=argparse.SUPPRESS)
    p.add_argument("--qemu", default=os.environ.get("QEMU_SYSTEM_BINARY", "qemu-system-x86_64"))
    p.add_argument(
        "--emu-root",
        default=str(REPO_ROOT),
        help="source tree whose emulator to run (default: this checkout)",
    )
    p.add_argument(
        "--emu-base",
        default=None,
        help="another tree's emulator, alternated with --emu-root's in the same run; "
        "prints emulator vs base per workload (the cost of what the newer tree added)",
    )
    p.add_argument(
        "--no-floor", action="store_true", help="skip the Python echo-server floors (both)"
    )
    p.add_argument("--profile", action="store_true", help="profile the emulator (1, 2, 6)")
    p.add_argument("--profile-dir", default=None, help="where --profile keeps .prof files")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        return run(args)
    finally:
        remove_pycache()


def run(args: argparse.Namespace) -> int:
    if args.profile:
        from tools.bench.profiling import profile_main

        return profile_main(Path(args.emu_root), args.profile_dir, 0.25 if args.quick else 1.0)
    started = time.monotonic()
    load_start = os.getloadavg()[0]
    qemu = qemu_target(args.qemu)
    notes = []
    if qemu is None:
        notes.append(f"`{args.qemu}` is not installed: QEMU skipped, ratios and targets n/a.")
        print(f"NOTE: {notes[-1]}")
    emu = emu_target(Path(args.emu_root))
    base = base_target(Path(args.emu_base)) if args.emu_base else None
    targets = [t for t in (qemu, emu, base) if t is not None]
    if not args.no_floor:
        targets += [floor_target(), handoff_target()]
    rounds = 1 if args.quick else args.rounds
    workloads = all_workloads(0.1 if args.quick else 1.0)
    if args.only:
        wanted = set(args.only.split(","))
        workloads = [wl for wl in workloads if workload_number(wl) in wanted]
    print(f"targets: {', '.join(t.label for t in targets)}; rounds: {rounds} (+1 warm-up)")
    results: list[Result] = []
    for wl in workloads:
        t0 = time.monotonic()
        for r in run_workload(wl, targets, rounds):
            results.append(r)
            print(
                f"{r.metric.title:50} QEMU {fmt(r.median('qemu')):>8} "
                f"emu {fmt(r.median('emu')):>8} floor {fmt(r.median('floor')):>8} "
                f"hand-off {fmt(r.median('handoff')):>8} "
                f"{r.metric.unit:10} emu/QEMU {fmt_ratio(r.ratio()):>7}  "
                + (f"base {fmt(r.median('base')):>8} emu/base {base_cost(r)}  " if base else "")
                + f"({time.monotonic() - t0:.0f}s)",
                flush=True,
            )
    checks = all_checks({r.metric.key: r for r in results})
    machine = machine_lines(qemu, emu, load_start, time.monotonic() - started)
    print()
    print("\n".join([*machine, "", *results_table(results), "", *checks_table(checks)]))
    print()
    for c in checks:
        print(f"{c.verdict:4}  {c.name}: {c.value} (goal {c.goal})")
    print(f"\nelapsed: {time.monotonic() - started:.0f}s")
    if not (args.no_readme or args.quick or args.only):
        update_readme(args.readme, render_section(results, checks, machine, notes))
        print(f"wrote the Performance section of {args.readme}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
