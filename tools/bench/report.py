"""Statistics, targets and the README's ``## Performance`` section.

Every ratio is *QEMU's cost / the emulator's cost*: emulator throughput /
QEMU throughput for rates, QEMU time / emulator time for latencies, QEMU RSS
/ emulator RSS for memory.  Above 1 the emulator is better.
"""

from __future__ import annotations

import os
import re
import statistics
from dataclasses import dataclass, field
from typing import Optional

from tools.bench.workloads import Metric, Scaling, growth_exponent


@dataclass
class Result:
    metric: Metric
    samples: dict[str, list[float]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)

    def median(self, target: str) -> Optional[float]:
        values = self.samples.get(target)
        return statistics.median(values) if values else None

    def ratio(self, other: str = "qemu", this: str = "emu") -> Optional[float]:
        """*other*'s cost / *this* one's (>1: *this* is better)."""
        a, b = self.median(other), self.median(this)
        if a is None or b is None or a == 0 or b == 0:
            return None
        return b / a if self.metric.higher_is_better else a / b


def fmt(v: Optional[float]) -> str:
    if v is None:
        return "n/a"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    if abs(v) >= 100:
        return f"{v:.0f}"
    if abs(v) >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def fmt_ratio(r: Optional[float]) -> str:
    return "n/a" if r is None else f"{r:.2f}x"


def cell(result: Result, target: str) -> str:
    if target in result.errors:
        return "error"
    values = result.samples.get(target)
    if not values:
        return "skipped"
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}-{fmt(max(values))})"


TARGET_COLUMNS = (("qemu", "QEMU"), ("emu", "emulator"), ("floor", "floor"))


