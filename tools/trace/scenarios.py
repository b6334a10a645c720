"""Teaching scenarios, run for real against ``python -m system`` with tracing on.

Usage::

    python -m tools.trace.scenarios NAME [-d OUTDIR]      (NAME: see --help)

Each scenario starts the emulator with ``-trace enable=*,file=RUN.jsonl``
(the record file), drives it over real sockets, shuts it down with ``quit``
and leaves in OUTDIR: the record file, its Chrome JSON (open it in
ui.perfetto.dev) and, with matplotlib installed, a timeline picture of the
interesting window.  ``python -m tools.trace.make_docs`` runs them all for
docs/images/.

The scenarios:

``inband``
    the life of an in-band request: ``query-status`` read by the I/O thread,
    queued, popped by the dispatcher coroutine, run by a bottom half in the
    main loop under the BQL, answered.
``oob``
    an OOB command overtaking a blocked main loop: ``x-oob-test {"lock":
    true}`` in-band blocks the main loop; ``exec-oob migrate-pause`` is
    answered from the I/O thread meanwhile; ``exec-oob x-oob-test {"lock":
    false}`` releases the main loop.
``backpressure``
    OOB on, main loop blocked, 10 pipelined in-band requests: the queue
    takes 8 and the monitor suspends (stops reading); a second monitor
    releases the main loop and the queue drains, resuming the monitor.
``dropped``
    the ``backpressure`` client against ``-x-era 2.12`` (monitors with
    ``x-oob=on``): the queue takes 8, the 9th and 10th requests are dropped
    with COMMAND_DROPPED, the bottom-half dispatcher answers the 8 once a
    ``"control": {"run-oob": true}`` request releases the main loop.
``selfremove``
    a monitor removing itself: ``chardev-add`` a UNIX socket server,
    ``monitor-add`` on it, connect, negotiate, ``monitor-remove`` its own
    id: the reply still goes out, then the connection is cut.

The emulator connects to sockets this script listens on (``server=off``),
so startup needs no polling.  Where a scenario must know that the emulator
reached a state (the main loop is blocked, the monitor suspended) it follows
the record file, which is flushed per record, until the event shows up, with
a deadline.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from tools.trace.chrome import write_chrome_trace
from tools.trace.timeline_builder import build_timeline
from tools.trace.timeline_model import Timeline
from util.trace import TraceRecord
from util.trace_output import RECORD_FORMAT, read_record_file, record_from_json

REPO_ROOT = Path(__file__).resolve().parents[2]
DEADLINE = 15.0
FOLLOW_PAUSE = 0.001  # between two reads of the record file another process writes

JSON = Any


class QMPClient:
    """A minimal line-based QMP client with a deadline on every read."""

    def __init__(self, sock: socket.socket, name: str) -> None:
        self.sock = sock
        self.name = name
        self.buf = b""
        self.events: list[JSON] = []
        self.replies: list[JSON] = []
        sock.settimeout(DEADLINE)

    def send(self, msg: JSON) -> None:
        data = msg if isinstance(msg, bytes) else json.dumps(msg).encode() + b"\n"
        self.sock.sendall(data)

    def recv(self) -> JSON:
        """The next message; raises EOFError at end of stream."""
        while b"\n" not in self.buf:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise EOFError(f"{self.name}: connection closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def reply(self, qid: JSON) -> JSON:
        """Wait for the reply with id ``qid``; events and other replies are kept aside."""
        for n, msg in enumerate(self.replies):
            if msg.get("id") == qid:
                return self.replies.pop(n)
        while True:
            msg = self.recv()
            if "event" in msg:
                self.events.append(msg)
            elif msg.get("id") == qid:
                return msg
            else:
                self.replies.append(msg)

    def execute(
        self,
        cmd: str,
        arguments: Optional[dict[str, Any]] = None,
        qid: JSON = None,
        oob: bool = False,
    ) -> JSON:
        """Send one command and wait for its reply."""
        qid = qid if qid is not None else f"{self.name}-{cmd}"
        self.send(command(cmd, arguments, qid, oob))
        return self.reply(qid)

    def negotiate(self, oob: bool = True) -> JSON:
        greeting = self.recv()
        assert "QMP" in greeting, greeting
        caps = {"enable": ["oob"]} if oob else None
        rsp = self.execute("qmp_capabilities", caps, qid=f"{self.name}-caps")
        assert rsp.get("return") == {}, rsp
        return greeting

    def wait_eof(self) -> list[JSON]:
        """Read until the emulator closes the connection."""
        rest = []
        try:
            while True:
                rest.append(self.recv())
        except EOFError:
            return rest

    def close(self) -> None:
        self.sock.close()


def command(
    cmd: str, arguments: Optional[dict[str, Any]] = None, qid: JSON = None, oob: bool = False
) -> dict[str, Any]:
    msg: dict[str, Any] = {"exec-oob" if oob else "execute": cmd}
    if arguments is not None:
        msg["arguments"] = arguments
    if qid is not None:
        msg["id"] = qid
    return msg


class RecordFollower:
    """Reads the record file the emulator is writing, as it grows."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.pos = 0
        self.partial = ""
        self.records: list[TraceRecord] = []

    def poll(self) -> None:
        try:
            with open(self.path, encoding="utf-8") as f:
                f.seek(self.pos)
                data = f.read()
                self.pos = f.tell()
        except FileNotFoundError:
            return
        lines = (self.partial + data).split("\n")
        self.partial = lines.pop()
        for line in lines:
            if line.strip():
                obj = json.loads(line)
                if obj.get("format") != RECORD_FORMAT:
                    self.records.append(record_from_json(obj))

    def wait_for(
        self, what: str, pred: Callable[[TraceRecord], bool], deadline: float = DEADLINE
    ) -> TraceRecord:
        """The first record (from the start of the run) satisfying ``pred``."""
        end = time.monotonic() + deadline
        seen = 0
        while True:
            self.poll()
            for rec in self.records[seen:]:
                if pred(rec):
                    return rec
            seen = len(self.records)
            if time.monotonic() > end:
                raise TimeoutError(f"trace never showed {what} within {deadline}s")
            time.sleep(FOLLOW_PAUSE)  # another process writes the file: nothing to wait on


