"""Regenerate every committed picture of docs/ from real runs.

Usage (from the repository root, with ``pip install -e '.[tools]'``)::

    python -m tools.trace.make_docs [--outdir docs]

Runs each scenario of :mod:`tools.trace.scenarios` against ``python -m
system`` with tracing on and writes, under OUTDIR:

* ``images/NAME.svg`` and ``images/NAME.png``: the timeline of the
  scenario's interesting window (inband, oob, backpressure, selfremove);
* ``images/lock_order.svg``/``.png``/``.dot``/``.txt``: the lock-order
  graph observed over all four runs, against the declared ranks;
* ``traces/NAME.json``: each whole run as Chrome/Perfetto JSON, to open in
  ui.perfetto.dev or chrome://tracing.

The pictures are of real runs, so timings differ from one regeneration to
the next; the structure (which thread does what, in which order) does not.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from typing import Optional

from tools.trace.lockgraph import (
    LockGraph,
    format_dot,
    format_text,
    graph_from_records,
    render_graph,
)
from tools.trace.scenarios import SCENARIOS, run_scenario
from tools.trace.timeline import render_timeline

ORDER = ("inband", "oob", "backpressure", "selfremove")


def merge_graphs(graphs: list[LockGraph]) -> LockGraph:
    """One graph with every edge of ``graphs`` (counts added, first sites kept)."""
    out = LockGraph(dict(graphs[0].ranks) if graphs else {})
    for g in graphs:
        out.classes |= g.classes
        for key, e in g.edges.items():
            mine = out.edges.get(key)
            if mine is None:
                out.edges[key] = type(e)(
                    e.outer, e.inner, e.count, e.outer_site, e.inner_site, set(e.threads)
                )
            else:
                mine.count += e.count
                mine.threads |= e.threads
    return out


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.trace.make_docs",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--outdir", default="docs", help="documentation directory (docs)")
    ap.add_argument(
        "--only",
        choices=sorted(SCENARIOS),
        action="append",
        help="regenerate only this scenario (repeatable); skips the lock graph",
    )
    args = ap.parse_args(argv)
    images = os.path.join(args.outdir, "images")
    traces = os.path.join(args.outdir, "traces")
    os.makedirs(images, exist_ok=True)
    os.makedirs(traces, exist_ok=True)
    graphs: list[LockGraph] = []
    with tempfile.TemporaryDirectory(prefix="qme-make-docs-") as work:
        for name in args.only or ORDER:
            res = run_scenario(name, work)
            render_timeline(
                res.timeline,
                [os.path.join(images, f"{name}.svg"), os.path.join(images, f"{name}.png")],
                res.window,
                res.title,
            )
            shutil.copyfile(res.chrome_path, os.path.join(traces, f"{name}.json"))
            graphs.append(graph_from_records(res.records))
            print(
                f"{name}: {len(res.records)} records -> images/{name}.svg, .png, traces/{name}.json"
            )
    if not args.only:
        g = merge_graphs(graphs)
        base = os.path.join(images, "lock_order")
        with open(base + ".dot", "w", encoding="utf-8") as f:
            f.write(format_dot(g, "lock order observed in the four scenarios vs declared ranks"))
        with open(base + ".txt", "w", encoding="utf-8") as f:
            f.write(format_text(g) + "\n")
        render_graph(
            g,
            [base + ".svg", base + ".png"],
            "lock order observed in the four scenarios vs declared ranks",
        )
        print(
            f"lock_order: {len(g.edges)} edges, {len(g.problems())} problems -> images/lock_order.*"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
