"""The Chrome/Perfetto export: valid, structurally right, faithful to the run.

Structure is checked twice: by :func:`tools.trace.chrome.check_chrome_trace`
(which the tools use) and, for the essentials, by the independent checks
here, so a bug in the checker cannot hide a bug in the exporter.
"""

from __future__ import annotations

import json
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

from tests.tools.conftest import load_json
from tools.trace import to_chrome
from tools.trace.chrome import check_chrome_trace, chrome_trace
from tools.trace.records import load_records, parse_log, parse_log_args
from tools.trace.scenarios import emulator
from tools.trace.timeline_builder import build_timeline
from util.coroutine import qemu_coroutine_create, qemu_coroutine_enter, qemu_coroutine_yield
from util.main_loop import MainLoop
from util.thread import QemuMutex
from util.trace import (
    TraceRecord,
    trace_enable_events,
    trace_event,
    trace_init_file,
    trace_log_close,
    trace_memory_start,
    trace_memory_stop,
)
from util.trace_output import json_safe, read_record_file, write_record_file

# ---------------------------------------------------------------- independent checks


def thread_names(doc: dict[str, Any]) -> dict[int, str]:
    return {
        e["tid"]: e["args"]["name"]
        for e in doc["traceEvents"]
        if e["ph"] == "M" and e["name"] == "thread_name"
    }


def tid_named(doc: dict[str, Any], name: str) -> int:
    tids = [tid for tid, n in thread_names(doc).items() if n == name]
    assert len(tids) == 1, (name, thread_names(doc))
    return tids[0]


def assert_well_formed(doc: dict[str, Any]) -> None:
    """Object format, named tracks, X slices nesting per thread, flows paired."""
    assert set(doc) >= {"traceEvents", "displayTimeUnit"}
    assert doc["displayTimeUnit"] == "ms"
    json.dumps(doc)  # serialisable as is
    names = thread_names(doc)
    assert any(e["ph"] == "M" and e["name"] == "process_name" for e in doc["traceEvents"])
    per_tid: dict[int, list[tuple[int, int]]] = defaultdict(list)
    flows: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for e in doc["traceEvents"]:
        assert e["ph"] in ("M", "X", "i", "s", "t", "f", "C"), e
        if e["ph"] == "M":
            continue
        assert isinstance(e["ts"], (int, float)) and e["ts"] >= 0
        if e["ph"] != "C":
            assert e["tid"] in names, f"unnamed track {e['tid']}"
        if e["ph"] == "X":
            start = round(e["ts"] * 1000)
            per_tid[e["tid"]].append((start, start + round(e["dur"] * 1000)))
        elif e["ph"] == "i":
            assert e["s"] in ("t", "p", "g")
        elif e["ph"] in ("s", "t", "f"):
            flows[(e["cat"], e["name"], e["id"])].append(e)
    for tid, spans in per_tid.items():
        spans.sort(key=lambda s: (s[0], -s[1]))
        open_: list[tuple[int, int]] = []
        for a, b in spans:
            while open_ and open_[-1][1] <= a:
                open_.pop()
            assert not open_ or b <= open_[-1][1], f"{names[tid]}: {(a, b)} straddles {open_[-1]}"
            open_.append((a, b))
    for key, evs in flows.items():
        evs.sort(key=lambda e: e["ts"])
        phases = [e["ph"] for e in evs]
        assert phases[0] == "s" and phases[-1] == "f", (key, phases)
        assert set(phases[1:-1]) <= {"t"}, (key, phases)
        assert evs[-1].get("bp") == "e"
        for e in evs:  # every flow event inside a slice of its thread
            at = round(e["ts"] * 1000)
            assert any(a <= at <= b for a, b in per_tid[e["tid"]]), (key, e)


def slices(doc: dict[str, Any], name: str) -> list[dict[str, Any]]:
    return [e for e in doc["traceEvents"] if e["ph"] == "X" and e["name"] == name]


def flow_of(doc: dict[str, Any], label: str) -> list[dict[str, Any]]:
    evs = [e for e in doc["traceEvents"] if e["ph"] in "stf" and e.get("name") == label]
    return sorted(evs, key=lambda e: e["ts"])


def enclosing(doc: dict[str, Any], ev: dict[str, Any]) -> dict[str, Any]:
    """The innermost X slice of ``ev``'s thread containing its timestamp."""
    at = ev["ts"]
    found = [
        s
        for s in doc["traceEvents"]
        if s["ph"] == "X" and s["tid"] == ev["tid"] and s["ts"] <= at <= s["ts"] + s["dur"]
    ]
    assert found, ev
    return min(found, key=lambda s: s["dur"])


# ---------------------------------------------------------------- real runs


