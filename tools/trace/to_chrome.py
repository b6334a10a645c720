"""Convert a recorded trace to Chrome/Perfetto trace-event JSON.

Usage::

    python -m tools.trace.to_chrome TRACE [-o OUT.json] [--check]

TRACE is a record file (``-trace file=NAME.jsonl``), the log backend's text
(``-trace file=NAME.log`` or captured stderr) or a pickled record list.  The
output opens in ui.perfetto.dev ("Open trace file") and chrome://tracing
("Load").  ``--check`` also verifies the structure (slices nest per thread,
flows have a start and a finish) and fails if it does not hold.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional

from tools.trace.chrome import check_chrome_trace, chrome_trace
from tools.trace.records import load_records
from tools.trace.timeline_builder import build_timeline


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.trace.to_chrome", description=__doc__)
    ap.add_argument("trace", help="record file (.jsonl), log text, or pickled records")
    ap.add_argument("-o", "--output", help="output file (default: TRACE with .json)")
    ap.add_argument("--check", action="store_true", help="verify the result's structure")
    args = ap.parse_args(argv)
    records, pid = load_records(args.trace)
    if not records:
        print(f"{args.trace}: no trace records", file=sys.stderr)
        return 1
    out = args.output or os.path.splitext(args.trace)[0] + ".json"
    if os.path.abspath(out) == os.path.abspath(args.trace):
        out += ".chrome.json"
    doc = chrome_trace(build_timeline(records, pid))
    with open(out, "w", encoding="utf-8") as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    print(f"{out}: {len(doc['traceEvents'])} trace events from {len(records)} records")
    if args.check:
        problems = check_chrome_trace(doc)
        for p in problems:
            print(f"problem: {p}", file=sys.stderr)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