@dataclass
class Run:
    """One emulator process with its monitors connected to us."""

    workdir: str
    name: str
    proc: subprocess.Popen[bytes]
    main: QMPClient
    aux: Optional[QMPClient]
    trace_path: str
    follower: RecordFollower


@contextmanager
def emulator(
    workdir: str,
    name: str,
    aux: bool = False,
    trace_enable: str = "*",
    trace_file: Optional[str] = None,
    era: Optional[str] = None,
) -> Iterator[Run]:
    """Start ``python -m system`` whose QMP monitor(s) connect to our sockets.

    Tracing goes to ``trace_file`` (default ``WORKDIR/NAME.jsonl``; its
    suffix picks the backend, see ``-trace`` in system/vl.py).  Yields once
    the main monitor is negotiated (OOB on); on exit sends ``quit`` if the
    process still runs and waits for it, so the trace files are complete.
    ``era`` is passed as ``-x-era``; 2.12's monitors get ``x-oob=on``.
    """
    trace_path = trace_file or os.path.join(workdir, f"{name}.jsonl")
    listeners: list[socket.socket] = []
    args = [sys.executable, "-m", "system", "-nodefaults", "-machine", "none", "-display", "none"]
    if era is not None:
        args += ["-x-era", era]
    x_oob = ",x-oob=on" if era == "2.12" else ""
    for label in ["m0", "aux0"] if aux else ["m0"]:
        path = os.path.join(workdir, f"{name}-{label}.sock")
        if os.path.exists(path):
            os.unlink(path)
        ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        ls.bind(path)
        ls.listen(1)
        ls.settimeout(DEADLINE)
        listeners.append(ls)
        args += [
            "-chardev",
            f"socket,id={label},path={path},server=off",
            "-mon",
            f"chardev={label},mode=control,id={label}mon{x_oob}",
        ]
    args += ["-trace", f"enable={trace_enable},file={trace_path}"]
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    stderr = open(os.path.join(workdir, f"{name}.stderr"), "wb")
    proc = subprocess.Popen(
        args,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=stderr,
        stderr=subprocess.STDOUT,
    )
    clients: list[QMPClient] = []
    try:
        for ls, label in zip(listeners, ["main", "aux"]):
            conn, _ = ls.accept()
            clients.append(QMPClient(conn, label))
        for c in clients:
            c.negotiate(oob=True)
        run = Run(
            workdir,
            name,
            proc,
            clients[0],
            clients[1] if aux else None,
            trace_path,
            RecordFollower(trace_path),
        )
        yield run
        if proc.poll() is None:
            run.main.send(command("quit", qid="quit"))
            run.main.wait_eof()
        if proc.wait(DEADLINE) != 0:
            raise RuntimeError(f"{name}: emulator exited with {proc.returncode}")
    finally:
        for c in clients:
            c.close()
        for ls in listeners:
            ls.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait(DEADLINE)
        stderr.close()