@pytest.mark.parametrize("name", ["inband", "oob", "backpressure", "selfremove"])
def test_scenario_json_is_valid(run: Any, name: str) -> None:
    doc = load_json(run(name).chrome_path)
    assert check_chrome_trace(doc) == []
    assert_well_formed(doc)
    names = set(thread_names(doc).values())
    assert {
        "main loop [MainThread]",
        "main loop [MainThread]: locks held",
        "main loop [MainThread]: coroutine qmp_dispatcher_co",
        "IO mon_iothread",
        "IO mon_iothread: locks held",
    } <= names
    # the main loop is the process's main thread (tid == pid) and comes first
    pid = doc["traceEvents"][0]["pid"]
    assert tid_named(doc, "main loop [MainThread]") == pid


def test_inband_request_flows_across_threads(run: Any) -> None:
    """read (I/O thread) -> enqueue -> dequeue (dispatcher) -> command -> reply (main loop)."""
    doc = load_json(run("inband").chrome_path)
    flow = flow_of(doc, 'QMP query-status id="life"')
    assert [e["ph"] for e in flow] == ["s", "t", "t", "t", "f"]
    steps = [enclosing(doc, e) for e in flow]
    assert [s["name"] for s in steps] == [
        "handle_qmp_command query-status",
        "monitor_qmp_in_band_enqueue",
        "monitor_qmp_in_band_dequeue",
        "query-status (in-band)",
        "monitor_qmp_respond",
    ]
    io = tid_named(doc, "IO mon_iothread")
    main = tid_named(doc, "main loop [MainThread]")
    co = tid_named(doc, "main loop [MainThread]: coroutine qmp_dispatcher_co")
    assert [s["tid"] for s in steps] == [io, io, co, main, main]
    assert [e["ts"] for e in flow] == sorted(e["ts"] for e in flow)
    cmd = steps[3]
    # the command ran in a bottom half of the main loop, inside the command's slice
    (bh,) = [s for s in slices(doc, "BH qmp_dispatch:query-status") if s["tid"] == main]
    assert cmd["ts"] <= bh["ts"] and bh["ts"] + bh["dur"] <= cmd["ts"] + cmd["dur"]
    assert steps[4]["args"]["reply"]["id"] == "life"


def test_inband_command_runs_under_the_bql(run: Any) -> None:
    doc = load_json(run("inband").chrome_path)
    main_locks = tid_named(doc, "main loop [MainThread]: locks held")
    (cmd,) = slices(doc, "query-status (in-band)")
    bql = [s for s in slices(doc, "BQL") if s["tid"] == main_locks]
    assert any(b["ts"] <= cmd["ts"] and cmd["ts"] + cmd["dur"] <= b["ts"] + b["dur"] for b in bql)
    io_locks = tid_named(doc, "IO mon_iothread: locks held")
    assert not [s for s in slices(doc, "BQL") if s["tid"] == io_locks]  # never on the I/O thread


def test_oob_command_overtakes_the_blocked_main_loop(run: Any) -> None:
    doc = load_json(run("oob").chrome_path)
    io = tid_named(doc, "IO mon_iothread")
    main = tid_named(doc, "main loop [MainThread]")
    (blocked,) = [s for s in slices(doc, "x-oob-test (in-band)") if s["tid"] == main]
    (oob,) = [s for s in slices(doc, "migrate-pause (out-of-band)") if s["tid"] == io]
    assert blocked["ts"] < oob["ts"] and oob["ts"] + oob["dur"] < blocked["ts"] + blocked["dur"]
    flow = flow_of(doc, 'QMP migrate-pause id="oob-pause"')
    assert [e["ph"] for e in flow] == ["s", "t", "f"]
    assert {e["tid"] for e in flow} == {io}  # read, run and answered by the I/O thread
    # the release (x-oob-test lock: false) is out-of-band too
    assert [s for s in slices(doc, "x-oob-test (out-of-band)") if s["tid"] == io]


def test_backpressure_suspends_at_eight(run: Any) -> None:
    res = run("backpressure")
    queue = [
        c.value for c in res.timeline.counters if c.name == "qmp_requests" and c.key == "m0mon"
    ]
    assert max(queue) == 8
    (req0,) = [r for r in res.timeline.requests if r.qid == 0 and r.mon == "m0mon"]
    assert req0.handle_ts is not None
    # (qmp_capabilities suspended too: before OOB is on, every request does)
    suspends = [
        i
        for i in res.timeline.instants
        if i.name == "monitor_suspend" and i.ts_ns > req0.handle_ts and i.args["mon"] == "m0mon"
    ]
    resumes = [
        i
        for i in res.timeline.instants
        if i.name == "monitor_resume" and i.ts_ns > req0.handle_ts and i.args["mon"] == "m0mon"
    ]
    assert suspends and len(resumes) == len(suspends)
    first = suspends[0].ts_ns
    # handle_qmp_command suspends when the queue holds 7, then appends the 8th
    level = [
        c.value
        for c in res.timeline.counters
        if c.name == "qmp_requests" and c.key == "m0mon" and c.ts_ns >= first
    ]
    assert level[0] == 8
    doc = load_json(res.chrome_path)
    counters = {e["name"] for e in doc["traceEvents"] if e["ph"] == "C"}
    assert {"qmp_requests m0mon", "suspend_cnt m0mon"} <= counters


