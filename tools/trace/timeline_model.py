"""The timeline model: tracks, slices, instants, flows, counters and requests.

What tools/trace/timeline_builder.py produces from trace records and what
the Chrome exporter (tools/trace/chrome.py) and the matplotlib timeline
(tools/trace/timeline.py) draw.  Plain data; no threads.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

PROCESS_NAME = "qemu-monitor-emu"

# ---------------------------------------------------------------- the timeline model


@dataclass
class Track:
    """One horizontal row family: a thread, its locks, or one coroutine."""

    key: tuple[Any, ...]
    name: str
    kind: str  # "thread" | "locks" | "coroutine"
    thread_id: int
    #: filled by lane allocation: how many pseudo-threads the track needs
    lanes: int = 1


@dataclass
class Slice:
    """A span on a track: ``[start_ns, end_ns]`` relative to the first record."""

    track: tuple[Any, ...]
    name: str
    cat: str
    start_ns: int
    end_ns: int
    args: dict[str, Any] = field(default_factory=dict)
    lane: int = 0
    depth: int = 0

    @property
    def dur_ns(self) -> int:
        return self.end_ns - self.start_ns


@dataclass
class Instant:
    """A point event on a track."""

    track: tuple[Any, ...]
    name: str
    cat: str
    ts_ns: int
    args: dict[str, Any] = field(default_factory=dict)


@dataclass
class Flow:
    """A request's path: the slices of its steps, in time order."""

    id: int
    name: str
    steps: list[Slice]


@dataclass
class Counter:
    """One sample of a per-monitor counter (queue length, suspend count)."""

    name: str
    key: str
    ts_ns: int
    value: int
    thread_id: int


@dataclass
class Request:
    """What the timeline learned about one QMP request."""

    seq: int
    mon: str
    cmd: str
    qid: Any
    oob: bool = False
    reader: Optional[int] = None
    handle_ts: Optional[int] = None
    req_key: Any = None
    enqueue_ts: Optional[int] = None
    enqueue_end: Optional[int] = None
    queue_length: Optional[int] = None
    dispatcher: Optional[int] = None
    dequeue_track: Optional[tuple[Any, ...]] = None
    dequeue_ts: Optional[int] = None
    dequeue_end: Optional[int] = None
    cmd_thread: Optional[int] = None
    cmd_ts: Optional[int] = None
    bh: Optional[tuple[str, int, int]] = None
    respond_thread: Optional[int] = None
    respond_ts: Optional[int] = None
    respond_end: Optional[int] = None
    reply: Any = None
    error: Optional[str] = None
    abandoned_ts: Optional[int] = None


@dataclass
class Timeline:
    """Everything drawn: tracks in display order, slices, instants, flows, counters."""

    pid: int
    process_name: str
    t0_ns: int
    end_ns: int
    tracks: list[Track]
    slices: list[Slice]
    instants: list[Instant]
    flows: list[Flow]
    counters: list[Counter]
    requests: list[Request]
    main_thread_id: Optional[int]

    def track(self, key: tuple[Any, ...]) -> Track:
        for t in self.tracks:
            if t.key == key:
                return t
        raise KeyError(key)
