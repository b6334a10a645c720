"""Replay trace records into a timeline: one row per thread, lock and coroutine.

How requests are followed without extra trace arguments: enqueue and
dequeue carry the QMPRequest's identity (``req``), and everything else
follows from QEMU's own structure.  ``handle_qmp_command`` is immediately
followed on the same thread by the enqueue or by
``monitor_qmp_cmd_out_of_band``; the dispatcher runs one request at a time,
so the ``monitor_qmp_cmd_in_band`` and the reply (``monitor_qmp_respond``
with ``return``/``error`` for the same monitor) after a dequeue on that
thread belong to it; an OOB reply comes from the thread that read it.

Slices on one track must nest for both viewers; locks are not always
released in LIFO order, so every track is split into *lanes* (extra
pseudo-threads named ``... (overlap N)``) wherever a slice would straddle
another.  Timestamps are microseconds (3 decimals: nanoseconds) from the
first record, on the monotonic clock.
Runs in any thread, on a finished list of records.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Optional

from tools.trace.timeline_model import (
    PROCESS_NAME,
    Counter,
    Flow,
    Instant,
    Request,
    Slice,
    Timeline,
    Track,
)
from util.trace import TraceRecord
from util.trace_output import json_safe

#: events drawn as slices (or not at all) rather than as instants
_STRUCTURAL = frozenset(
    {
        "qemu_mutex_lock",
        "qemu_mutex_locked",
        "qemu_mutex_unlock",
        "qemu_mutex_contended",
        "qemu_coroutine_enter",
        "qemu_coroutine_yield",
        "qemu_coroutine_terminate",
        "bql_handoff",
        "main_loop_wait",
        "handle_qmp_command",
        "monitor_qmp_in_band_enqueue",
        "monitor_qmp_in_band_dequeue",
        "monitor_qmp_cmd_in_band",
        "monitor_qmp_err_in_band",
        "monitor_qmp_cmd_out_of_band",
    }
)


@dataclass
class _ThreadState:
    """Per-thread bookkeeping while the records are replayed."""

    name: str
    first_ns: int
    co_stack: list[tuple[str, int]] = field(default_factory=list)
    held: list[tuple[str, int, str]] = field(default_factory=list)
    waiting: dict[str, list[Any]] = field(default_factory=dict)
    poll_start: Optional[int] = None
    pending: Optional[Request] = None
    oob: Optional[Request] = None
    dispatching: Optional[Request] = None
    awaiting_unlock: list[tuple[str, str, Request]] = field(default_factory=list)
    bh: Optional[tuple[str, int, Request]] = None
    timestamps: list[int] = field(default_factory=list)
    seen_main_loop: bool = False
    coroutines: list[str] = field(default_factory=list)


def _command_of(req: Any) -> tuple[str, Any]:
    """(command name, id) of a request as traced (a dict, or its repr in a log)."""
    if isinstance(req, dict):
        name = req.get("execute", req.get("exec-oob"))
        return (str(name) if name is not None else "(no command)"), req.get("id")
    if req is None:
        return "(parse error)", None
    return "(request)", None


def _reply_kind(text: Any) -> tuple[str, Any]:
    """What a ``monitor_qmp_respond`` sent: ("reply"|"event"|"greeting"|"other", parsed)."""
    try:
        msg = json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return "other", text
    if isinstance(msg, dict):
        if "return" in msg or "error" in msg:
            return "reply", msg
        if "event" in msg:
            return "event", msg
        if "QMP" in msg:
            return "greeting", msg
    return "other", msg


class _Builder:
    """Replays records in time order and collects the timeline."""

    def __init__(self, records: Sequence[TraceRecord]) -> None:
        order = sorted(range(len(records)), key=lambda i: (records[i].ts_ns, i))
        self.records = [records[i] for i in order]
        self.t0 = self.records[0].ts_ns if self.records else 0
        self.threads: dict[int, _ThreadState] = {}
        self.slices: list[Slice] = []
        self.instants: list[Instant] = []
        self.counters: list[Counter] = []
        self.requests: list[Request] = []
        self.queued: dict[Any, Request] = {}
        self.queue_len: dict[str, int] = {}
        self.suspend_cnt: dict[str, int] = {}

    # ------------------------------------------------------------ helpers

    def thread(self, rec: TraceRecord, ts: int) -> _ThreadState:
        st = self.threads.get(rec.thread_id)
        if st is None:
            st = self.threads[rec.thread_id] = _ThreadState(rec.thread, ts)
        return st

    def current_track(self, tid: int, st: _ThreadState) -> tuple[Any, ...]:
        """Where an instant emitted now is drawn: the running coroutine, else the thread."""
        if st.co_stack:
            return ("coroutine", tid, st.co_stack[-1][0])
        return ("thread", tid)

    def new_request(self, mon: str, cmd: str, qid: Any) -> Request:
        r = Request(len(self.requests) + 1, mon, cmd, qid)
        self.requests.append(r)
        return r

    def counter(self, name: str, mon: str, ts: int, value: int, tid: int) -> None:
        self.counters.append(Counter(name, mon, ts, value, tid))

    def next_ts(self, tid: int, ts: int) -> Optional[int]:
        """The first record of thread ``tid`` after ``ts`` (a fallback slice end)."""
        stamps = self.threads[tid].timestamps
        i = bisect.bisect_right(stamps, ts)
        return stamps[i] if i < len(stamps) else None

    # ------------------------------------------------------------ replay

    def run(self) -> None:
        for rec in self.records:
            ts = rec.ts_ns - self.t0
            self.thread(rec, ts).timestamps.append(ts)
        for rec in self.records:
            ts = rec.ts_ns - self.t0
            st = self.threads[rec.thread_id]
            handler = getattr(self, "on_" + rec.name, None)
            # a handler returns True when it drew the event itself
            consumed = handler(rec.thread_id, st, ts, rec.args) if handler is not None else False
            if rec.name not in _STRUCTURAL and not consumed:
                self.instant(rec, st, ts)

    def instant(self, rec: TraceRecord, st: _ThreadState, ts: int) -> None:
        args = json_safe(rec.args)
        name = rec.name
        cat = "trace"
        if rec.name == "monitor_suspend":
            name = "monitor_suspend" if (args.get("cnt") or 0) > 0 else "monitor_resume"
            cat = "monitor"
        elif rec.name == "aio_bh_run":
            name = f"BH {args.get('bh')}"
            cat = "aio"
        elif rec.name == "aio_co_schedule":
            name = f"aio_co_schedule {args.get('co')}"
            cat = "aio"
        elif rec.name == "monitor_protocol_event_emit":
            name = f"event {args.get('event')}"
            cat = "monitor"
        elif rec.name == "monitor_qmp_respond":
            kind, msg = _reply_kind(args.get("json"))
            if kind == "event" and isinstance(msg, dict):
                name = f"send event {msg.get('event')}"
            elif kind == "greeting":
                name = "send greeting"
            cat = "monitor"
        self.instants.append(Instant(self.current_track(rec.thread_id, st), name, cat, ts, args))

    # locks

    def on_qemu_mutex_lock(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        st.waiting[str(a.get("mutex"))] = [ts, False, None]

    def on_qemu_mutex_contended(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        w = st.waiting.get(str(a.get("mutex")))
        if w is not None:
            w[1], w[2] = True, a.get("owner")

    def on_qemu_mutex_locked(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        mutex = str(a.get("mutex"))
        w = st.waiting.pop(mutex, None)
        if w is not None and w[1]:
            self.slices.append(
                Slice(("locks", tid), f"wait {mutex}", "lock_wait", w[0], ts, {"owner": w[2]})
            )
        site = f"{os.path.basename(str(a.get('file', '?')))}:{a.get('line', '?')}"
        st.held.append((mutex, ts, site))

    def on_qemu_mutex_unlock(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        mutex = str(a.get("mutex"))
        for i in range(len(st.held) - 1, -1, -1):
            if st.held[i][0] == mutex:
                _, start, site = st.held.pop(i)
                cat = "bql" if mutex == "BQL" else "lock"
                self.slices.append(Slice(("locks", tid), mutex, cat, start, ts, {"site": site}))
                break
        for i, (kind, m, r) in enumerate(st.awaiting_unlock):
            # a reply queued for the responder BH (-x-era 2.12) is done when
            # the queue's lock is dropped: that thread never takes mon_lock
            if m == mutex or (kind == "respond" and mutex == "qmp_queue_lock"):
                del st.awaiting_unlock[i]
                if kind == "enqueue":
                    r.enqueue_end = ts
                elif kind == "dequeue":
                    r.dequeue_end = ts
                else:
                    r.respond_end = ts
                break

    # coroutines

    def on_qemu_coroutine_enter(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        self.end_bh(st, ts)
        co = str(a.get("to"))
        st.co_stack.append((co, ts))
        if co not in st.coroutines:
            st.coroutines.append(co)

    def _co_leave(self, tid: int, st: _ThreadState, co: str, ts: int, how: str) -> None:
        for i in range(len(st.co_stack) - 1, -1, -1):
            if st.co_stack[i][0] == co:
                name, start = st.co_stack.pop(i)
                self.slices.append(
                    Slice(("coroutine", tid, name), name, "coroutine", start, ts, {"left_by": how})
                )
                return

    def on_qemu_coroutine_yield(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        self._co_leave(tid, st, str(a.get("from_")), ts, "yield")

    def on_qemu_coroutine_terminate(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        self._co_leave(tid, st, str(a.get("co")), ts, "terminate")

    # main loop

    def on_main_loop_wait(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        st.seen_main_loop = True

    def on_bql_handoff(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        st.seen_main_loop = True
        if a.get("released"):
            st.poll_start = ts
        elif st.poll_start is not None:
            self.slices.append(
                Slice(("thread", tid), "poll (BQL released)", "main_loop", st.poll_start, ts)
            )
            st.poll_start = None

    def on_aio_bh_run(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> bool:
        bh = str(a.get("bh", ""))
        if bh.startswith("qmp_dispatch:") and st.dispatching is not None:
            # do_qmp_dispatch_bh: the ordinary command runs here, then wakes
            # the dispatcher (aio_co_schedule / enter): drawn as a slice
            st.bh = (bh, ts, st.dispatching)
            return True
        return False

    def end_bh(self, st: _ThreadState, ts: int) -> None:
        if st.bh is not None:
            bh, start, r = st.bh
            r.bh = (bh, start, ts)
            st.bh = None

    def on_aio_co_schedule(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        self.end_bh(st, ts)

    # requests

    def on_handle_qmp_command(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        cmd, qid = _command_of(a.get("req"))
        r = self.new_request(str(a.get("mon")), cmd, qid)
        r.reader, r.handle_ts = tid, ts
        st.pending = r

    def on_monitor_qmp_cmd_out_of_band(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        r = st.pending or self.new_request("?", "(out-of-band)", a.get("id"))
        st.pending = None
        r.oob, r.cmd_thread, r.cmd_ts = True, tid, ts
        st.oob = r

    def on_monitor_qmp_in_band_enqueue(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        mon = str(a.get("mon"))
        r = st.pending if st.pending is not None and st.pending.mon == mon else None
        if r is None:
            r = self.new_request(mon, "(request)", None)
            r.reader = tid
        st.pending = None
        r.req_key = a.get("req")
        r.enqueue_ts = ts
        qlen = a.get("queue_length")
        r.queue_length = qlen if isinstance(qlen, int) else None
        self.queued[r.req_key] = r
        st.awaiting_unlock.append(("enqueue", "qmp_queue_lock", r))
        if isinstance(qlen, int):
            self.queue_len[mon] = qlen + 1
            self.counter("qmp_requests", mon, ts, qlen + 1, tid)

    def on_monitor_qmp_in_band_dequeue(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        if st.dispatching is not None:
            # the previous request got no reply (its client went away)
            st.dispatching.abandoned_ts = ts
        r = self.queued.pop(a.get("req"), None)
        if r is None:
            r = self.new_request("?", "(request)", None)
        r.dispatcher, r.dequeue_ts = tid, ts
        r.dequeue_track = self.current_track(tid, st)
        st.dispatching = r
        st.awaiting_unlock.append(("dequeue", "qmp_queue_lock", r))
        qlen = a.get("queue_length")
        if isinstance(qlen, int) and r.mon != "?":
            self.queue_len[r.mon] = qlen
            self.counter("qmp_requests", r.mon, ts, qlen, tid)

    def on_monitor_qmp_cmd_in_band(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        r = st.dispatching
        if r is None:
            r = st.dispatching = self.new_request("?", "(in-band)", a.get("id"))
        r.cmd_thread, r.cmd_ts = tid, ts

    def on_monitor_qmp_err_in_band(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> None:
        self.on_monitor_qmp_cmd_in_band(tid, st, ts, {})
        assert st.dispatching is not None
        st.dispatching.error = str(a.get("desc"))

    def on_monitor_qmp_respond(
        self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]
    ) -> bool:
        kind, msg = _reply_kind(a.get("json"))
        if kind != "reply":
            return False
        mon = str(a.get("mon"))
        r: Optional[Request] = None
        if st.oob is not None and st.oob.mon in (mon, "?"):
            r, st.oob = st.oob, None
        elif st.dispatching is not None and st.dispatching.mon in (mon, "?"):
            r, st.dispatching = st.dispatching, None
            self.end_bh(st, ts)
        if r is None:
            return False
        r.respond_thread, r.respond_ts, r.reply = tid, ts, msg
        st.awaiting_unlock.append(("respond", "mon_lock", r))
        return True  # drawn as a slice of its request

    def on_monitor_suspend(self, tid: int, st: _ThreadState, ts: int, a: dict[str, Any]) -> None:
        mon, cnt = str(a.get("mon")), a.get("cnt")
        if isinstance(cnt, int):
            value = self.suspend_cnt.get(mon, 0) + cnt
            self.suspend_cnt[mon] = value
            self.counter("suspend_cnt", mon, ts, value, tid)

    # ------------------------------------------------------------ finishing

    def finish(self) -> tuple[int, list[Flow]]:
        end = max((r.ts_ns for r in self.records), default=self.t0) - self.t0
        for tid, st in self.threads.items():
            for name, start in st.co_stack:
                self.slices.append(
                    Slice(("coroutine", tid, name), name, "coroutine", start, end, _UNFINISHED)
                )
            for mutex, start, site in st.held:
                cat = "bql" if mutex == "BQL" else "lock"
                self.slices.append(
                    Slice(("locks", tid), mutex, cat, start, end, {"site": site, **_UNFINISHED})
                )
            if st.poll_start is not None:
                self.slices.append(
                    Slice(("thread", tid), "poll (BQL released)", "main_loop", st.poll_start, end)
                )
            self.end_bh(st, end)
        flows = [f for r in self.requests if (f := self.request_slices(r, end)) is not None]
        return end, flows

    def _end_or_next(self, tid: Optional[int], ts: int, end: Optional[int], last: int) -> int:
        """``end`` if known, else the thread's next record, else the end of the trace."""
        if end is not None:
            return end
        nxt = self.next_ts(tid, ts) if tid is not None else None
        return nxt if nxt is not None else max(last, ts)

    def request_slices(self, r: Request, last: int) -> Optional[Flow]:
        """Slices for the steps of ``r`` (outer slices end after inner ones) and its flow."""
        label = r.cmd if r.qid is None else f"{r.cmd} id={json.dumps(r.qid)}"
        common = {"request": r.seq, "mon": r.mon, "id": json_safe(r.qid)}
        steps: list[Slice] = []
        handle: Optional[Slice] = None
        if r.handle_ts is not None and r.reader is not None:
            handle = Slice(
                ("thread", r.reader),
                f"handle_qmp_command {r.cmd}",
                "qmp",
                r.handle_ts,
                r.handle_ts,
                dict(common),
            )
            self.slices.append(handle)
            steps.append(handle)
        respond: Optional[Slice] = None
        if r.respond_ts is not None and r.respond_thread is not None:
            rend = self._end_or_next(r.respond_thread, r.respond_ts, r.respond_end, last)
            respond = Slice(
                ("thread", r.respond_thread),
                "monitor_qmp_respond",
                "qmp",
                r.respond_ts,
                rend,
                {**common, "reply": json_safe(r.reply)},
            )
        if r.oob:
            if r.cmd_ts is not None and r.cmd_thread is not None:
                cend = (
                    respond.end_ns + 1
                    if respond is not None
                    else (self._end_or_next(r.cmd_thread, r.cmd_ts, None, last))
                )
                cmd = Slice(
                    ("thread", r.cmd_thread),
                    f"{r.cmd} (out-of-band)",
                    "qmp,oob",
                    r.cmd_ts,
                    cend,
                    dict(common),
                )
                self.slices.append(cmd)
                steps.append(cmd)
                if handle is not None and handle.track == cmd.track:
                    handle.end_ns = max(handle.end_ns, cmd.end_ns + 1)
        else:
            if r.enqueue_ts is not None and r.reader is not None:
                eend = self._end_or_next(r.reader, r.enqueue_ts, r.enqueue_end, last)
                enq = Slice(
                    ("thread", r.reader),
                    "monitor_qmp_in_band_enqueue",
                    "qmp",
                    r.enqueue_ts,
                    eend,
                    {**common, "queue_length": r.queue_length},
                )
                self.slices.append(enq)
                steps.append(enq)
                if handle is not None:
                    handle.end_ns = max(handle.end_ns, enq.end_ns + 1)
            if r.dequeue_ts is not None and r.dequeue_track is not None:
                dend = self._end_or_next(r.dispatcher, r.dequeue_ts, r.dequeue_end, last)
                deq = Slice(
                    r.dequeue_track,
                    "monitor_qmp_in_band_dequeue",
                    "qmp",
                    r.dequeue_ts,
                    dend,
                    dict(common),
                )
                self.slices.append(deq)
                steps.append(deq)
            if r.cmd_ts is not None and r.cmd_thread is not None:
                name = f"{r.cmd} (in-band)" if r.error is None else "error (in-band)"
                args = dict(common) if r.error is None else {**common, "error": r.error}
                if respond is not None:
                    cend = respond.end_ns + 1
                else:
                    # never answered: dropped, or still running when the trace ends
                    cend = r.abandoned_ts if r.abandoned_ts is not None else last
                    args["unanswered"] = True
                cmd = Slice(("thread", r.cmd_thread), name, "qmp", r.cmd_ts, cend, args)
                self.slices.append(cmd)
                steps.append(cmd)
                if r.bh is not None:
                    bh, start, bend = r.bh
                    self.slices.append(
                        Slice(
                            ("thread", r.cmd_thread),
                            f"BH {bh}",
                            "bh",
                            start,
                            min(bend, cmd.end_ns),
                            dict(common),
                        )
                    )
        if respond is not None:
            self.slices.append(respond)
            steps.append(respond)
        if handle is not None and handle.end_ns == handle.start_ns:
            handle.end_ns = self._end_or_next(r.reader, handle.start_ns, None, last)
        if len(steps) < 2:
            return None
        return Flow(r.seq, f"QMP {label}", steps)


