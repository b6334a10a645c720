"""Trace events (trace/control.c, trace/simple.c and the log backend).

Each subsystem declares its events, named as in QEMU's ``trace-events``
files, with :func:`trace_event`.  A disabled event costs one attribute test;
enabling is by glob pattern (``-trace enable=monitor_*``).  Two backends:
``log`` writes a line to stderr (or a file) with pid, time and thread name, as
QEMU's log backend does; ``memory`` keeps :class:`TraceRecord` objects for
tests and tools (timelines, Perfetto export).  Other backends (the Chrome
trace-event JSON file and the record file of util/trace_output.py) attach as
*sinks*: callables handed every emitted record, in emission order, under the
backend lock.  Runs in any thread.
"""

from __future__ import annotations

import fnmatch
import os
import sys
import threading
import time
from typing import IO, Any, Callable, Optional

from util.sched import SCHED


class TraceRecord:
    """One emitted event: what, where (thread), when, with which arguments.

    Read-only by convention.  A plain class, not a frozen dataclass: that
    would compile its methods at import, which every start-up pays.
    """

    __slots__ = ("args", "name", "thread", "thread_id", "ts_ns")

    def __init__(
        self,
        name: str,
        thread: str,
        thread_id: int,
        ts_ns: int,
        args: Optional[dict[str, Any]] = None,
    ) -> None:
        self.name = name
        self.thread = thread
        self.thread_id = thread_id
        self.ts_ns = ts_ns
        self.args: dict[str, Any] = {} if args is None else args


class TraceEvent:
    """A named event with argument names; calling it emits when enabled."""

    __slots__ = ("argnames", "name", "state")

    def __init__(self, name: str, argnames: tuple[str, ...]) -> None:
        self.name = name
        self.argnames = argnames
        self.state = False

    def __call__(self, *values: Any) -> None:
        if self.state:
            _emit(self, values)

    def __repr__(self) -> str:
        return f"<TraceEvent {self.name} {'on' if self.state else 'off'}>"


class _Backends:
    """Where enabled events go; one instance for the process."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.log_file: Optional[IO[str]] = None
        self.memory: Optional[list[TraceRecord]] = None
        #: extra backends; called with each record while ``lock`` is held
        self.sinks: list[Callable[[TraceRecord], None]] = []


_events: dict[str, TraceEvent] = {}
_backends = _Backends()


def trace_event(name: str, *argnames: str) -> TraceEvent:
    """Declare (or fetch) the event ``name``; names are unique process-wide."""
    ev = _events.get(name)
    if ev is None:
        ev = _events[name] = TraceEvent(name, argnames)
    return ev


def trace_list_events() -> list[str]:
    """Every declared event name, sorted."""
    return sorted(_events)


def trace_enable_events(pattern: str, state: bool = True) -> int:
    """Set the state of every event matching the glob ``pattern``.

    A leading ``-`` disables instead, as in QEMU's ``-trace`` events file.
    Returns how many events matched.
    """
    if pattern.startswith("-"):
        pattern, state = pattern[1:], False
    matched = 0
    for name, ev in _events.items():
        if fnmatch.fnmatchcase(name, pattern):
            ev.state = state
            matched += 1
    return matched


def trace_disable_all() -> None:
    """Turn every event off."""
    for ev in _events.values():
        ev.state = False


def trace_init_file(path: Optional[str]) -> None:
    """Switch the log backend on, writing to ``path`` (None: stderr), as ``-trace file=``."""
    trace_log_close()
    with _backends.lock:
        _backends.log_file = open(path, "a", encoding="utf-8") if path else sys.stderr


def trace_log_close() -> None:
    """Switch the log backend off, closing its file."""
    with _backends.lock:
        out, _backends.log_file = _backends.log_file, None
    if out is not None and out is not sys.stderr:
        out.close()


def trace_memory_start() -> list[TraceRecord]:
    """Start recording into memory and return the (live) record list."""
    with _backends.lock:
        _backends.memory = []
        return _backends.memory


def trace_memory_stop() -> list[TraceRecord]:
    """Stop recording into memory and return what was recorded."""
    with _backends.lock:
        records, _backends.memory = _backends.memory or [], None
    return records


def trace_sink_add(sink: Callable[[TraceRecord], None]) -> None:
    """Hand every emitted record to ``sink`` too (file backends in util/trace_output.py).

    The sink runs under the backend lock, so records reach it one at a time in
    the order they were emitted; it must not emit trace events itself.
    """
    with _backends.lock:
        if sink not in _backends.sinks:
            _backends.sinks.append(sink)


def trace_sink_remove(sink: Callable[[TraceRecord], None]) -> None:
    """Stop calling ``sink``; once this returns it is never called again."""
    with _backends.lock:
        if sink in _backends.sinks:
            _backends.sinks.remove(sink)


def _emit(ev: TraceEvent, values: tuple[Any, ...]) -> None:
    thread = threading.current_thread()
    if SCHED.active:
        # under the explorer a record's time is its point count (1 us per
        # point) and its thread the actor's index: the same schedule gives
        # the same trace, byte for byte
        actor = SCHED.me()
        thread_id, ts_ns = actor.index + 1, SCHED.steps * 1000
    else:
        thread_id, ts_ns = threading.get_ident(), time.monotonic_ns()
    rec = TraceRecord(ev.name, thread.name, thread_id, ts_ns, dict(zip(ev.argnames, values)))
    with _backends.lock:
        if _backends.memory is not None:
            _backends.memory.append(rec)
        for sink in _backends.sinks:
            sink(rec)
        out = _backends.log_file
        if out is not None:
            now = time.time()
            argtext = " ".join(f"{k}={v!r}" for k, v in rec.args.items())
            out.write(
                f"{os.getpid()}@{int(now)}.{int(now * 1e6) % 1000000:06d}:{ev.name} "
                f"[{rec.thread}] {argtext}\n"
            )
            out.flush()
