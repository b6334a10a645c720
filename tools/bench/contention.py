"""``python -m tools.bench.contention``: monitor latency against a busy guest.

A real QEMU's monitor competes for the BQL with its vCPUs: every I/O exit of
the guest takes the lock for a while.  This benchmark starts the emulator
with ``-smp N -accel x-model,exit-rate=R,exit-cost=C`` for several vCPU
counts and exit rates and measures, over one QMP socket with OOB enabled:

* **in-band** round trips of ``query-name``, which the dispatcher runs in
  the main loop under the BQL, so each one waits for the lock;
* **OOB** round trips of ``exec-oob migrate-pause``, answered in the monitor
  I/O thread without the BQL.

It prints the median and p99 of each (µs), writes the figures as JSON, and
draws them as an SVG (no plotting library needed).  OOB should stay flat
while in-band grows with ``N * R * C``, the fraction of time the guest holds
the BQL: that is what OOB is for.

Options: ``--cpus 1,2,4``, ``--rates 0,200,1000,2500`` (exits per second per
vCPU), ``--cost 100`` (µs per exit), ``--samples 300``, ``--out DIR``
(default: the current directory), ``--quick`` (a smoke run).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from tools.bench.qmpraw import QMPRaw, connect_negotiated
from tools.bench.targets import Target, emu_target, launch

QUERY_NAME = b'{"execute": "query-name", "id": %d}\n'
MIGRATE_PAUSE_OOB = b'{"exec-oob": "migrate-pause", "id": %d}\n'


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))]


def round_trips_us(client: QMPRaw, template: bytes, n: int, first_id: int) -> list[float]:
    """Latency of *n* sequential requests, each sent after the previous reply."""
    out = []
    for i in range(first_id, first_id + n):
        req = template % i
        t0 = time.perf_counter()
        client.send(req)
        client.recv_reply(i)
        out.append((time.perf_counter() - t0) * 1e6)
    return out


def measure(cpus: int, rate: int, cost: int, samples: int) -> dict[str, Any]:
    """One emulator with this guest model; in-band and OOB latency in µs."""
    accel = f"x-model,exit-rate={rate},exit-cost={cost}"
    base = emu_target()
    target = Target("emu", "emulator", (*base.program, "-smp", str(cpus), "-accel", accel))
    inst = launch(target, 1)
    try:
        client = connect_negotiated(inst.paths[0], oob=True)
        try:
            round_trips_us(client, QUERY_NAME, samples // 10, 0)  # warm-up
            inband: list[float] = []
            oob: list[float] = []
            # interleave short runs of each so both see the same guest phases
            for k in range(10):
                base_id = 1000 + k * 2 * samples
                inband += round_trips_us(client, QUERY_NAME, samples // 10, base_id)
                oob += round_trips_us(client, MIGRATE_PAUSE_OOB, samples // 10, base_id + samples)
        finally:
            client.close()
    finally:
        inst.shutdown()
    return {
        "cpus": cpus,
        "exit_rate": rate,
        "exit_cost_us": cost,
        "bql_load": cpus * rate * cost / 1e6,
        "inband_median_us": statistics.median(inband),
        "inband_p99_us": percentile(inband, 99),
        "oob_median_us": statistics.median(oob),
        "oob_p99_us": percentile(oob, 99),
    }


# ---------------------------------------------------------------- the picture

SERIES = (
    ("inband_median_us", "in-band median", "#d62728", ""),
    ("inband_p99_us", "in-band p99", "#d62728", "6,4"),
    ("oob_median_us", "OOB median", "#1f77b4", ""),
    ("oob_p99_us", "OOB p99", "#1f77b4", "6,4"),
)


def svg_plot(results: list[dict[str, Any]], title: str) -> str:
    """Latency against exit rate, one panel per vCPU count, as SVG text."""
    cpus = sorted({r["cpus"] for r in results})
    rates = sorted({r["exit_rate"] for r in results})
    ymax = max(r[k] for r in results for k, *_ in SERIES) * 1.1
    pw, ph, left, top = 260, 220, 60, 50
    width, height = left + len(cpus) * (pw + 30) + 10, top + ph + 110
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'font-family="sans-serif" font-size="11">',
        f'<rect width="{width}" height="{height}" fill="white"/>',
        f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for p, n in enumerate(cpus):
        x0 = left + p * (pw + 30)

        def xy(rate: int, v: float, x0: int = x0) -> tuple[float, float]:
            i = rates.index(rate)
            return x0 + i * pw / max(1, len(rates) - 1), top + ph - v / ymax * ph

        out.append(
            f'<rect x="{x0}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#999"/>'
        )
        out.append(f'<text x="{x0 + pw / 2}" y="{top - 8}" text-anchor="middle">-smp {n}</text>')
        for rate in rates:
            x, _ = xy(rate, 0)
            out.append(f'<text x="{x}" y="{top + ph + 15}" text-anchor="middle">{rate}</text>')
        for k in range(5):
            v = ymax * k / 4
            y = top + ph - v / ymax * ph
            out.append(f'<line x1="{x0}" x2="{x0 + pw}" y1="{y}" y2="{y}" stroke="#eee"/>')
            if p == 0:
                out.append(f'<text x="{x0 - 5}" y="{y + 4}" text-anchor="end">{v:.0f}</text>')
        for key, _label, color, dash in SERIES:
            pts = sorted((r["exit_rate"], r[key]) for r in results if r["cpus"] == n)
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(rate, v) for rate, v in pts))
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{color}" stroke-width="2" '
                f'stroke-dasharray="{dash}"/>'
            )
    out.append(
        f'<text x="{left + (width - left) / 2}" y="{top + ph + 35}" text-anchor="middle">'
        "guest I/O exits per second per vCPU</text>"
    )
    out.append(
        f'<text x="15" y="{top + ph / 2}" transform="rotate(-90 15 {top + ph / 2})" '
        'text-anchor="middle">round trip (µs)</text>'
    )
    for i, (_key, label, color, dash) in enumerate(SERIES):
        x, y = left + i * 150, top + ph + 60
        out.append(
            f'<line x1="{x}" x2="{x + 30}" y1="{y}" y2="{y}" stroke="{color}" '
            f'stroke-width="2" stroke-dasharray="{dash}"/>'
        )
        out.append(f'<text x="{x + 36}" y="{y + 4}">{label}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def table(results: list[dict[str, Any]]) -> list[str]:
    lines = [
        "| -smp | exits/s per vCPU | BQL load | in-band median | in-band p99 "
        "| OOB median | OOB p99 |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        lines.append(
            f"| {r['cpus']} | {r['exit_rate']} | {r['bql_load']:.2f} "
            f"| {r['inband_median_us']:.0f} | {r['inband_p99_us']:.0f} "
            f"| {r['oob_median_us']:.0f} | {r['oob_p99_us']:.0f} |"
        )
    return lines


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.bench.contention")
    ap.add_argument("--cpus", default="1,2,4")
    ap.add_argument("--rates", default="0,200,1000,2500")
    ap.add_argument("--cost", type=int, default=100, help="µs each exit holds the BQL")
    ap.add_argument("--samples", type=int, default=300)
    ap.add_argument("--out", default=".")
    ap.add_argument("--quick", action="store_true")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    cpus = [int(c) for c in args.cpus.split(",")]
    rates = [int(r) for r in args.rates.split(",")]
    samples = args.samples
    if args.quick:
        cpus, rates, samples = cpus[:1], rates[:2], 20
    results = [measure(n, r, args.cost, samples) for n in cpus for r in rates]
    print("\n".join(table(results)))
    out = Path(args.out)
    (out / "contention.json").write_text(json.dumps(results, indent=1) + "\n")
    title = f"QMP round trips vs a busy guest (each exit holds the BQL {args.cost} µs)"
    (out / "contention.svg").write_text(svg_plot(results, title))
    print(f"wrote {out / 'contention.json'} and {out / 'contention.svg'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
