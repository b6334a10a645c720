"""Trace export: Chrome/Perfetto trace-event JSON.

Why this exists: a log of trace lines says *what* happened; a teacher needs
to *see* the threads.  This module turns :class:`util.trace.TraceRecord`
objects into the "Trace Event Format" that ui.perfetto.dev and
chrome://tracing open unchanged (``{"traceEvents": [...], "displayTimeUnit":
"ms"}``), with:

* one track per thread (main loop, ``IO mon_iothread``, others), a
  ``locks held`` track per thread (lock-held spans, BQL included, and waits
  for contended locks) and one track per coroutine (its residency: from
  ``qemu_coroutine_enter`` to ``qemu_coroutine_yield``/``terminate``);
* duration slices (``ph: "X"``) for each QMP request's steps: the read
  (``handle_qmp_command``) and the enqueue on the reader thread, the dequeue
  in the dispatcher coroutine, the command (in-band on the main loop thread,
  with the ``qmp_dispatch:`` bottom half that runs an ordinary command;
  out-of-band on the I/O thread), and the reply (``monitor_qmp_respond``
  until ``mon_lock`` is dropped);
* instants (``ph: "i"``, thread scope) for suspend/resume, wake-ups, bottom
  halves, events and every other trace event;
* flow arrows (``ph: "s"``/``"t"``/``"f"``, ``bp: "e"``) linking a request's
  read -> enqueue -> dequeue -> dispatch -> reply across threads;
* counters (``ph: "C"``) for each monitor's queue length and suspend count.

Runs in any thread, on a finished list of records or a built timeline.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any, Optional, Union

from tools.trace.timeline_builder import build_timeline
from tools.trace.timeline_model import PROCESS_NAME, Timeline
from util.trace import TraceRecord

# ---------------------------------------------------------------- Chrome JSON


def _us(ns: int) -> float:
    """Nanoseconds as the format's microseconds (exact to the nanosecond)."""
    return ns / 1000


def chrome_trace(
    source: Union[Timeline, Sequence[TraceRecord]],
    pid: Optional[int] = None,
    process_name: str = PROCESS_NAME,
) -> dict[str, Any]:
    """The JSON Object Format document for ``source``.

    Pseudo-thread ids: the first track's first lane is ``pid`` itself (so
    viewers treat the main loop as the main thread), the others follow in
    display order, so viewers that sort threads by id keep that order.
    """
    tl = source if isinstance(source, Timeline) else build_timeline(source, pid, process_name)
    pid_ = tl.pid
    tids: dict[tuple[tuple[Any, ...], int], int] = {}
    meta: list[dict[str, Any]] = [
        {
            "name": "process_name",
            "ph": "M",
            "pid": pid_,
            "tid": pid_,
            "args": {"name": tl.process_name},
        },
    ]
    n = 0
    for t in tl.tracks:
        for lane in range(t.lanes):
            tid = pid_ + n
            tids[(t.key, lane)] = tid
            name = t.name if lane == 0 else f"{t.name} (overlap {lane})"
            meta.append(
                {"name": "thread_name", "ph": "M", "pid": pid_, "tid": tid, "args": {"name": name}}
            )
            meta.append(
                {
                    "name": "thread_sort_index",
                    "ph": "M",
                    "pid": pid_,
                    "tid": tid,
                    "args": {"sort_index": n},
                }
            )
            n += 1

    timed: list[tuple[tuple[int, int, int], dict[str, Any]]] = []
    for s in tl.slices:
        tid = tids.get((s.track, s.lane), -1)
        if tid < 0:
            continue
        ev = {
            "name": s.name,
            "cat": s.cat,
            "ph": "X",
            "pid": pid_,
            "tid": tid,
            "ts": _us(s.start_ns),
            "dur": _us(s.dur_ns),
            "args": s.args,
        }
        timed.append(((s.start_ns, 0, -s.dur_ns), ev))
    for i in tl.instants:
        tid = tids.get((i.track, 0), -1)
        if tid < 0:
            continue
        ev = {
            "name": i.name,
            "cat": i.cat,
            "ph": "i",
            "s": "t",
            "pid": pid_,
            "tid": tid,
            "ts": _us(i.ts_ns),
            "args": i.args,
        }
        timed.append(((i.ts_ns, 2, 0), ev))
    for f in tl.flows:
        for k, s in enumerate(f.steps):
            tid = tids.get((s.track, s.lane), -1)
            if tid < 0:
                continue
            # strictly inside the slice, after it opened: both viewers bind
            # a flow event to the slice enclosing it on its thread
            ts = s.start_ns + (1 if s.dur_ns >= 2 else 0)
            ph = "s" if k == 0 else ("f" if k == len(f.steps) - 1 else "t")
            ev = {
                "name": f.name,
                "cat": "qmp_request",
                "ph": ph,
                "id": f.id,
                "pid": pid_,
                "tid": tid,
                "ts": _us(ts),
            }
            if ph == "f":
                ev["bp"] = "e"
            timed.append(((ts, 1, 0), ev))
    for c in tl.counters:
        ev = {
            "name": f"{c.name} {c.key}",
            "cat": "monitor",
            "ph": "C",
            "pid": pid_,
            "tid": pid_,
            "ts": _us(c.ts_ns),
            "args": {c.name: c.value},
        }
        timed.append(((c.ts_ns, 3, 0), ev))
    timed.sort(key=lambda item: item[0])
    return {
        "traceEvents": meta + [ev for _, ev in timed],
        "displayTimeUnit": "ms",
        "otherData": {
            "generator": "qemu-monitor-emu tools/trace/chrome.py",
            "clock": "monotonic, microseconds from the first record",
            "requests": len(tl.requests),
        },
    }


