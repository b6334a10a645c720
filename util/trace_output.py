"""Trace output backends: the lossless record file and the file sinks of ``-trace file=``.

Why this exists apart from the exporter: the runtime only needs to *write*
what it traced; turning records into a drawable timeline is a tool's job
(tools/trace/).  This module is the in-memory backend on disk plus the two
file backends that ``-trace file=`` selects.

The record file (``.jsonl``) has a header line
``{"format": "qemu-monitor-emu-trace-records", "version": 1, "pid": N,
"clock": "monotonic_ns"}`` and one JSON object per record (``name``,
``thread``, ``thread_id``, ``ts_ns``, ``args``); arguments that are not JSON
values are stored as their (shortened) ``repr``.

``-trace file=NAME.json`` (Chrome/Perfetto trace-event JSON, written by
tools/trace/chrome.py when the run ends, imported only then) and
``-trace file=NAME.jsonl`` (the record file) select these backends
(:func:`trace_init_output`); any other name is the log backend.
Runs in any thread; the sinks are called under util.trace's backend lock.
"""

from __future__ import annotations

import atexit
import json
import math
import os
import threading
from collections.abc import Iterable
from typing import IO, Any, Optional, Union

from util.sched import SCHED
from util.trace import (
    TraceRecord,
    trace_init_file,
    trace_log_close,
    trace_sink_add,
    trace_sink_remove,
)

RECORD_FORMAT = "qemu-monitor-emu-trace-records"
RECORD_VERSION = 1
#: longest ``repr`` kept for an argument that is not a JSON value
REPR_MAX = 240

# ---------------------------------------------------------------- JSON-safe records


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` as a JSON value: containers copied, anything else its short repr.

    Copying at emission time also drops references to live objects (monitors,
    coroutines), so a long recording does not keep them alive.
    """
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else repr(value)
    if depth < 8 and isinstance(value, (list, tuple)):
        return [json_safe(v, depth + 1) for v in value]
    if depth < 8 and isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: json_safe(v, depth + 1) for k, v in value.items()}
    text = repr(value)
    return text if len(text) <= REPR_MAX else text[: REPR_MAX - 3] + "..."


def safe_record(rec: TraceRecord) -> TraceRecord:
    """A copy of ``rec`` whose arguments are JSON values."""
    return TraceRecord(rec.name, rec.thread, rec.thread_id, rec.ts_ns, json_safe(rec.args))


def record_to_json(rec: TraceRecord) -> dict[str, Any]:
    """One record-file line's object."""
    return {
        "name": rec.name,
        "thread": rec.thread,
        "thread_id": rec.thread_id,
        "ts_ns": rec.ts_ns,
        "args": json_safe(rec.args),
    }


def record_from_json(obj: dict[str, Any]) -> TraceRecord:
    """The record a record-file line describes."""
    return TraceRecord(
        str(obj["name"]),
        str(obj["thread"]),
        int(obj["thread_id"]),
        int(obj["ts_ns"]),
        dict(obj.get("args") or {}),
    )


def record_file_header(pid: Optional[int] = None) -> dict[str, Any]:
    return {
        "format": RECORD_FORMAT,
        "version": RECORD_VERSION,
        "pid": os.getpid() if pid is None else pid,
        "clock": "monotonic_ns",
    }


def write_record_file(records: Iterable[TraceRecord], path: str, pid: Optional[int] = None) -> None:
    """Save records (e.g. from ``trace_memory_stop()``) in the record format."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(json.dumps(record_file_header(pid)) + "\n")
        for rec in records:
            f.write(json.dumps(record_to_json(rec)) + "\n")


def read_record_file(path: str) -> tuple[list[TraceRecord], dict[str, Any]]:
    """Load a record file: (records, header).  A torn last line is ignored,
    so the file of a process that was killed still loads."""
    records: list[TraceRecord] = []
    with open(path, encoding="utf-8") as f:
        first = f.readline()
        header = json.loads(first) if first.strip() else {}
        if header.get("format") != RECORD_FORMAT:
            raise ValueError(f"{path}: not a {RECORD_FORMAT} file")
        if header.get("version") != RECORD_VERSION:
            raise ValueError(f"{path}: record format version {header.get('version')}")
        for line in f:
            if not line.strip():
                continue
            try:
                obj = json.loads(line)
            except json.JSONDecodeError:
                if not line.endswith("\n"):
                    break  # the writer was killed mid-line
                raise
            records.append(record_from_json(obj))
    return records, header


# ---------------------------------------------------------------- file backends


class RecordFileSink:
    """``-trace file=NAME.jsonl``: stream records, one line each, flushed.

    Flushed per record, like the log backend, so a process that dies keeps
    its trace and a tool can follow the file while the process runs.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: Optional[IO[str]] = open(path, "w", encoding="utf-8")
        self.file.write(json.dumps(record_file_header()) + "\n")
        self.file.flush()

    def __call__(self, rec: TraceRecord) -> None:
        if self.file is not None:
            self.file.write(json.dumps(record_to_json(rec)) + "\n")
            self.file.flush()

    def close(self) -> None:
        trace_sink_remove(self)
        f, self.file = self.file, None
        if f is not None:
            f.close()


class ChromeTraceSink:
    """``-trace file=NAME.json``: keep records, write the Chrome JSON on close.

    The format is one JSON document, so it can only be written once the run
    is over (``qemu_cleanup``, or at exit).  The file is created at once so a
    bad path fails at startup, as QEMU's ``-trace file=`` does.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.file: Optional[IO[str]] = open(path, "w", encoding="utf-8")
        self.records: list[TraceRecord] = []

    def __call__(self, rec: TraceRecord) -> None:
        self.records.append(safe_record(rec))

    def close(self) -> None:
        trace_sink_remove(self)
        f, self.file = self.file, None
        if f is not None:
            from tools.trace.chrome import write_chrome_trace

            try:
                # under the explorer the process id is not part of the run:
                # a fixed one keeps the same schedule's trace byte-identical
                write_chrome_trace(self.records, f, pid=1 if SCHED.active else None)
            finally:
                f.close()


FileSink = Union[RecordFileSink, ChromeTraceSink]


class _Outputs:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sinks: list[FileSink] = []
        self.atexit_registered = False


_outputs = _Outputs()


def trace_init_output(path: Optional[str]) -> None:
    """``-trace file=PATH``: pick the backend by the file name.

    ``*.json``: Chrome/Perfetto trace-event JSON, written when the run ends;
    ``*.jsonl``: the record file, streamed; anything else (or no file): the
    log backend (stderr without a file).
    """
    trace_output_close()
    if path is None or not path.endswith((".json", ".jsonl")):
        trace_init_file(path)
        return
    trace_log_close()
    sink: FileSink = ChromeTraceSink(path) if path.endswith(".json") else RecordFileSink(path)
    with _outputs.lock:
        _outputs.sinks.append(sink)
        if not _outputs.atexit_registered:
            atexit.register(trace_output_close)
            _outputs.atexit_registered = True
    trace_sink_add(sink)


def trace_output_close() -> None:
    """Detach and finish the file backends (writes the Chrome JSON); idempotent."""
    with _outputs.lock:
        sinks, _outputs.sinks = _outputs.sinks, []
    for sink in sinks:
        sink.close()
