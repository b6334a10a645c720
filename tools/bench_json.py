#!/usr/bin/env python3
"""Microbenchmark of qapi's JSON reader and writer against plain :mod:`json`.

Reports throughput and time per message, and the ratio to ``json.loads`` /
``json.dumps`` on the same data (ratio 1.0 = as fast as the C library,
which does far less: no QEMU limits, no duplicate-key check, no QDict
order).  Ratios only; nothing here asserts on wall time.

Usage: ``python -m tools.bench_json [--quick]``
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any, Callable

from qapi.json_streamer import JSONMessageParser
from qapi.json_writer import to_json

REQUESTS = [
    b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob"]}}',
    b'{"execute": "query-status", "id": 1}',
    b'{"execute": "device_add", "arguments": {"driver": "virtio-net-pci", "id": "net0",'
    b' "bus": "pci.0", "addr": "0x5", "mac": "52:54:00:12:34:56"}, "id": "libvirt-42"}',
    b'{"execute": "blockdev-add", "arguments": {"node-name": "disk0", "driver": "qcow2",'
    b' "file": {"driver": "file", "filename": "/var/lib/images/disk0.qcow2",'
    b' "aio": "threads", "cache": {"direct": true, "no-flush": false}},'
    b' "discard": "unmap"}, "id": 7}',
    b'{"execute": "human-monitor-command", "arguments": {"command-line": "info block"},'
    b' "id": "hmp-1"}',
]

REPLIES: list[Any] = [
    {
        "QMP": {
            "version": {"qemu": {"major": 7, "minor": 2, "micro": 22}, "package": ""},
            "capabilities": ["oob"],
        }
    },
    {"return": {}, "id": 1},
    {"return": {"running": True, "singlestep": False, "status": "running"}, "id": 1},
    {"error": {"class": "GenericError", "desc": "Parameter 'id' is missing"}, "id": "x"},
    {
        "event": "SHUTDOWN",
        "data": {"guest": False, "reason": "host-qmp-quit"},
        "timestamp": {"seconds": 1700000000, "microseconds": 123456},
    },
    {"return": [{"name": f"command-{i}"} for i in range(150)]},
]


def best_of(fn: Callable[[], Any], number: int, repeat: int) -> float:
    """Seconds per call, best of ``repeat`` runs of ``number`` calls."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - start) / number)
    return best


def row(name: str, nbytes: int, nmsgs: int, ours: float, ref: float) -> None:
    mbs = nbytes / ours / 1e6
    us = ours / nmsgs * 1e6
    print(f"{name:<38} {mbs:9.1f} MB/s {us:10.2f} us/msg   x{ours / ref:5.2f} vs json")


def bench_parse(number: int, repeat: int) -> None:
    print("parse (JSONMessageParser.feed vs json.loads)")
    parser = JSONMessageParser()
    for req in REQUESTS:
        ours = best_of(lambda r=req: parser.feed(r), number, repeat)  # type: ignore[misc]
        ref = best_of(lambda r=req: json.loads(r), number, repeat)  # type: ignore[misc]
        name = json.loads(req)["execute"]
        row(f"  {name} ({len(req)} B)", len(req), 1, ours, ref)

    def loads_each(data: list[bytes]) -> None:
        for d in data:
            json.loads(d)

    lines = [r + b"\r\n" for r in REQUESTS] * 200
    stream = b"".join(lines)
    ours = best_of(lambda: parser.feed(stream), max(1, number // 1000), repeat)
    ref = best_of(lambda: loads_each(lines), max(1, number // 1000), repeat)
    row(f"  {len(lines)} requests in one chunk", len(stream), len(lines), ours, ref)

    chunks = [stream[i : i + 4096] for i in range(0, len(stream), 4096)]

    def feed_chunks() -> None:
        for c in chunks:
            parser.feed(c)

    ours = best_of(feed_chunks, max(1, number // 1000), repeat)
    row("  same, 4 KiB reads (splits messages)", len(stream), len(lines), ours, ref)

    def one_at_a_time() -> None:
        pos = 0
        while pos < len(stream):
            pos += parser.feed(stream[pos:], max_messages=1)[1]

    ours = best_of(one_at_a_time, max(1, number // 1000), repeat)
    row("  same, feed(max_messages=1) loop", len(stream), len(lines), ours, ref)

    exact = JSONMessageParser(fast_path=False)
    ours = best_of(lambda: exact.feed(stream), 1, repeat)
    row("  same, exact path only (no C scanner)", len(stream), len(lines), ours, ref)

    big = (
        b'{"execute": "guest-file-write", "arguments": {"handle": 1, "buf-b64": "'
        + b"QUJD" * (1 << 18)
        + b'"}}'
    )
    n = max(1, number // 2000)
    ours = best_of(lambda: parser.feed(big), n, repeat)
    ref = best_of(lambda: json.loads(big), n, repeat)
    row("  1 MiB string, one chunk", len(big), 1, ours, ref)
    for size in (65536, 4096):
        pieces = [big[i : i + size] for i in range(0, len(big), size)]

        def feed_pieces(p: list[bytes] = pieces) -> None:
            for c in p:
                parser.feed(c)

        ours = best_of(feed_pieces, n, repeat)
        row(f"  1 MiB string, {size // 1024} KiB reads", len(big), 1, ours, ref)


def bench_write(number: int, repeat: int) -> None:
    print("serialise (to_json vs json.dumps(separators=(', ', ': ')))")
    for reply in REPLIES:
        text = to_json(reply)
        ours = best_of(lambda r=reply: to_json(r), number, repeat)  # type: ignore[misc]
        ref = best_of(
            lambda r=reply: json.dumps(r, separators=(", ", ": ")),  # type: ignore[misc]
            number,
            repeat,
        )
        label = text[:30] + ("..." if len(text) > 30 else "")
        row(f"  {label} ({len(text)} B)", len(text), 1, ours, ref)
    reply = REPLIES[2]
    ours = best_of(lambda: to_json(reply, pretty=True), number, repeat)
    ref = best_of(lambda: json.dumps(reply, indent=4), number, repeat)
    row("  query-status reply, pretty", len(to_json(reply, True)), 1, ours, ref)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer iterations")
    args = ap.parse_args()
    number, repeat = (2000, 3) if args.quick else (20000, 5)
    print(f"Python {sys.version.split()[0]}")
    bench_parse(number, repeat)
    bench_write(number, repeat)


if __name__ == "__main__":
    main()