def write_chrome_trace(
    source: Union[Timeline, Sequence[TraceRecord]],
    path_or_file: Union[str, IO[str]],
    pid: Optional[int] = None,
) -> None:
    """Write the Chrome JSON for ``source`` to a path or an open text file."""
    doc = chrome_trace(source, pid)
    if isinstance(path_or_file, str):
        with open(path_or_file, "w", encoding="utf-8") as f:
            json.dump(doc, f, separators=(",", ":"))
            f.write("\n")
    else:
        json.dump(doc, path_or_file, separators=(",", ":"))
        path_or_file.write("\n")


# ---------------------------------------------------------------- checking


def check_chrome_trace(doc: Any) -> list[str]:
    """Problems that would keep ``doc`` from opening cleanly in both viewers.

    Checks the JSON Object Format's shape, that every track used is named,
    that complete slices nest on every thread (compared in integer
    nanoseconds, as Perfetto imports them), and that every flow has one
    start and one finish, in time order, each inside a slice of its thread.
    An empty list means the document is fine.
    """
    problems: list[str] = []
    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        return ["not a JSON Object Format document (no traceEvents list)"]
    if doc.get("displayTimeUnit", "ms") not in ("ms", "ns"):
        problems.append(f"displayTimeUnit {doc.get('displayTimeUnit')!r}")
    named: set[tuple[int, int]] = set()
    processes: set[int] = set()
    used: set[tuple[int, int]] = set()
    slices: dict[tuple[int, int], list[tuple[int, int, str]]] = {}
    flows: dict[tuple[Any, Any, Any], list[dict[str, Any]]] = {}
    for n, ev in enumerate(doc["traceEvents"]):
        ph = ev.get("ph") if isinstance(ev, dict) else None
        if ph not in ("X", "B", "E", "i", "I", "s", "t", "f", "M", "C"):
            problems.append(f"event {n}: unexpected ph {ph!r}")
            continue
        if not isinstance(ev.get("pid"), int) or not isinstance(ev.get("tid"), int):
            problems.append(f"event {n}: pid/tid must be integers")
            continue
        where = (ev["pid"], ev["tid"])
        if ph == "M":
            if ev.get("name") == "thread_name":
                named.add(where)
            elif ev.get("name") == "process_name":
                processes.add(ev["pid"])
            continue
        ts = ev.get("ts")
        if not isinstance(ts, (int, float)) or ts < 0:
            problems.append(f"event {n}: bad ts {ts!r}")
            continue
        if ph != "C":
            used.add(where)
        start = round(ts * 1000)
        if ph == "X":
            dur = ev.get("dur")
            if not isinstance(dur, (int, float)) or dur < 0:
                problems.append(f"event {n}: bad dur {dur!r}")
                continue
            slices.setdefault(where, []).append((start, start + round(dur * 1000), ev["name"]))
        elif ph in ("i", "I") and ev.get("s", "t") not in ("t", "p", "g"):
            problems.append(f"event {n}: instant scope {ev.get('s')!r}")
        elif ph in ("s", "t", "f"):
            if "id" not in ev:
                problems.append(f"event {n}: flow event without id")
                continue
            flows.setdefault((ev.get("cat"), ev.get("name"), ev["id"]), []).append(ev)
        elif ph in ("B", "E"):
            problems.append(f"event {n}: B/E are not produced here; use X")
    for where in sorted(used - named):
        problems.append(f"pid {where[0]} tid {where[1]}: no thread_name metadata")
    for pid in sorted({p for p, _ in used} - processes):
        problems.append(f"pid {pid}: no process_name metadata")
    for where, items in slices.items():
        items.sort(key=lambda s: (s[0], -s[1]))
        stack: list[tuple[int, int, str]] = []
        for s in items:
            while stack and stack[-1][1] <= s[0]:
                stack.pop()
            if stack and s[1] > stack[-1][1]:
                problems.append(
                    f"tid {where[1]}: slice {s[2]!r} [{s[0]}, {s[1]}] straddles "
                    f"{stack[-1][2]!r} [{stack[-1][0]}, {stack[-1][1]}]"
                )
                continue
            stack.append(s)
    for key, evs in flows.items():
        phases = [e["ph"] for e in evs]
        if phases.count("s") != 1 or phases.count("f") != 1:
            problems.append(f"flow {key}: phases {phases}")
            continue
        ordered = sorted(evs, key=lambda e: e["ts"])
        if ordered[0]["ph"] != "s" or ordered[-1]["ph"] != "f":
            problems.append(f"flow {key}: start/finish out of time order")
        for e in evs:
            at = round(e["ts"] * 1000)
            inside = any(s <= at <= end for s, end, _ in slices.get((e["pid"], e["tid"]), []))
            if not inside:
                problems.append(f"flow {key}: {e['ph']} at {at} ns is in no slice of its thread")
    return problems