_UNFINISHED = {"unfinished": True}


def _allocate_lanes(slices: list[Slice]) -> dict[tuple[Any, ...], int]:
    """Give every slice a lane of its track where it nests; return lanes per track.

    A slice fits a lane when it starts after everything open there has ended,
    or lies inside the innermost open slice.  Overlapping lock spans that are
    not LIFO therefore go to a second lane instead of breaking the nesting
    both viewers require.
    """
    by_track: dict[tuple[Any, ...], list[Slice]] = {}
    for s in slices:
        by_track.setdefault(s.track, []).append(s)
    lanes_per_track: dict[tuple[Any, ...], int] = {}
    for key, items in by_track.items():
        items.sort(key=lambda s: (s.start_ns, -s.end_ns))
        lanes: list[list[int]] = []
        for s in items:
            for li, stack in enumerate(lanes):
                while stack and stack[-1] <= s.start_ns:
                    stack.pop()
                if not stack or s.end_ns <= stack[-1]:
                    s.lane, s.depth = li, len(stack)
                    stack.append(s.end_ns)
                    break
            else:
                s.lane, s.depth = len(lanes), 0
                lanes.append([s.end_ns])
        lanes_per_track[key] = max(1, len(lanes))
    return lanes_per_track


def build_timeline(
    records: Sequence[TraceRecord],
    pid: Optional[int] = None,
    process_name: str = PROCESS_NAME,
) -> Timeline:
    """Turn records (any order, any subset of events) into the drawable timeline."""
    b = _Builder(records)
    b.run()
    end, flows = b.finish()
    lanes = _allocate_lanes(b.slices)

    # thread order: the main loop first, then the monitor I/O thread, then the rest
    def thread_rank(item: tuple[int, _ThreadState]) -> tuple[int, int]:
        st = item[1]
        if st.seen_main_loop:
            return (0, st.first_ns)
        if st.name.startswith("IO "):
            return (1, st.first_ns)
        return (2, st.first_ns)

    used = {s.track for s in b.slices} | {i.track for i in b.instants}
    tracks: list[Track] = []
    main_tid: Optional[int] = None
    for tid, st in sorted(b.threads.items(), key=thread_rank):
        label = st.name
        if st.seen_main_loop:
            main_tid = main_tid if main_tid is not None else tid
            label = f"main loop [{st.name}]"
        candidates = [
            Track(("thread", tid), label, "thread", tid),
            Track(("locks", tid), f"{label}: locks held", "locks", tid),
        ] + [
            Track(("coroutine", tid, co), f"{label}: coroutine {co}", "coroutine", tid)
            for co in st.coroutines
        ]
        for t in candidates:
            if t.key in used or t.kind == "thread":
                t.lanes = lanes.get(t.key, 1)
                tracks.append(t)
    return Timeline(
        pid if pid is not None else os.getpid(),
        process_name,
        b.t0,
        end,
        tracks,
        b.slices,
        b.instants,
        flows,
        b.counters,
        b.requests,
        main_tid,
    )
