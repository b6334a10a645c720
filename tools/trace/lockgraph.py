"""The lock-order graph observed in a run, against the declared hierarchy.

Usage::

    python -m tools.trace.lockgraph TRACE [--dot OUT.dot] [-o OUT.svg|OUT.png ...]

An edge ``A -> B`` means some thread acquired lock class B while holding A.
The graph comes from a trace (``qemu_mutex_locked``/``qemu_mutex_unlock``
replayed per thread, as util/lockdep.py keeps its held stacks) or, inside a
process, from util.lockdep's own observed edges (:func:`graph_from_lockdep`).
Each edge is judged against ``util.lockdep.LOCK_RANKS`` (DESIGN.md "Locks"):

* ``ok``: the outer class has a lower rank;
* ``VIOLATION``: both ranked and the outer rank is not lower (equal ranks
  must not nest), or a class nests in itself;
* ``INVERSION``: the reverse edge was observed too (a potential deadlock,
  even if no run deadlocked);
* ``unranked``: a class missing from the table; only inversions can be seen.

Text goes to stdout; ``--dot`` writes Graphviz (``dot -Tsvg OUT.dot``), with
violations in red; ``-o`` draws the same graph with matplotlib (layered by
rank), which needs no Graphviz.  Exit status 1 when a violation or an
inversion was observed, so the tool can gate a CI run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Optional

from tools.trace.records import load_records
from util.lockdep import LOCK_RANKS
from util.trace import TraceRecord


@dataclass
class Edge:
    """``outer -> inner``: how often, first where, by which threads."""

    outer: str
    inner: str
    count: int = 0
    outer_site: str = ""
    inner_site: str = ""
    threads: set[str] = field(default_factory=set)


@dataclass
class LockGraph:
    """Observed edges plus the declared ranks they are judged by."""

    ranks: dict[str, int]
    edges: dict[tuple[str, str], Edge] = field(default_factory=dict)
    classes: set[str] = field(default_factory=set)

    def add(self, outer: str, inner: str, outer_site: str, inner_site: str, thread: str) -> None:
        e = self.edges.get((outer, inner))
        if e is None:
            e = self.edges[(outer, inner)] = Edge(outer, inner, 0, outer_site, inner_site)
        e.count += 1
        e.threads.add(thread)
        self.classes.update((outer, inner))

    def status(self, e: Edge) -> str:
        """``ok``, ``VIOLATION``, ``INVERSION`` or ``unranked`` (see the module doc)."""
        if e.outer == e.inner:
            return "VIOLATION"
        ro, ri = self.ranks.get(e.outer), self.ranks.get(e.inner)
        if ro is not None and ri is not None and ro >= ri:
            return "VIOLATION"
        if (e.inner, e.outer) in self.edges:
            return "INVERSION"
        if ro is None or ri is None:
            return "unranked"
        return "ok"

    def problems(self) -> list[Edge]:
        return [e for e in self.sorted_edges() if self.status(e) in ("VIOLATION", "INVERSION")]

    def rank_of(self, cls: str) -> int:
        """Display layer: the declared rank, unranked classes below the rest."""
        return self.ranks.get(cls, max(self.ranks.values(), default=0) + 1)

    def sorted_edges(self) -> list[Edge]:
        return sorted(
            self.edges.values(),
            key=lambda e: (self.rank_of(e.outer), self.rank_of(e.inner), e.outer, e.inner),
        )


def graph_from_records(
    records: Iterable[TraceRecord], ranks: Optional[dict[str, int]] = None
) -> LockGraph:
    """Replay ``qemu_mutex_locked``/``qemu_mutex_unlock`` per thread into edges.

    Like util/lockdep.py: every lock a thread holds when it takes another
    makes an edge, not only the innermost.  (``trylock`` is not traced, so
    locks taken that way are missing, as they never block.)
    """
    g = LockGraph(dict(LOCK_RANKS if ranks is None else ranks))
    held: dict[int, list[tuple[str, str]]] = {}
    for rec in sorted(records, key=lambda r: r.ts_ns):
        if rec.name == "qemu_mutex_locked":
            cls = str(rec.args.get("mutex"))
            site = f"{os.path.basename(str(rec.args.get('file', '?')))}:{rec.args.get('line', '?')}"
            stack = held.setdefault(rec.thread_id, [])
            for outer, osite in stack:
                g.add(outer, cls, osite, site, rec.thread)
            stack.append((cls, site))
            g.classes.add(cls)
        elif rec.name == "qemu_mutex_unlock":
            cls = str(rec.args.get("mutex"))
            stack = held.get(rec.thread_id, [])
            for i in range(len(stack) - 1, -1, -1):
                if stack[i][0] == cls:
                    del stack[i]
                    break
    return g


def graph_from_lockdep(ranks: Optional[dict[str, int]] = None) -> LockGraph:
    """The edges util.lockdep observed in this process (first sites; no counts)."""
    from util.lockdep import lockdep_edges

    g = LockGraph(dict(LOCK_RANKS if ranks is None else ranks))
    for (outer, inner), (osite, isite) in lockdep_edges().items():
        g.add(outer, inner, str(osite), str(isite), getattr(isite, "thread", "?"))
    return g


def format_text(g: LockGraph) -> str:
    """The declared hierarchy, then every observed edge with its verdict."""
    lines = ["declared hierarchy (util.lockdep.LOCK_RANKS; lower rank is taken first):"]
    for cls, rank in sorted(g.ranks.items(), key=lambda kv: (kv[1], kv[0])):
        seen = "" if cls in g.classes else "   (not seen in this run)"
        lines.append(f"  {rank}  {cls}{seen}")
    unranked = sorted(c for c in g.classes if c not in g.ranks)
    if unranked:
        lines.append(f"  -  unranked: {', '.join(unranked)}")
    lines.append("observed edges (outer -> inner: verdict, count, first seen at outer -> inner):")
    for e in g.sorted_edges():
        st = g.status(e)
        mark = ">>" if st in ("VIOLATION", "INVERSION") else "  "
        lines.append(
            f"{mark}{e.outer} -> {e.inner}: {st}, x{e.count}, {e.outer_site} -> {e.inner_site}"
            f" [{', '.join(sorted(e.threads))}]"
        )
    problems = g.problems()
    lines.append(
        f"{len(problems)} violation(s)/inversion(s)" if problems else "no violation observed"
    )
    return "\n".join(lines)


def _q(s: str) -> str:
    """A dot ID string; ``\\n`` in ``s`` stays dot's line-break escape."""
    return '"' + s.replace('"', '\\"') + '"'


