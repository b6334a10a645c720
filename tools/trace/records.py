"""Load a recorded trace, whatever backend wrote it, as TraceRecord objects.

Three inputs, told apart by their first line:

* a record file (``-trace file=NAME.jsonl``, or :func:`util.trace_output.write_record_file`
  on ``trace_memory_stop()``'s list): lossless, nanoseconds, thread ids;
* the log backend's text (``-trace file=NAME.log``, or stderr):
  ``PID@SECONDS.MICROS:EVENT [THREAD] arg=repr arg=repr``.  Lines that are not
  trace lines (error messages on stderr) are skipped;
* a pickle of a ``list[TraceRecord]`` (``.pickle``/``.pkl``), for scripts that
  already hold records in memory.  Only load pickles you made yourself.

Log lines carry microseconds and a thread *name*; ties within a microsecond
keep file order (each later line is placed one nanosecond after the previous
one) and each thread name gets a stable made-up id.
"""

from __future__ import annotations

import ast
import json
import pickle
import re
from typing import Any, Optional

from util.trace import TraceRecord
from util.trace_output import RECORD_FORMAT, read_record_file

LOG_LINE = re.compile(r"^(\d+)@(\d+)\.(\d{6}):([A-Za-z_][\w.]*) \[(.*?)\] ?(.*)$")
_ARG_START = re.compile(r"(?:^| )([A-Za-z_]\w*)=")


def parse_log_args(text: str) -> dict[str, Any]:
    """``a=1 b='x y' c={'k': 'v w=1'}`` -> {'a': 1, 'b': 'x y', 'c': {...}}.

    A value runs to the next `` name=`` at which the text before it is a
    complete Python literal; values that are not literals (reprs of objects)
    stay strings.
    """
    args: dict[str, Any] = {}
    starts = [m for m in _ARG_START.finditer(text)]
    i = 0
    while i < len(starts):
        m = starts[i]
        name, vstart = m.group(1), m.end()
        value: Any = None
        taken = False
        for j in range(i + 1, len(starts) + 1):
            vend = starts[j].start() if j < len(starts) else len(text)
            raw = text[vstart:vend]
            try:
                value = ast.literal_eval(raw) if raw else ""
            except (ValueError, SyntaxError, MemoryError, RecursionError):
                continue
            args[name], i, taken = value, j, True
            break
        if not taken:
            # not a literal (an object's repr): up to the first next name= at
            # which its brackets balance, else the rest of the line
            for j in range(i + 1, len(starts) + 1):
                vend = starts[j].start() if j < len(starts) else len(text)
                if _balanced(text[vstart:vend]):
                    args[name], i = text[vstart:vend], j
                    break
            else:
                args[name], i = text[vstart:], len(starts)
    return args


def _balanced(raw: str) -> bool:
    """True when ``raw`` closes every (, [, { and < it opens (quotes skipped)."""
    pairs = {")": "(", "]": "[", "}": "{", ">": "<"}
    stack: list[str] = []
    quote = ""
    escaped = False
    for ch in raw:
        if quote:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = ""
        elif ch in "'\"":
            quote = ch
        elif ch in "([{<":
            stack.append(ch)
        elif ch in pairs:
            if not stack or stack.pop() != pairs[ch]:
                return False
    return not stack and not quote


def parse_log(lines: list[str]) -> tuple[list[TraceRecord], Optional[int]]:
    """Records from log-backend lines, and the pid they name (None if none)."""
    records: list[TraceRecord] = []
    thread_ids: dict[str, int] = {}
    pid: Optional[int] = None
    last_ts = -1
    for line in lines:
        m = LOG_LINE.match(line.rstrip("\n"))
        if m is None:
            continue
        pid = int(m.group(1)) if pid is None else pid
        ts = (int(m.group(2)) * 1_000_000 + int(m.group(3))) * 1000
        ts = max(ts, last_ts + 1)
        last_ts = ts
        thread = m.group(5)
        tid = thread_ids.setdefault(thread, len(thread_ids) + 1)
        records.append(TraceRecord(m.group(4), thread, tid, ts, parse_log_args(m.group(6))))
    return records, pid


def load_records(path: str) -> tuple[list[TraceRecord], Optional[int]]:
    """(records, pid) from any supported trace file."""
    if path.endswith((".pickle", ".pkl")):
        with open(path, "rb") as fb:
            data = pickle.load(fb)
        if not isinstance(data, list) or not all(isinstance(r, TraceRecord) for r in data):
            raise ValueError(f"{path}: not a pickled list of TraceRecord")
        return data, None
    with open(path, encoding="utf-8", errors="replace") as f:
        first = f.readline()
        rest = f.readlines()
    if first.startswith("{"):
        try:
            header = json.loads(first)
        except ValueError:
            header = None
        if isinstance(header, dict) and header.get("format") == RECORD_FORMAT:
            records, header = read_record_file(path)
            pid = header.get("pid")
            return records, pid if isinstance(pid, int) else None
        if (isinstance(header, dict) and "traceEvents" in header) or first.startswith(
            '{"traceEvents'
        ):
            raise ValueError(f"{path}: already a Chrome trace-event JSON file")
    return parse_log([first, *rest])
