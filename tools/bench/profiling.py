"""``python -m tools.bench --profile``: where the emulator spends its time.

Runs workloads 1, 2 and 6 against the emulator started under
:mod:`tools.bench.cprofile_emu` (cProfile on every thread), one fresh process
per workload, a fixed number of rounds each, and prints per thread the
functions with the most own time, normalised per request (per fan-out for
workload 6): microseconds and calls per request.  Calls per request are
exact, so per-byte loops, lock churn and repeated serialisation show up as
counts; the times carry cProfile's overhead (roughly 2x on small
functions), so read them as ranks.
"""

from __future__ import annotations

import os
import pstats
import sys
import tempfile
from pathlib import Path

from tools.bench.targets import Target
from tools.bench.workloads import FanOut, Pipelined, Sequential, Workload

CPROFILE_EMU = Path(__file__).resolve().parent / "cprofile_emu.py"

#: Measured rounds per workload under the profiler.
ROUNDS = 3

#: Functions listed per thread.
TOP = 18


def ops_per_round(wl: Workload) -> int:
    if isinstance(wl, Pipelined):
        return wl.count(600) * Pipelined.WINDOW
    if isinstance(wl, FanOut):
        return wl.count(100) + wl.count(100) % 2
    return wl.count(2000)


def profile_workload(wl: Workload, root: Path, outdir: str) -> int:
    """Run *wl* on a profiled emulator; return how many operations it did."""
    target = Target("emu", "emulator (cProfile)", (sys.executable, str(CPROFILE_EMU), outdir), root)
    state = wl.open(target)
    try:
        for _ in range(ROUNDS):
            wl.measure(state)
    finally:
        wl.close(state)  # SIGTERM: the emulator exits normally and writes its profiles
    inst = state.inst
    if not list(Path(outdir).glob("*.prof")):
        print(f"no profiles: exit status {inst.proc.returncode}\n{inst.final_output}")
    return ROUNDS * ops_per_round(wl)


def short(filename: str, root: Path) -> str:
    try:
        return str(Path(filename).resolve().relative_to(root.resolve()))
    except ValueError:
        return filename if filename.startswith("<") else os.path.basename(filename)


def print_thread(path: str, ops: int, root: Path) -> None:
    stats = pstats.Stats(path)
    rows = stats.stats  # type: ignore[attr-defined]
    total = sum(tt for (_, _, tt, _, _) in rows.values())
    calls = sum(nc for (_, nc, _, _, _) in rows.values())
    name = os.path.basename(path)[: -len(".prof")]
    print(
        f"\n  thread {name}: {total:.2f}s own time (with waits), {total / ops * 1e6:.1f} µs "
        f"and {calls / ops:.0f} calls per op"
    )
    print(f"  {'µs/op':>7} {'calls/op':>8}  function")
    top = sorted(rows.items(), key=lambda kv: kv[1][2], reverse=True)[:TOP]
    for (filename, line, func), (_, ncalls, tt, _, _) in top:
        where = f"{short(filename, root)}:{line}" if line else short(filename, root)
        print(f"  {tt / ops * 1e6:7.2f} {ncalls / ops:8.2f}  {func} ({where})")


def profile_main(root: Path, outdir: str | None, scale: float) -> int:
    base = outdir or tempfile.mkdtemp(prefix="bench-profile-")
    for wl in (Sequential(scale), Pipelined(scale), FanOut(scale)):
        wdir = os.path.join(base, f"workload{wl.metrics[0].key}")
        ops = profile_workload(wl, root, wdir)
        print(f"\n== {wl.metrics[0].title}: {ops} ops, profiles in {wdir}")
        for prof in sorted(Path(wdir).glob("*.prof")):
            print_thread(str(prof), ops, root)
    return 0