def format_dot(g: LockGraph, title: Optional[str] = None) -> str:
    """Graphviz: one row per rank, observed edges, violations red and bold."""
    title = title or "observed lock order (edges: outer -> inner) vs declared ranks (rows)"
    out = [
        "digraph lock_order {",
        "  rankdir=TB;",
        '  labelloc="t";',
        '  fontname="Helvetica";',
        f"  label={_q(title)};",
        '  node [shape=box, style="rounded,filled", fillcolor="#f5f5f5", fontname="Helvetica"];',
        '  edge [fontname="Helvetica", fontsize=10];',
    ]
    classes = sorted(set(g.ranks) | g.classes, key=lambda c: (g.rank_of(c), c))
    layers: dict[int, list[str]] = {}
    for c in classes:
        layers.setdefault(g.rank_of(c), []).append(c)
    for rank, members in sorted(layers.items()):
        out.append(f"  {{ rank=same; {'; '.join(_q(c) for c in members)}; }}")
        for c in members:
            declared = c in g.ranks
            label = f"{c}\\nrank {rank}" if declared else f"{c}\\n(unranked)"
            style = '"rounded,filled"' if c in g.classes else '"rounded,dashed"'
            if not declared:
                style = '"rounded,filled,dashed"'
            out.append(f"  {_q(c)} [label={_q(label)}, style={style}];")
    ranks = sorted(layers)
    for a, b in zip(ranks, ranks[1:]):  # keep the rows in rank order
        out.append(f"  {_q(layers[a][0])} -> {_q(layers[b][0])} [style=invis];")
    for e in g.sorted_edges():
        st = g.status(e)
        attrs = [f"label={_q(f'x{e.count}')}"]
        if st in ("VIOLATION", "INVERSION"):
            attrs = [
                f"label={_q(f'{st} x{e.count}')}",
                'color="#d62828"',
                'fontcolor="#d62828"',
                "penwidth=2.5",
            ]
        elif st == "unranked":
            attrs.append('color="#777777"')
        out.append(f"  {_q(e.outer)} -> {_q(e.inner)} [{', '.join(attrs)}];")
    out.append("}")
    return "\n".join(out) + "\n"


def render_graph(
    g: LockGraph, outputs: Sequence[str], title: Optional[str] = None, graphviz: bool = True
) -> None:
    """Draw the graph: with Graphviz's ``dot`` when installed (the clearer
    layout), else with matplotlib (a row per rank, edges as arrows)."""
    dot = shutil.which("dot") if graphviz else None
    rest = []
    for out in outputs:
        fmt = os.path.splitext(out)[1].lstrip(".")
        if dot is not None and fmt in ("svg", "png", "pdf"):
            subprocess.run(
                [dot, f"-T{fmt}", "-o", out], input=format_dot(g, title), text=True, check=True
            )
        else:
            rest.append(out)
    if rest:
        _render_graph_matplotlib(g, rest, title)