def test_self_removal_replies_before_closing(run: Any) -> None:
    res = run("selfremove")
    (bye,) = [r for r in res.timeline.requests if r.qid == "bye"]
    assert bye.respond_ts is not None and bye.reply == {"return": {}, "id": "bye"}
    closed = [
        i.ts_ns
        for i in res.timeline.instants
        if i.name == "chr_be_event"
        and i.args.get("label") == "selfchr"
        and i.args.get("event") == "CHR_EVENT_CLOSED"
    ]
    assert closed and bye.respond_ts < closed[0]


def test_trace_option_writes_chrome_json(tmp_path: Path) -> None:
    """``-trace enable=*,file=NAME.json``: the emulator itself writes the JSON at exit."""
    out = tmp_path / "run.json"
    with emulator(str(tmp_path), "cli", trace_file=str(out)) as r:
        assert "return" in r.main.execute("query-name", qid="q1")
    doc = load_json(str(out))
    assert check_chrome_trace(doc) == []
    assert_well_formed(doc)
    assert [e["ph"] for e in flow_of(doc, 'QMP query-name id="q1"')] == ["s", "t", "t", "t", "f"]


def test_log_backend_output_converts(tmp_path: Path) -> None:
    """``-trace file=NAME.log`` (log lines) -> tools.trace.to_chrome -> valid JSON."""
    log = tmp_path / "run.log"
    with emulator(str(tmp_path), "log", trace_file=str(log)) as r:
        assert "return" in r.main.execute("query-name", qid="q2")
    out = tmp_path / "converted.json"
    assert to_chrome.main([str(log), "-o", str(out), "--check"]) == 0
    doc = load_json(str(out))
    assert_well_formed(doc)
    assert [e["ph"] for e in flow_of(doc, 'QMP query-name id="q2"')] == ["s", "t", "t", "t", "f"]


# ---------------------------------------------------------------- in-process


def test_memory_records_of_coroutines_and_unordered_unlocks(main_loop: MainLoop) -> None:
    """In-process recording: a coroutine gets its track; a non-LIFO unlock gets a lane."""
    a, b = QemuMutex("trace_test_a"), QemuMutex("trace_test_b")

    def body(_: Any) -> None:
        a.lock()
        b.lock()
        a.unlock()  # not the innermost: the spans overlap without nesting
        b.unlock()
        qemu_coroutine_yield()

    trace_enable_events("qemu_*")
    trace_memory_start()
    co = qemu_coroutine_create(body, None, "trace_test_co")
    qemu_coroutine_enter(co)
    qemu_coroutine_enter(co)  # runs to its end
    records = trace_memory_stop()
    tl = build_timeline(records)
    tid = threading.get_ident()
    keys = {t.key: t for t in tl.tracks}
    assert ("coroutine", tid, "trace_test_co") in keys
    assert keys[("locks", tid)].lanes == 2
    runs = [s for s in tl.slices if s.track == ("coroutine", tid, "trace_test_co")]
    assert [s.args.get("left_by") for s in runs] == ["yield", "terminate"]
    doc = chrome_trace(tl)
    assert check_chrome_trace(doc) == []
    assert_well_formed(doc)


def test_log_lines_parse_back_to_the_records(tmp_path: Path, main_loop: MainLoop) -> None:
    """The log backend and the memory backend record the same events and arguments."""
    ev = trace_event("trace_test_log_event", "mon", "req", "obj", "n")
    log = tmp_path / "t.log"
    trace_init_file(str(log))
    trace_enable_events("trace_test_log_event")
    trace_memory_start()
    ev("m 0", {"execute": "query-status", "id": "a b=c"}, object(), 3)
    ev("x=y", None, main_loop, -1)
    records = trace_memory_stop()
    trace_log_close()
    parsed, pid = parse_log(log.read_text().splitlines())
    assert pid is not None and len(parsed) == 2
    for mine, theirs in zip(records, parsed):
        assert theirs.name == mine.name and theirs.thread == mine.thread
        assert theirs.args["mon"] == mine.args["mon"]
        assert theirs.args["req"] == mine.args["req"]
        assert theirs.args["n"] == mine.args["n"]
        assert theirs.args["obj"] == repr(mine.args["obj"])
    assert parsed[0].ts_ns < parsed[1].ts_ns


