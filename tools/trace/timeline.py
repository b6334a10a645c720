"""Draw a short trace as a timeline picture (SVG, PNG) with matplotlib.

Usage::

    python -m tools.trace.timeline TRACE -o out.svg [-o out.png]
        [--from MS] [--to MS] [--request ID] [--title TEXT] [--no-locks]

The picture is the same model as the Perfetto export
(:func:`tools.trace.timeline_builder.build_timeline`): one row per thread, per thread's
locks and per coroutine (extra rows where spans overlap), slices stacked by
nesting depth, instants as markers, each request's steps joined by arrows,
and the per-monitor counters (queue length, suspend count) as step plots.
It is meant for short windows (a few requests); for long runs open the JSON
in ui.perfetto.dev.  matplotlib is an optional dependency: ``pip install -e
'.[tools]'``.  Only the object-oriented API is used (no pyplot), so drawing
touches no global backend state.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Optional

from tools.trace.records import load_records
from tools.trace.timeline_builder import build_timeline
from tools.trace.timeline_model import Instant, Slice, Timeline, Track

#: slice colours by what they show (legend order)
STYLE: dict[str, tuple[str, str]] = {
    "read": ("#2a9d8f", "read: handle_qmp_command"),
    "queue": ("#8ab17d", "enqueue / dequeue"),
    "inband": ("#3a6ea5", "in-band command (main loop)"),
    "oob": ("#e76f51", "out-of-band command (I/O thread)"),
    "bh": ("#9ecae1", "bottom half running the command"),
    "respond": ("#7b2cbf", "reply: monitor_qmp_respond"),
    "coroutine": ("#b5a642", "coroutine running"),
    "poll": ("#e0e0e0", "main loop polling (BQL released)"),
    "bql": ("#c1121f", "BQL held"),
    "lock:monitor_lock": ("#f4a261", "monitor_lock held"),
    "lock:qmp_queue_lock": ("#e9c46a", "qmp_queue_lock held"),
    "lock:mon_lock": ("#f28482", "mon_lock held"),
    "lock:chr_write_lock": ("#84a59d", "chr_write_lock held"),
    "lock:mon_fdsets_lock": ("#bde0fe", "mon_fdsets_lock held"),
    "lock": ("#d9d9d9", "other lock held"),
    "wait": ("#222222", "waiting for a contended lock"),
    "other": ("#999999", "other"),
}

MARKERS: dict[str, tuple[str, str, str]] = {
    "monitor_suspend": ("v", "#d62828", "monitor_suspend"),
    "monitor_resume": ("^", "#2b9348", "monitor_resume"),
    "aio_co_schedule": ("x", "#555555", "aio_co_schedule (wake a coroutine)"),
    "event": ("*", "#6a4c93", "QMP event"),
    "other": (".", "#888888", "other trace event"),
}


def slice_style(s: Slice) -> str:
    """Which legend entry a slice belongs to."""
    if s.cat == "bql":
        return "bql"
    if s.cat == "lock":
        return f"lock:{s.name}" if f"lock:{s.name}" in STYLE else "lock"
    if s.cat == "lock_wait":
        return "wait"
    if s.cat == "coroutine":
        return "coroutine"
    if s.cat == "main_loop":
        return "poll"
    if s.cat == "bh":
        return "bh"
    if s.name.startswith("handle_qmp_command"):
        return "read"
    if s.name in ("monitor_qmp_in_band_enqueue", "monitor_qmp_in_band_dequeue"):
        return "queue"
    if s.name == "monitor_qmp_respond":
        return "respond"
    if "oob" in s.cat:
        return "oob"
    if s.cat == "qmp":
        return "inband"
    return "other"


def slice_label(s: Slice) -> str:
    """Short text drawn inside a slice."""
    short = {
        "monitor_qmp_in_band_enqueue": "enqueue",
        "monitor_qmp_in_band_dequeue": "dequeue",
        "monitor_qmp_respond": "reply",
        "poll (BQL released)": "poll",
    }
    if s.name in short:
        return short[s.name]
    if s.name.startswith("handle_qmp_command "):
        return "read " + s.name.split(" ", 1)[1]
    return s.name


def instant_kind(i: Instant) -> str:
    if i.name in ("monitor_suspend", "monitor_resume"):
        return i.name
    if i.name.startswith("aio_co_schedule "):
        return "aio_co_schedule"
    if i.name.startswith(("event ", "send event ")):
        return "event"
    return "other"


def instant_label(i: Instant) -> str:
    """A short text for an instant: its name and the argument that says most."""
    for key in ("event", "label", "bh", "co", "cmdline"):
        if key in i.args and str(i.args[key]) not in i.name:
            return f"{i.name} {i.args[key]}"
    return i.name


@dataclass
class _Row:
    track: Track
    lane: int
    depth: int
    y: float  # top, in row units from the top
    height: float


def find_window(tl: Timeline, request_id: Any, pad_frac: float = 0.08) -> tuple[int, int]:
    """The span (ns, relative to the trace start) of the request(s) with this QMP id."""
    spans = [
        (s.start_ns, s.end_ns)
        for f in tl.flows
        for s in f.steps
        if any(r.seq == f.id and r.qid == request_id for r in tl.requests)
    ]
    if not spans:
        raise KeyError(f"no request with id {request_id!r} in the trace")
    lo, hi = min(a for a, _ in spans), max(b for _, b in spans)
    pad = max(int((hi - lo) * pad_frac), 1000)
    return max(0, lo - pad), hi + pad


def render_timeline(
    tl: Timeline,
    outputs: Sequence[str],
    window: Optional[tuple[int, int]] = None,
    title: Optional[str] = None,
    show_locks: bool = True,
    hide_instants: Sequence[str] = (
        "chr_be_write",
        "chr_write",
        "aio_co_schedule_bh_cb",
        "BH co_schedule_bh",
        "BH chr_input_bh",
    ),
    width_in: float = 13.0,
) -> None:
    """Draw ``tl`` (optionally only ``window``, ns from the trace start) to each output.

    The format follows each output's suffix (``.svg``, ``.png``, ``.pdf``).
    """
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch, Rectangle

    t0, t1 = window if window is not None else (0, max(tl.end_ns, 1))
    t1 = max(t1, t0 + 1)

    def visible(start: int, end: int) -> bool:
        return end >= t0 and start <= t1

    slices = [s for s in tl.slices if visible(s.start_ns, s.end_ns)]
    instants = [
        i
        for i in tl.instants
        if t0 <= i.ts_ns <= t1 and not any(i.name.startswith(h) for h in hide_instants)
    ]
    if not show_locks:
        slices = [s for s in slices if s.track[0] != "locks"]
        instants = [i for i in instants if i.track[0] != "locks"]

    # rows: every (track, lane) with something visible, in display order
    depth: dict[tuple[Any, int], int] = {}
    for s in slices:
        key = (s.track, s.lane)
        depth[key] = max(depth.get(key, 0), s.depth)
    for i in instants:
        depth.setdefault((i.track, 0), 0)
    rows: list[_Row] = []
    y = 0.0
    for t in tl.tracks:
        for lane in range(t.lanes):
            if (t.key, lane) not in depth:
                continue
            h = 0.3 + 0.7 * (depth[(t.key, lane)] + 1)
            rows.append(_Row(t, lane, depth[(t.key, lane)], y, h))
            y += h + 0.25
    counters: dict[tuple[str, str], list[tuple[int, int]]] = {}
    for c in tl.counters:
        counters.setdefault((c.name, c.key), []).append((c.ts_ns, c.value))
    # only counters that change inside the window tell something here
    counter_rows = [(k, v) for k, v in counters.items() if any(t0 <= ts <= t1 for ts, _ in v)]
    counter_y = y
    y += len(counter_rows) * 1.25
    total = max(y, 1.0)

    # fixed margins in inches: title above, time axis and legend below
    top_in, bottom_in, rows_in = 0.5, 1.45, total * 0.42
    fig_h = top_in + rows_in + bottom_in
    fig = Figure(figsize=(width_in, fig_h))
    ax = fig.add_axes((0.24, bottom_in / fig_h, 0.74, rows_in / fig_h))
    scale, unit = (1e6, "ms") if t1 - t0 >= 2_000_000 else (1e3, "µs")

    def x(ns: float) -> float:
        return (ns - t0) / scale

    ax.set_xlim(0, x(t1))
    ax.set_ylim(total, -0.2)
    ax.set_xlabel(f"time ({unit}) from {tl_time(t0)} into the trace")
    ax.set_yticks([])
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    if title:
        ax.set_title(title, loc="left", fontsize=11, fontweight="bold")

    row_of: dict[tuple[Any, int], _Row] = {(r.track.key, r.lane): r for r in rows}
    fig_w_px = width_in * fig.dpi * 0.74
    px_per_unit = fig_w_px / max(x(t1), 1e-9)
    for n, row in enumerate(rows):
        if n % 2 == 0:
            ax.add_patch(
                Rectangle((0, row.y - 0.1), x(t1), row.height + 0.2, color="#f5f5f5", zorder=0)
            )
        name = row.track.name if row.lane == 0 else f"{row.track.name} ({row.lane + 1})"
        ax.text(
            -0.01,
            row.y + row.height / 2,
            name,
            transform=ax.get_yaxis_transform(),
            ha="right",
            va="center",
            fontsize=7.5,
        )
    used_styles: set[str] = set()
    for s in sorted(slices, key=lambda s: s.depth):
        r = row_of.get((s.track, s.lane))
        if r is None:
            continue
        st = slice_style(s)
        used_styles.add(st)
        colour = STYLE[st][0]
        xs, xe = x(max(s.start_ns, t0)), x(min(s.end_ns, t1))
        top = r.y + 0.15 + 0.7 * s.depth
        width = max(xe - xs, 0.6 / px_per_unit)
        ax.add_patch(
            Rectangle(
                (xs, top),
                width,
                0.6,
                facecolor=colour,
                edgecolor="white",
                linewidth=0.4,
                zorder=2 + s.depth,
            )
        )
        label = slice_label(s)
        room = width * px_per_unit
        if room > 18:
            chars = int((room - 4) / 4.6)
            text = label if len(label) <= chars else label[: max(chars - 1, 1)] + "…"
            dark = st in ("bql", "inband", "respond", "wait", "read", "oob")
            ax.text(
                xs + width / 2,
                top + 0.3,
                text,
                ha="center",
                va="center",
                fontsize=6.5,
                color="white" if dark else "black",
                zorder=20,
                clip_on=True,
            )
    used_markers: set[str] = set()
    last_label: dict[int, float] = {}
    for i in sorted(instants, key=lambda i: i.ts_ns):
        r = row_of.get((i.track, 0))
        if r is None:
            continue
        kind = instant_kind(i)
        used_markers.add(kind)
        marker, colour, _ = MARKERS[kind]
        xi = x(i.ts_ns)
        ax.plot(
            [xi],
            [r.y + 0.08],
            marker=marker,
            color=colour,
            markersize=6 if kind != "other" else 3,
            zorder=30,
            linestyle="none",
        )
        # name the instants that are not self-explaining markers, when there is room
        if kind in ("other", "event") and xi * px_per_unit - last_label.get(id(r), -1e9) > 70:
            last_label[id(r)] = xi * px_per_unit
            ax.text(
                xi,
                r.y + 0.02,
                instant_label(i),
                fontsize=5.5,
                color="#444444",
                rotation=20,
                ha="left",
                va="bottom",
                zorder=31,
                clip_on=True,
            )
    palette = ["#1d3557", "#e63946", "#2a9d8f", "#f4a261", "#6a4c93", "#457b9d", "#bc6c25"]
    for f in tl.flows:
        pts = []
        for s in f.steps:
            r = row_of.get((s.track, s.lane))
            if r is not None and visible(s.start_ns, s.end_ns):
                pts.append((x(max(s.start_ns, t0)), r.y + 0.15 + 0.7 * s.depth + 0.3, r))
        colour = palette[f.id % len(palette)]
        for (xa, ya, ra), (xb, yb, rb) in zip(pts, pts[1:]):
            if ra is rb:
                continue
            ax.annotate(
                "",
                xy=(xb, yb),
                xytext=(xa, ya),
                zorder=40,
                arrowprops={
                    "arrowstyle": "-|>",
                    "color": colour,
                    "lw": 1.1,
                    "alpha": 0.85,
                    "shrinkA": 0,
                    "shrinkB": 0,
                },
            )
    for n, ((cname, ckey), samples) in enumerate(counter_rows):
        cy = counter_y + n * 1.25
        peak = max(max(v for _, v in samples), 1)
        xs_: list[float] = []
        ys_: list[float] = []
        prev = 0
        for ts, v in samples:
            if ts < t0:
                prev = v
                continue
            if ts > t1:
                break
            xs_ += [x(ts), x(ts)]
            ys_ += [prev, v]
            prev = v
        xs_ = [0.0, *xs_, x(t1)]
        ys_ = [ys_[0] if ys_ else prev, *ys_, prev]
        ax.plot(xs_, [cy + 1.0 - 0.9 * v / peak for v in ys_], color="#264653", lw=1.2, zorder=5)
        ax.text(
            -0.01,
            cy + 0.55,
            f"{cname} [{ckey}] (max {peak})",
            transform=ax.get_yaxis_transform(),
            ha="right",
            va="center",
            fontsize=7.5,
        )
    handles: list[Any] = [
        Patch(facecolor=STYLE[k][0], label=STYLE[k][1]) for k in STYLE if k in used_styles
    ]
    handles += [
        Line2D(
            [], [], marker=MARKERS[k][0], color=MARKERS[k][1], linestyle="none", label=MARKERS[k][2]
        )
        for k in MARKERS
        if k in used_markers
    ]
    if tl.flows:
        handles.append(Line2D([], [], color="#1d3557", lw=1.1, label="a request's path (flow)"))
    fig.legend(
        handles=handles,
        loc="lower center",
        bbox_to_anchor=(0.5, 0.0),
        ncol=4,
        fontsize=7,
        frameon=False,
    )
    for out in outputs:
        metadata: dict[str, Any] = {"Date": None} if out.endswith(".svg") else {}
        if out.endswith(".svg"):
            import matplotlib

            matplotlib.rcParams["svg.hashsalt"] = "qemu-monitor-emu"
        fig.savefig(out, dpi=130, metadata=metadata)


def tl_time(ns: int) -> str:
    """``ns`` as a short human time."""
    if ns >= 1_000_000:
        return f"{ns / 1e6:.3f} ms"
    return f"{ns / 1e3:.1f} µs"


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.trace.timeline", description=__doc__)
    ap.add_argument("trace", help="record file (.jsonl), log text, or pickled records")
    ap.add_argument(
        "-o",
        "--output",
        action="append",
        required=True,
        help="picture to write (.svg, .png); repeatable",
    )
    ap.add_argument("--from", dest="start", type=float, help="window start (ms into the trace)")
    ap.add_argument("--to", dest="end", type=float, help="window end (ms into the trace)")
    ap.add_argument("--request", help="window around the request(s) with this QMP id (JSON)")
    ap.add_argument("--title")
    ap.add_argument("--no-locks", action="store_true", help="leave out the locks-held rows")
    args = ap.parse_args(argv)
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("matplotlib is needed: pip install -e '.[tools]'", file=sys.stderr)
        return 2
    records, pid = load_records(args.trace)
    tl = build_timeline(records, pid)
    window: Optional[tuple[int, int]] = None
    if args.request is not None:
        try:
            qid = json.loads(args.request)
        except ValueError:
            qid = args.request
        window = find_window(tl, qid)
    elif args.start is not None or args.end is not None:
        window = (
            int((args.start or 0) * 1e6),
            int(args.end * 1e6) if args.end is not None else tl.end_ns,
        )
    render_timeline(tl, args.output, window, args.title, show_locks=not args.no_locks)
    for out in args.output:
        print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
