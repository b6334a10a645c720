#!/usr/bin/env python3
"""The floor: the least a Python QMP server can do, single-threaded.

Started with the very argv QEMU gets (``python tools/bench/floor.py
-nodefaults -machine none ... -chardev socket,id=m0,path=SOCK,... -mon ...``),
it listens on every ``-chardev socket,path=`` (and ``-qmp unix:``) socket
and, on one thread with one ``selectors`` loop, greets each client with a
QEMU-shaped greeting and answers every JSON object (newline or not) with ``{"return": {}}`` plus the
request's id.  ``stop``/``cont`` first send ``STOP``/``RESUME`` to every
connected client, so the event fan-out workload runs against it too.  No
queue, no dispatcher, no threads, no validation: what is left is the cost of
the interpreter, ``json`` and the socket calls, i.e. the best the emulator
could hope for.  Everything else on the command line is ignored.

``floor.py --handoff ARGV...`` is the *hand-off floor*: the same server with
exactly one thread hand-off per request, as QEMU's split between the monitor
I/O thread and the main thread needs.  The reader thread (the selector loop)
parses each request and passes it to a worker thread through
``queue.SimpleQueue`` (a C-implemented lock hand-off, the cheapest primitive
Python has: one futex wake per request), and the worker builds and writes the
reply (and the events).  It is the least any design that keeps QEMU's threads
can cost.
"""

from __future__ import annotations

import json
import os
import queue
import select
import selectors
import signal
import socket
import sys
import threading
import time
from typing import Any, Optional

GREETING = (
    b'{"QMP": {"version": {"qemu": {"micro": 0, "minor": 0, "major": 0},'
    b' "package": "floor"}, "capabilities": ["oob"]}}\r\n'
)
EVENTS = {"stop": "STOP", "cont": "RESUME"}
DECODER = json.JSONDecoder()
#: Unparsable input longer than this is dropped.
MAX_PENDING = 1 << 20


class Conn:
    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.inbuf = b""
        self.outbuf = b""


class Floor:
    def __init__(self, paths: list[str]) -> None:
        self.sel = selectors.DefaultSelector()
        self.conns: dict[int, Conn] = {}
        for path in paths:
            lsock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            lsock.bind(path)
            lsock.listen(16)
            lsock.setblocking(False)
            self.sel.register(lsock, selectors.EVENT_READ, None)

    def run(self) -> None:
        """Serve until SIGTERM, or until the process that started us is gone."""
        parent = os.getppid()
        while os.getppid() == parent:
            for key, mask in self.sel.select(timeout=1.0):
                if key.data is None:
                    self.accept(key.fileobj)  # type: ignore[arg-type]
                elif mask & selectors.EVENT_READ:
                    self.read(key.data)
                else:
                    self.flush(key.data)

    def accept(self, lsock: socket.socket) -> None:
        try:
            sock, _ = lsock.accept()
        except BlockingIOError:
            return
        sock.setblocking(False)
        conn = Conn(sock)
        self.conns[sock.fileno()] = conn
        self.sel.register(sock, selectors.EVENT_READ, conn)
        self.write(conn, GREETING)

    def close(self, conn: Conn) -> None:
        self.sel.unregister(conn.sock)
        del self.conns[conn.sock.fileno()]
        conn.sock.close()

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            self.close(conn)
            return
        text = (conn.inbuf + data).decode("utf-8", "replace")
        out = []
        pos, end = 0, len(text)
        while True:  # bounded: pos grows with every message
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos == end:
                break
            try:
                req, pos = DECODER.raw_decode(text, pos)
            except ValueError:
                break  # incomplete (or garbage: dropped below once it is large)
            out.append(self.handle(req))
        rest = text[pos:].encode()
        conn.inbuf = rest if len(rest) < MAX_PENDING else b""
        if out:
            self.write(conn, b"".join(out))

    def handle(self, req: Any) -> bytes:
        if not isinstance(req, dict):
            return b'{"error": {"class": "GenericError", "desc": "bad request"}}\r\n'
        name = req.get("execute") or req.get("exec-oob")
        if name in EVENTS:
            self.broadcast(EVENTS[name])
        rsp: dict[str, Any] = {"return": {}}
        if "id" in req:
            rsp["id"] = req["id"]
        return json.dumps(rsp).encode() + b"\r\n"

    def broadcast(self, event: str) -> None:
        now = time.time()
        sec = int(now)
        msg = {
            "timestamp": {"seconds": sec, "microseconds": int((now - sec) * 1e6)},
            "event": event,
        }
        data = json.dumps(msg).encode() + b"\r\n"
        for conn in list(self.conns.values()):
            self.write(conn, data)

    def write(self, conn: Conn, data: bytes) -> None:
        if conn.outbuf:
            conn.outbuf += data
            return
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except ConnectionError:
            return
        if sent < len(data):
            conn.outbuf = data[sent:]
            self.sel.modify(conn.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, conn)

    def flush(self, conn: Conn) -> None:
        data, conn.outbuf = conn.outbuf, b""
        self.sel.modify(conn.sock, selectors.EVENT_READ, conn)
        self.write(conn, data)


class HandoffFloor(Floor):
    """The floor with one hand-off per request: reader thread -> worker thread."""

    def __init__(self, paths: list[str]) -> None:
        super().__init__(paths)
        self.requests: queue.SimpleQueue[tuple[Conn, Any]] = queue.SimpleQueue()
        threading.Thread(target=self.worker, name="worker", daemon=True).start()

    def read(self, conn: Conn) -> None:
        try:
            data = conn.sock.recv(65536)
        except ConnectionError:
            data = b""
        if not data:
            self.requests.put((conn, None))  # the worker closes it, after its replies
            self.sel.unregister(conn.sock)
            return
        text = (conn.inbuf + data).decode("utf-8", "replace")
        pos, end = 0, len(text)
        while True:  # bounded: pos grows with every message
            while pos < end and text[pos] in " \t\r\n":
                pos += 1
            if pos == end:
                break
            try:
                req, pos = DECODER.raw_decode(text, pos)
            except ValueError:
                break
            self.requests.put((conn, req))
        rest = text[pos:].encode()
        conn.inbuf = rest if len(rest) < MAX_PENDING else b""

    def worker(self) -> None:
        get = self.requests.get
        while True:
            conn, req = get()
            if req is None:
                del self.conns[conn.sock.fileno()]
                conn.sock.close()
            else:
                self.write(conn, self.handle(req))

    def write(self, conn: Conn, data: bytes) -> None:
        """Blocking write from the worker (the greeting: from the reader, before any request)."""
        while data:
            try:
                data = data[conn.sock.send(data) :]
            except BlockingIOError:
                select.select([], [conn.sock], [], 10.0)
            except OSError:
                return


def socket_paths(argv: list[str]) -> list[str]:
    """The UNIX socket paths of ``-chardev socket,path=`` and ``-qmp unix:``."""
    paths = []
    for opt, value in zip(argv, argv[1:]):
        props = value.split(",")
        if opt == "-chardev" and props[0] == "socket":
            path: Optional[str] = next((p[5:] for p in props if p.startswith("path=")), None)
            if path:
                paths.append(path)
        elif opt == "-qmp" and props[0].startswith("unix:"):
            paths.append(props[0][5:])
    return paths


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    handoff = argv[:1] == ["--handoff"]
    paths = socket_paths(argv)
    if not paths:
        print("floor: no -chardev socket,path=... given", file=sys.stderr)
        return 1
    (HandoffFloor if handoff else Floor)(paths).run()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
