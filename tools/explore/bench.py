"""``python -m tools.explore.bench``: what exploration costs.

Prints the README's explorer figures:

* the baton hand-off: host µs per hand-off, from a run whose two threads do
  nothing but wake each other through QemuEvents;
* synchronisation points per in-band and per out-of-band request: the
  difference between runs of one client sending 10 and 60 requests, one at
  a time, divided by 50;
* runs per second of every scenario under ``random``, with one job and with
  one per core.
"""

from __future__ import annotations

import argparse
import os
import time

from tools.explore.campaign import Campaign, explore
from tools.explore.harness import SCENARIOS, Setup, scenario
from tools.explore.runner import run_one
from tools.explore.scenarios import load_scenarios
from util.thread import QemuEvent

PING_PONGS = 2000
FEW, MANY = 10, 60


@scenario("bench-ping-pong", "two threads hand the baton back and forth (bench only)")
def _ping_pong(s: Setup) -> None:
    ping, pong = QemuEvent(name="ping"), QemuEvent(name="pong")

    def a() -> None:
        for _ in range(PING_PONGS):
            ping.set()
            pong.wait()
            pong.reset()

    def b() -> None:
        for _ in range(PING_PONGS):
            ping.wait()
            ping.reset()
            pong.set()

    s.client("a", a)
    s.client("b", b)


def _requests(count: int, oob: bool) -> None:
    name = f"bench-{'oob' if oob else 'inband'}-{count}"

    @scenario(name, f"{count} requests one at a time (bench only)")
    def _fn(s: Setup) -> None:
        mon = s.qmp("mon0")

        def c0() -> None:
            mon.negotiate(oob=oob)
            for _ in range(count):
                if oob:
                    mon.execute("x-oob-test", {"lock": False}, oob=True)
                else:
                    mon.execute("query-status")

        s.client("c0", c0)


for _n in (FEW, MANY):
    _requests(_n, False)
    _requests(_n, True)


def _default_run(name: str) -> tuple[float, dict[str, int]]:
    start = time.perf_counter()
    result = run_one({"scenario": name, "bugs": [], "opts": [], "kind": "calibrate"})
    return time.perf_counter() - start, result


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m tools.explore.bench")
    p.add_argument("--runs", type=int, default=200, help="runs per scenario and job count")
    args = p.parse_args()
    load_scenarios()
    _default_run("bench-ping-pong")  # warm the page cache and the fork path
    idle, _ = _default_run("bench-inband-10")
    busy, pp = _default_run("bench-ping-pong")
    print(
        f"baton hand-off: {(busy - idle) / pp['switches'] * 1e6:.1f} µs "
        f"({pp['switches']} hand-offs, {pp['points']} points in {busy * 1e3:.0f} ms)"
    )
    for kind in ("inband", "oob"):
        few = _default_run(f"bench-{kind}-{FEW}")[1]
        many = _default_run(f"bench-{kind}-{MANY}")[1]
        span = MANY - FEW
        print(
            f"{kind} request: {(many['points'] - few['points']) / span:.0f} points, "
            f"{(many['decisions'] - few['decisions']) / span:.0f} decisions, "
            f"{(many['switches'] - few['switches']) / span:.0f} hand-offs"
        )
    cores = os.cpu_count() or 1
    print(f"runs/s under random, {args.runs} runs (--jobs 1 | --jobs {cores}):")
    for name in sorted(n for n in SCENARIOS if not n.startswith("bench-")):
        rates = []
        for jobs in (1, cores):
            c = Campaign(name, [], [], ("random", 0), 1, args.runs)
            start = time.perf_counter()
            explore(c, jobs, False)
            rates.append(args.runs / (time.perf_counter() - start))
        print(f"  {name:<34} {rates[0]:6.0f} | {rates[1]:6.0f}")


if __name__ == "__main__":
    main()