def _is(rec: TraceRecord, name: str, **args: Any) -> bool:
    return rec.name == name and all(rec.args.get(k) == v for k, v in args.items())


# ---------------------------------------------------------------- the scenarios


def scenario_inband(run: Run) -> dict[str, Any]:
    """The life of an in-band request."""
    rsp = run.main.execute("query-status", qid="life")
    assert "return" in rsp, rsp
    return {"window": ("life", "life"), "title": "The life of an in-band request (query-status)"}


def scenario_oob(run: Run) -> dict[str, Any]:
    """An OOB command overtaking a blocked main loop."""
    run.main.send(command("x-oob-test", {"lock": True}, "lock"))
    run.follower.wait_for(
        "the main loop running x-oob-test",
        lambda r: _is(r, "aio_bh_run", bh="qmp_dispatch:x-oob-test"),
    )
    pause = run.main.execute("migrate-pause", qid="oob-pause", oob=True)
    assert "error" in pause, pause  # only valid in postcopy: the point is that it answers
    run.main.send(command("x-oob-test", {"lock": False}, "unlock", oob=True))
    assert "return" in run.main.reply("unlock")
    assert "return" in run.main.reply("lock")
    return {
        "window": ("lock", "lock"),
        "title": "An OOB command overtakes a blocked main loop (x-oob-test lock, migrate-pause)",
    }


def scenario_backpressure(run: Run) -> dict[str, Any]:
    """10 pipelined in-band requests against a blocked main loop: suspend at 8."""
    assert run.aux is not None
    run.main.send(command("x-oob-test", {"lock": True}, "blk"))
    run.follower.wait_for(
        "the main loop running x-oob-test",
        lambda r: _is(r, "aio_bh_run", bh="qmp_dispatch:x-oob-test"),
    )
    run.main.send(
        b"".join(json.dumps(command("query-name", None, i)).encode() + b"\n" for i in range(10))
    )
    run.follower.wait_for("the monitor suspending", lambda r: _is(r, "monitor_suspend", cnt=1))
    # the main monitor reads nothing more now: release from the other one
    run.aux.execute("x-oob-test", {"lock": False}, qid="release", oob=True)
    assert "return" in run.main.reply("blk")
    for i in range(10):
        assert "return" in run.main.reply(i)
    return {
        "window": (0, 9),
        "title": "Backpressure: 10 pipelined requests, the monitor suspends at 8 queued",
    }


def scenario_dropped(run: Run) -> dict[str, Any]:
    """QEMU 2.12: the backpressure client; requests 8 and 9 are dropped."""
    assert run.aux is not None
    run.main.send(command("x-oob-test", {"lock": True}, "blk"))
    run.follower.wait_for(
        "the dispatcher BH running x-oob-test",
        lambda r: _is(r, "monitor_qmp_cmd_in_band", id='"blk"'),
    )
    run.main.send(
        b"".join(json.dumps(command("query-name", None, i)).encode() + b"\n" for i in range(10))
    )
    dropped = []
    while len(dropped) < 2:
        msg = run.main.recv()
        assert msg.get("event") == "COMMAND_DROPPED", msg
        dropped.append(msg["data"])
    assert dropped == [{"id": i, "reason": "queue-full"} for i in (8, 9)], dropped
    release = command("x-oob-test", {"lock": False}, "release")
    release["control"] = {"run-oob": True}  # 2.12's spelling of exec-oob
    run.aux.send(release)
    assert "return" in run.aux.reply("release")
    assert "return" in run.main.reply("blk")
    for i in range(8):
        assert "return" in run.main.reply(i)
    return {
        "window": (0, 7),
        "title": "QEMU 2.12 (-x-era 2.12): 10 pipelined requests, 8 queued, 2 COMMAND_DROPPED",
    }


def scenario_selfremove(run: Run) -> dict[str, Any]:
    """A monitor removing itself."""
    path = os.path.join(run.workdir, f"{run.name}-self.sock")
    if os.path.exists(path):
        os.unlink(path)
    backend = {
        "type": "socket",
        "data": {"addr": {"type": "unix", "data": {"path": path}}, "server": True, "wait": False},
    }
    assert run.main.execute("chardev-add", {"id": "selfchr", "backend": backend})["return"] == {}
    assert run.main.execute("monitor-add", {"id": "selfmon", "chardev": "selfchr"})["return"] == {}
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(DEADLINE)
    sock.connect(path)
    me = QMPClient(sock, "self")
    try:
        me.negotiate(oob=True)
        rsp = me.execute("monitor-remove", {"id": "selfmon"}, qid="bye")
        assert rsp.get("return") == {}, rsp
        leftover = me.wait_eof()
        assert leftover == [], leftover
    finally:
        me.close()
    assert run.main.execute("chardev-remove", {"id": "selfchr"})["return"] == {}
    return {
        "window": ("bye", "bye"),
        "title": "A monitor removes itself (monitor-remove selfmon)",
        "until": _teardown_done,
    }


