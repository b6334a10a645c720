"""``merge`` (shards into one campaign) and ``diff`` (two traces)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def merge_main(argv: list[str]) -> int:
    from tools.explore.__main__ import _usage_error, _write_json, report
    from tools.explore.campaign import Campaign, merge, shrink
    from tools.explore.scenarios import load_scenarios

    p = argparse.ArgumentParser(prog="python -m tools.explore merge")
    p.add_argument("files", nargs="+")
    p.add_argument("--json", metavar="FILE")
    p.add_argument("--shrink", action="store_true")
    p.add_argument("-q", "--quiet", action="store_true")
    args = p.parse_args(argv)
    docs = []
    for path in args.files:
        try:
            with open(path, encoding="utf-8") as f:
                docs.append(json.load(f))
        except (OSError, ValueError) as e:
            _usage_error(f"cannot read {path}: {e}")
    try:
        doc = merge(docs)
    except (ValueError, KeyError) as e:
        _usage_error(str(e))
    if args.shrink and doc["failures"]:
        load_scenarios()
        kind, _, param = doc["strategy"].partition(":")
        c = Campaign(
            doc["scenario"],
            doc["bugs"],
            doc["opts"],
            (kind, int(param or 0)),
            doc["seed"],
            doc["runs"],
        )
        first = doc["failures"][0]  # the others keep "shrunk": null
        first["shrunk"] = shrink(c, first["schedule"], first["reason"])
    _write_json(doc, args.json)
    if args.json is None:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 1 if doc["failures"] else 0
    return report(doc, args.quiet)


def _events(path: str) -> list[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        data = json.load(f)
    events = data["traceEvents"] if isinstance(data, dict) else data
    return [e for e in events if e.get("ph") != "M"]


def _describe(e: dict[str, Any]) -> str:
    args = e.get("args") or {}
    detail = ", ".join(f"{k}={v}" for k, v in args.items())
    return f"ts={e.get('ts')} tid={e.get('tid')} {e.get('ph')} {e.get('name')}" + (
        f" ({detail})" if detail else ""
    )


def diff_main(argv: list[str]) -> int:
    """Print where two traces of the same scenario part ways (exit 1), or
    that they are the same (exit 0)."""
    from tools.explore.__main__ import _usage_error

    p = argparse.ArgumentParser(prog="python -m tools.explore diff")
    p.add_argument("a")
    p.add_argument("b")
    p.add_argument("--context", type=int, default=3)
    args = p.parse_args(argv)
    try:
        ea, eb = _events(args.a), _events(args.b)
    except (OSError, ValueError, KeyError) as e:
        _usage_error(f"cannot read trace: {e}")
    n = next((i for i, (x, y) in enumerate(zip(ea, eb)) if x != y), None)
    if n is None and len(ea) == len(eb):
        print(f"same: {len(ea)} events")
        return 0
    if n is None:
        n = min(len(ea), len(eb))
    print(f"the traces part at event {n} (of {len(ea)} and {len(eb)}):")
    for i in range(max(0, n - args.context), n):
        print(f"  = {_describe(ea[i])}")
    for label, ev in (("a", ea), ("b", eb)):
        for event in ev[n : n + args.context]:
            print(f"  {label} {_describe(event)}")
    return 1