def results_table(results: list[Result]) -> list[str]:
    head = [
        "| workload | unit | QEMU median (min-max) | emulator median (min-max) "
        "| emulator vs QEMU | floor median (min-max) | floor vs QEMU "
        "| hand-off floor median (min-max) | emulator vs hand-off floor |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    rows = []
    for r in results:
        m = r.metric
        unit = m.unit + (" ↑" if m.higher_is_better else " ↓")
        rows.append(
            f"| {m.title} | {unit} | {cell(r, 'qemu')} | {cell(r, 'emu')} "
            f"| {fmt_ratio(r.ratio())} | {cell(r, 'floor')} | {fmt_ratio(r.ratio(this='floor'))} "
            f"| {cell(r, 'handoff')} | {fmt_ratio(r.ratio(other='handoff'))} |"
        )
    return head + rows


def scaling_table(by_key: dict[str, Result]) -> list[str]:
    lines = [
        "| monitors | fan-out QEMU | fan-out emulator | fan-out floor "
        "| per monitor QEMU | per monitor emulator | RTT QEMU | RTT emulator | RTT floor |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n in Scaling.SIZES:
        fan, rtt = by_key.get(f"7-fan-{n}"), by_key.get(f"7-rtt-{n}")
        if fan is None or rtt is None:
            continue

        def per(t: str, fan: Result = fan, n: int = n) -> str:
            v = fan.median(t)
            return fmt(None if v is None else v / n)

        lines.append(
            f"| {n} | {fmt(fan.median('qemu'))} | {fmt(fan.median('emu'))} "
            f"| {fmt(fan.median('floor'))} | {per('qemu')} | {per('emu')} "
            f"| {fmt(rtt.median('qemu'))} | {fmt(rtt.median('emu'))} | {fmt(rtt.median('floor'))} |"
        )
    return lines


@dataclass
class Check:
    name: str
    goal: str
    value: str
    ok: Optional[bool]  # None: could not be evaluated

    @property
    def verdict(self) -> str:
        return "n/a" if self.ok is None else ("PASS" if self.ok else "FAIL")


def ratio_check(by_key: dict[str, Result], key: str, minimum: float, goal: str) -> Optional[Check]:
    r = by_key.get(key)
    if r is None:
        return None  # not run
    ratio = r.ratio()
    return Check(
        r.metric.title, goal, fmt_ratio(ratio), None if ratio is None else ratio >= minimum
    )


def handoff_check(by_key: dict[str, Result]) -> Optional[Check]:
    """Issue 20: sequential round trips at 70% or more of the hand-off floor's rate."""
    r = by_key.get("1")
    ratio = None if r is None else r.ratio(other="handoff")
    if ratio is None:
        return None
    return Check(
        "1. sequential in-band, vs the hand-off floor", "≥ 0.70x the hand-off floor",
        fmt_ratio(ratio), ratio >= 0.70,
    )  # fmt: skip


#: Fan-out time may grow at most linearly with the monitor count (T ~ N**k).
MAX_FANOUT_EXPONENT = 1.1
#: Round trip with 255 idle monitors vs none: within this factor.
MAX_RTT_GROWTH = 1.25


def scaling_checks(by_key: dict[str, Result]) -> list[Check]:
    checks = []
    lo, hi = Scaling.SIZES[1], Scaling.SIZES[-1]
    fan_lo, fan_hi = by_key.get(f"7-fan-{lo}"), by_key.get(f"7-fan-{hi}")
    if fan_lo and fan_hi:
        ks = {}
        for t in ("qemu", "emu"):
            a, b = fan_lo.median(t), fan_hi.median(t)
            ks[t] = growth_exponent(a, lo, b, hi) if a and b else None
        k = ks["emu"]
        checks.append(
            Check(
                f"7. fan-out growth {lo}→{hi} monitors (T ∝ N^k)",
                f"k ≤ {MAX_FANOUT_EXPONENT} (no worse than linear)",
                f"k = {fmt(k)} (QEMU {fmt(ks['qemu'])})",
                None if k is None else k <= MAX_FANOUT_EXPONENT,
            )
        )
    rtt_lo, rtt_hi = by_key.get(f"7-rtt-{Scaling.SIZES[0]}"), by_key.get(f"7-rtt-{hi}")
    if rtt_lo and rtt_hi:
        growth = {}
        for t in ("qemu", "emu"):
            a, b = rtt_lo.median(t), rtt_hi.median(t)
            growth[t] = b / a if a and b else None
        g = growth["emu"]
        checks.append(
            Check(
                f"7. round trip with {hi - 1} idle monitors / with none",
                f"≤ {MAX_RTT_GROWTH} (independent of idle monitors)",
                f"{fmt(g)} (QEMU {fmt(growth['qemu'])})",
                None if g is None else g <= MAX_RTT_GROWTH,
            )
        )
    return checks


def all_checks(by_key: dict[str, Result]) -> list[Check]:
    checks = [ratio_check(by_key, k, 1.5, "≥ 1.50x") for k in ("1", "2", "3")]
    checks += [ratio_check(by_key, k, 1.0, "≥ 1.00x") for k in ("4", "5", "6")]
    checks.append(handoff_check(by_key))
    checks += scaling_checks(by_key)
    checks.append(ratio_check(by_key, "8-start", 1 / 3, "≥ 0.33x (≤ 3x QEMU's time)"))
    checks.append(ratio_check(by_key, "8-rss", 1.0, "≥ 1.00x (≤ QEMU's RSS)"))
    return [c for c in checks if c is not None]


def checks_table(checks: list[Check]) -> list[str]:
    lines = ["| target | goal (emulator vs QEMU) | measured | result |", "|---|---|---|---|"]
    lines += [f"| {c.name} | {c.goal} | {c.value} | **{c.verdict}** |" for c in checks]
    return lines


USAGE = """\
`python -m tools.bench` (the same as `python tools/bench/run.py`) starts real
QEMU (`qemu-system-x86_64`), the emulator (`python -m system`) and the *floor*
(`tools/bench/floor.py`: a single-threaded Python JSON echo server that greets
and answers every request with `{"return": {}}` and its id, and sends
`STOP`/`RESUME` to every client on `stop`/`cont`; the least Python can do) with
identical arguments, `-nodefaults -machine none -display none -chardev
socket,id=m0,path=SOCK,server=on,wait=off -mon chardev=m0,mode=control` plus
`m1`...`mN-1` alike where a workload needs more monitors, drives them with the
same client code over UNIX sockets, alternating targets (QEMU, emulator,
floor, QEMU, ...) for one warm-up and then `--rounds` (default 5) rounds, and
rewrites this section (about two minutes on 2 CPUs).  Each target runs with
its defaults: the emulator keeps its threads on one CPU (see "CPU placement"
above); `QEMU_MONITOR_EMU_AFFINITY=off` in the bench's environment measures it
without.  It skips QEMU, and says so, when it is not installed.  Python
targets run with their bytecode cached (`PYTHONPYCACHEPREFIX` in a temporary
directory), as an installed emulator would, even where
`PYTHONDONTWRITEBYTECODE` is set.  Options: `--rounds N`,
`--only 1,2,6` (workload numbers), `--quick` (smoke run), `--no-readme`
(`--quick` and `--only` never touch README.md), `--qemu BINARY`, `--emu-root
DIR` (measure another source tree of the emulator), `--no-floor`, and
`--profile` (runs the emulator under cProfile, every thread, on workloads 1, 2
and 6 and prints per thread the top functions in µs and calls per request).

Each cell is the median over the rounds with the min-max spread. **Ratios are
QEMU's cost / the emulator's cost** (emulator throughput / QEMU throughput,
QEMU time / emulator time, QEMU RSS / emulator RSS): **above 1 the emulator
is better**.  ↑ marks higher-is-better units, ↓ lower-is-better.  Workload 3
blocks the main loop with blkdebug on a FIFO (QEMU) and in-band `x-oob-test
{"lock": true}` (emulator), as tests/integration/harness.py does; the floor
has no main loop to block.  Workload 8 starts a fresh process every round.
Workloads 6 and 7 include the client's own cost of reading every monitor's
socket, which the floor's column shows.  Workload 9 is the whole stop/cont
cycle as a sequential client sees it: the command on monitor 0, its reply,
then the event read on monitor 0, 1, ... 15 in turn.  The *hand-off floor*
(`floor.py --handoff`) is the floor with exactly one thread hand-off per
request (a reader thread passes each parsed request to a worker thread that
writes the reply, through `queue.SimpleQueue`): the least any design with
QEMU's I/O-thread/main-thread split can cost.  `--emu-base DIR` adds another
tree's emulator to the alternation and prints the emulator's cost against it
per workload (the hooks-off measurement below).  Run it with the Python of a
virtualenv where the project is installed (`pip install .`, as above): an
interpreter whose own site-packages carries `.pth` start-up hooks (an
editable install's finder, a sandbox's CA injection) pays for them in every
process start, the floor's included, and workload 8 would measure them."""


def render_section(
    results: list[Result], checks: list[Check], machine: list[str], notes: list[str]
) -> str:
    by_key = {r.metric.key: r for r in results}
    lines = ["## Performance", "", USAGE, "", *machine, ""]
    lines += [f"> {n}" for n in notes] + ([""] if notes else [])
    lines += [*results_table(results), ""]
    if any(k.startswith("7-") for k in by_key):
        lines += ["### Scaling (workload 7, µs; per monitor = fan-out / monitors)", ""]
        lines += [*scaling_table(by_key), ""]
    lines += ["### Targets", "", *checks_table(checks)]
    return "\n".join(lines) + "\n"


_SECTION = re.compile(r"^## Performance[ \t]*\n.*?(?=^## |\Z)", re.M | re.S)


def update_readme(path: str, section: str) -> None:
    """Replace the ``## Performance`` section (up to the next ``## ``), or append it."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    match = _SECTION.search(text)
    if match:
        tail = text[match.end() :]
        text = text[: match.start()] + section + ("\n" + tail if tail else "")
    else:
        text = text.rstrip("\n") + "\n\n" + section
    tmp = path + ".bench-tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(tmp, path)