def test_parse_log_args_keeps_reprs_whole() -> None:
    args = parse_log_args("a=<Obj x=1 y=[2]> b='p q=r' c={'k': (1, 2)} d=Thing(s='t u=v', n=1)")
    assert args == {
        "a": "<Obj x=1 y=[2]>",
        "b": "p q=r",
        "c": {"k": (1, 2)},
        "d": "Thing(s='t u=v', n=1)",
    }


def test_record_file_round_trip(tmp_path: Path) -> None:
    recs = [
        TraceRecord("e1", "MainThread", 7, 100, {"x": 1, "o": object(), "d": {"k": [1, "s"]}}),
        TraceRecord("e2", "IO mon_iothread", 8, 250, {"f": float("nan"), "t": (1, 2)}),
    ]
    path = tmp_path / "r.jsonl"
    write_record_file(recs, str(path), pid=42)
    back, header = read_record_file(str(path))
    assert header["pid"] == 42
    assert [(r.name, r.thread, r.thread_id, r.ts_ns) for r in back] == [
        ("e1", "MainThread", 7, 100),
        ("e2", "IO mon_iothread", 8, 250),
    ]
    assert back[0].args["d"] == {"k": [1, "s"]} and back[0].args["o"].startswith("<object")
    assert back[1].args == {"f": "nan", "t": [1, 2]}
    # a writer killed mid-line leaves a torn last line: still loads
    with open(path, "a", encoding="utf-8") as f:
        f.write('{"name": "e3", "thr')
    assert len(read_record_file(str(path))[0]) == 2
    assert load_records(str(path))[1] == 42


def test_json_safe_bounds_reprs() -> None:
    class Big:
        def __repr__(self) -> str:
            return "x" * 10_000

    assert len(json_safe(Big())) < 300
    assert json_safe({"a": (1, None, True)}) == {"a": [1, None, True]}


def test_checker_reports_broken_documents() -> None:
    meta = [
        {"name": "process_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "p"}},
        {"name": "thread_name", "ph": "M", "pid": 1, "tid": 1, "args": {"name": "t"}},
    ]
    straddle = [
        *meta,
        {"name": "a", "ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"name": "b", "ph": "X", "pid": 1, "tid": 1, "ts": 5, "dur": 10},
    ]
    assert any("straddles" in p for p in check_chrome_trace({"traceEvents": straddle}))
    unpaired = [
        *meta,
        {"name": "a", "ph": "X", "pid": 1, "tid": 1, "ts": 0, "dur": 10},
        {"name": "f", "cat": "c", "ph": "s", "id": 1, "pid": 1, "tid": 1, "ts": 1},
    ]
    assert any("phases" in p for p in check_chrome_trace({"traceEvents": unpaired}))
    unnamed = [*meta, {"name": "a", "ph": "X", "pid": 1, "tid": 2, "ts": 0, "dur": 1}]
    assert any("thread_name" in p for p in check_chrome_trace({"traceEvents": unnamed}))
    assert check_chrome_trace({"nope": []}) != []


def test_empty_and_partial_traces_still_export() -> None:
    assert check_chrome_trace(chrome_trace([])) == []
    # only the monitor's events, no locks or coroutines: still linked and valid
    recs = [
        TraceRecord(
            "handle_qmp_command", "IO", 2, 1000, {"mon": "m", "req": {"execute": "q", "id": 1}}
        ),
        TraceRecord(
            "monitor_qmp_in_band_enqueue", "IO", 2, 2000, {"req": 9, "mon": "m", "queue_length": 0}
        ),
        TraceRecord("monitor_qmp_in_band_dequeue", "Main", 1, 5000, {"req": 9, "queue_length": 0}),
        TraceRecord("monitor_qmp_cmd_in_band", "Main", 1, 6000, {"id": "1"}),
        TraceRecord(
            "monitor_qmp_respond", "Main", 1, 9000, {"mon": "m", "json": '{"return": {}, "id": 1}'}
        ),
        TraceRecord("monitor_qmp_respond", "Main", 1, 9500, {"mon": "m", "json": '{"event": "X"}'}),
    ]
    doc = chrome_trace(recs, pid=10)
    assert check_chrome_trace(doc) == []
    assert [e["ph"] for e in flow_of(doc, "QMP q id=1")] == ["s", "t", "t", "t", "f"]
    assert any(e["name"] == "send event X" for e in doc["traceEvents"])