def _render_graph_matplotlib(g: LockGraph, outputs: Sequence[str], title: Optional[str]) -> None:
    from matplotlib.figure import Figure
    from matplotlib.patches import FancyBboxPatch

    classes = sorted(set(g.ranks) | g.classes, key=lambda c: (g.rank_of(c), c))
    layers: dict[int, list[str]] = {}
    for c in classes:
        layers.setdefault(g.rank_of(c), []).append(c)
    pos: dict[str, tuple[float, float]] = {}
    widest = max(len(m) for m in layers.values())
    for row, (_rank, members) in enumerate(sorted(layers.items())):
        for k, c in enumerate(members):
            pos[c] = ((k + 0.5) * widest / len(members), -row * 1.6)
    fig = Figure(figsize=(2.6 * widest + 1.5, 1.6 * len(layers) + 1.2))
    ax = fig.add_axes((0.02, 0.02, 0.96, 0.9))
    ax.set_axis_off()
    ax.set_xlim(-0.6, widest + 0.2)
    ax.set_ylim(-(len(layers) - 1) * 1.6 - 0.8, 0.8)
    for row, (rank, _members) in enumerate(sorted(layers.items())):
        declared = any(c in g.ranks for c in _members)
        ax.text(
            -0.55,
            -row * 1.6,
            f"rank {rank}" if declared else "unranked",
            ha="left",
            va="center",
            fontsize=9,
            color="#666666",
        )
    for c, (cx, cy) in pos.items():
        seen = c in g.classes
        ax.add_patch(
            FancyBboxPatch(
                (cx - 0.42, cy - 0.22),
                0.84,
                0.44,
                boxstyle="round,pad=0.02",
                facecolor="#f5f5f5" if seen else "white",
                edgecolor="#333333",
                linestyle="-" if c in g.ranks else "--",
                zorder=3,
            )
        )
        ax.text(
            cx,
            cy,
            c,
            ha="center",
            va="center",
            fontsize=9,
            zorder=4,
            color="#222222" if seen else "#999999",
        )
    edges = [e for e in g.sorted_edges() if e.outer in pos and e.inner in pos]
    # spread the ends of a node's edges along its box edge, ordered by direction
    outs: dict[str, list[Edge]] = {}
    ins: dict[str, list[Edge]] = {}
    for e in edges:
        outs.setdefault(e.outer, []).append(e)
        ins.setdefault(e.inner, []).append(e)
    for lst in outs.values():
        lst.sort(key=lambda e: pos[e.inner][0] - pos[e.outer][0])
    for lst in ins.values():
        lst.sort(key=lambda e: pos[e.outer][0] - pos[e.inner][0])

    def spread(lst: list[Edge], e: Edge) -> float:
        return (lst.index(e) - (len(lst) - 1) / 2) * min(0.7 / max(len(lst), 1), 0.14)

    for e in edges:
        st = g.status(e)
        bad = st in ("VIOLATION", "INVERSION")
        colour = "#d62828" if bad else ("#777777" if st == "unranked" else "#1d3557")
        (x0, y0), (x1, y1) = pos[e.outer], pos[e.inner]
        down = y1 < y0
        a = (x0 + spread(outs[e.outer], e), y0 - 0.22 if down else y0 + 0.22)
        b = (x1 + spread(ins[e.inner], e), y1 + 0.22 if down else y1 - 0.22)
        skipped = round(abs(y0 - y1) / 1.6) - 1  # rows an edge jumps over
        rad = 0.5 if y0 == y1 else 0.05 + 0.2 * max(skipped, 0)
        if b[0] < a[0]:
            rad = -rad
        ax.annotate(
            "",
            xy=b,
            xytext=a,
            zorder=5,
            arrowprops={
                "arrowstyle": "-|>",
                "color": colour,
                "lw": 2.4 if bad else 1.1,
                "shrinkA": 0,
                "shrinkB": 0,
                "connectionstyle": f"arc3,rad={rad}",
            },
        )
        label = f"{st} x{e.count}" if bad else f"x{e.count}"
        ax.text(
            a[0] + (b[0] - a[0]) * 0.3 + 0.04,
            a[1] + (b[1] - a[1]) * 0.3,
            label,
            fontsize=7,
            color=colour,
            ha="left",
            va="center",
            zorder=6,
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.5, "alpha": 0.8},
        )
    ax.set_title(
        title or "lock order observed (arrows: outer -> inner) against the declared ranks",
        fontsize=10,
        loc="left",
    )
    for out in outputs:
        if out.endswith(".svg"):
            import matplotlib

            matplotlib.rcParams["svg.hashsalt"] = "qemu-monitor-emu"
        fig.savefig(out, dpi=130, metadata={"Date": None} if out.endswith(".svg") else {})


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.trace.lockgraph",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("trace", help="record file (.jsonl), log text, or pickled records")
    ap.add_argument("--dot", help="also write the graph in Graphviz dot to this file")
    ap.add_argument(
        "-o",
        "--output",
        action="append",
        default=[],
        help="draw the graph (.svg/.png, needs matplotlib); repeatable",
    )
    args = ap.parse_args(argv)
    records, _ = load_records(args.trace)
    g = graph_from_records(records)
    print(format_text(g))
    if args.dot:
        with open(args.dot, "w", encoding="utf-8") as f:
            f.write(format_dot(g))
    if args.output:
        render_graph(g, args.output)
    return 1 if g.problems() else 0


if __name__ == "__main__":
    sys.exit(main())