def _teardown_done(records: list[TraceRecord]) -> Optional[int]:
    """When the dispatcher yields after the removed monitor's chardev closed (ns, absolute)."""
    closed = next(
        (
            r.ts_ns
            for r in records
            if _is(r, "chr_be_event", label="selfchr", event="CHR_EVENT_CLOSED")
        ),
        None,
    )
    if closed is None:
        return None
    return next(
        (
            r.ts_ns
            for r in records
            if r.ts_ns > closed and _is(r, "qemu_coroutine_yield", from_="qmp_dispatcher_co")
        ),
        closed,
    )


SCENARIOS: dict[str, tuple[Callable[[Run], dict[str, Any]], bool]] = {
    "inband": (scenario_inband, False),
    "oob": (scenario_oob, False),
    "backpressure": (scenario_backpressure, True),
    "selfremove": (scenario_selfremove, False),
    "dropped": (scenario_dropped, True),
}

#: scenarios that run in another era than the default (-x-era)
SCENARIO_ERAS = {"dropped": "2.12"}


@dataclass
class Result:
    """What a scenario left behind."""

    name: str
    records: list[TraceRecord]
    pid: Optional[int]
    timeline: Timeline
    trace_path: str
    chrome_path: str
    window: tuple[int, int]
    title: str


def request_window(
    tl: Timeline, first: JSON, last: JSON, until_ns: Optional[int] = None
) -> tuple[int, int]:
    """From the read of request ``first`` to the reply of request ``last``, or to
    ``until_ns`` if later (ns from the trace start), padded."""

    def steps(qid: JSON) -> list[tuple[int, int]]:
        seqs = {r.seq for r in tl.requests if r.qid == qid and not isinstance(r.qid, bool)}
        return [(s.start_ns, s.end_ns) for f in tl.flows if f.id in seqs for s in f.steps]

    a, b = steps(first), steps(last)
    if not a or not b:
        raise KeyError(f"requests {first!r}..{last!r} not in the trace")
    lo, hi = min(s for s, _ in a), max(e for _, e in b)
    if until_ns is not None:
        hi = max(hi, until_ns)
    pad = max((hi - lo) // 25, 2_000)
    return max(0, lo - pad), hi + pad


def run_scenario(name: str, outdir: str) -> Result:
    """Run scenario ``name``; write RUN.jsonl and RUN.json in ``outdir``."""
    fn, aux = SCENARIOS[name]
    os.makedirs(outdir, exist_ok=True)
    # socket paths must stay short (108 bytes): run in a private temp dir
    with tempfile.TemporaryDirectory(prefix="qme-trace-") as tmp:
        with emulator(tmp, name, aux=aux, era=SCENARIO_ERAS.get(name)) as run:
            info = fn(run)
        records, header = read_record_file(run.trace_path)
        trace_path = os.path.join(outdir, f"{name}.jsonl")
        os.replace(run.trace_path, trace_path)
    pid = header.get("pid") if isinstance(header.get("pid"), int) else None
    tl = build_timeline(records, pid)
    chrome_path = os.path.join(outdir, f"{name}.json")
    write_chrome_trace(tl, chrome_path)
    first, last = info["window"]
    until = info["until"](records) if "until" in info else None
    window = request_window(tl, first, last, None if until is None else until - tl.t0_ns)
    return Result(name, records, pid, tl, trace_path, chrome_path, window, info["title"])


def main(argv: Optional[list[str]] = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m tools.trace.scenarios",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("name", choices=sorted(SCENARIOS))
    ap.add_argument("-d", "--outdir", default="trace-out", help="where to write (trace-out)")
    args = ap.parse_args(argv)
    res = run_scenario(args.name, args.outdir)
    print(f"{res.trace_path}: {len(res.records)} records")
    print(f"{res.chrome_path}: open in https://ui.perfetto.dev or chrome://tracing")
    try:
        from tools.trace.timeline import render_timeline
    except ImportError:  # pragma: no cover - the module itself needs no matplotlib
        return 0
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        print("(matplotlib not installed: no picture; pip install -e '.[tools]')")
        return 0
    pictures = [os.path.join(args.outdir, f"{args.name}.{ext}") for ext in ("svg", "png")]
    render_timeline(res.timeline, pictures, res.window, res.title)
    for p in pictures:
        print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main())
