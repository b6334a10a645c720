"""The chardev QMP commands against replies captured from QEMU 7.2.

``SCRIPT`` is a session of chardev commands and the replies QEMU 7.2.22
gave (``{tmp}`` stands for a scratch directory).  The handlers, bound
through the QAPI schema as the monitor binds them, must give the same
replies; the ``qemu`` test replays the session against a real
qemu-system-x86_64 to show the captured replies are still what it says.
Both sessions start with a chardev ``q`` carrying a busy frontend (QEMU's
monitor connection), so query-chardev's hash-table order is comparable.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
from pathlib import Path
from typing import Any

import pytest

import chardev.char_qmp as char_qmp
from chardev.char import qemu_chardev_new
from chardev.char_null import NullChardev
from qapi.error import QapiError
from qapi.qmp_marshal import handler_name, qmp_marshal
from qapi.schema import qapi_schema
from tests.chardev.conftest import DEADLINE, Frontend, run_iterations
from util.yank import chardev_yank_instance, yank_instances

QEMU = "qemu-system-x86_64"


def ok(value: Any = None) -> dict[str, Any]:
    return {"return": {} if value is None else value}


def err(desc: str) -> dict[str, Any]:
    return {"error": {"class": "GenericError", "desc": desc}}


def add(label: str, kind: str, **data: Any) -> tuple[str, dict[str, Any]]:
    return "chardev-add", {"id": label, "backend": {"type": kind, "data": data}}


def unix(path: str) -> dict[str, Any]:
    return {"type": "unix", "data": {"path": path}}


def inet(host: str, port: str) -> dict[str, Any]:
    return {"type": "inet", "data": {"host": host, "port": port}}


def info(label: str, filename: str, frontend_open: bool = False) -> dict[str, Any]:
    return {"label": label, "filename": filename, "frontend-open": frontend_open}


NOENT = "No such file or directory"
SCRIPT: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    (*add("n1", "null"), ok()),
    (*add("n1", "null"), err("Chardev with id 'n1' already exists")),
    (*add("q", "null"), err("Chardev with id 'q' already exists")),
    (*add("r1", "ringbuf", size=3),
     err("Failed to add chardev 'r1': size of ringbuf chardev must be power of two")),
    (*add("r2", "ringbuf", size=0), ok()),
    (*add("r3", "memory", size=4), ok()),
    (*add("rb", "ringbuf", size=8), ok()),
    (*add("m1", "mux", chardev="n1"), ok()),
    (*add("m2", "mux", chardev="zz"),
     err("Failed to add chardev 'm2': mux: base chardev zz not found")),
    (*add("f1", "file", out="/nonexistent/x"),
     err(f"Failed to add chardev 'f1': Could not open '/nonexistent/x': {NOENT}")),
    (*add("f2", "file", out="{tmp}/out.txt"), ok()),
    (*add("f3", "file", out="{tmp}/out.txt", **{"in": "/nonexistent"}),
     err(f"Failed to add chardev 'f3': Could not open '/nonexistent': {NOENT}")),
    (*add("p1", "pipe", device="/nonexistent/x"),
     err(f"Failed to add chardev 'p1': Could not open '/nonexistent/x': {NOENT}")),
    (*add("lg", "null", logfile="/nonexistent/x"),
     err(f"Failed to add chardev 'lg': Could not create '/nonexistent/x': {NOENT}")),
    (*add("s1", "socket", addr=unix("/nonexistent/x")),
     err(f"Failed to add chardev 's1': Failed to bind socket to /nonexistent/x: {NOENT}")),
    (*add("s2", "socket", addr=unix("/nonexistent/x"), server=False),
     err(f"Failed to add chardev 's2': Failed to connect to '/nonexistent/x': {NOENT}")),
    (*add("s3", "socket", addr=unix("{tmp}/s3.sock"), server=True, wait=False), ok()),
    (*add("s4", "socket", addr=unix("{tmp}/s3.sock"), server=True, wait=False), ok()),
    (*add("s8", "socket", addr=unix("{tmp}/x.sock"), server=True, reconnect=1),
     err("Failed to add chardev 's8': 'reconnect' option is incompatible with socket in "
         "server listen mode")),
    (*add("s9", "socket", addr=unix("{tmp}/x.sock"), server=False, wait=False),
     err("Failed to add chardev 's9': 'wait' option is incompatible with socket in client "
         "connect mode")),
    (*add("t1", "socket", addr=inet("127.0.0.1", "abc"), server=True, wait=False),
     err("Failed to add chardev 't1': address resolution failed for 127.0.0.1:abc: "
         "Servname not supported for ai_socktype")),
    (*add("t2", "socket", addr=inet("127.0.0.1", "1"), server=False),
     err("Failed to add chardev 't2': Failed to connect to '127.0.0.1:1': Connection refused")),
    (*add("c6", "socket", addr=unix("{tmp}/s3.sock"), server=False), ok()),
    ("chardev-send-break", {"id": "n1"}, ok()),
    ("query-chardev", {}, ok([
        info("s4", "unix:{tmp}/s3.sock,server=on"),
        info("c6", "unix:"),  # 7.2 prints a client's own (unnamed) address
        info("r3", "memory"),
        info("s3", "disconnected:unix:{tmp}/s3.sock,server=on"),
        info("q", "*", True),
        info("rb", "ringbuf"),
        info("m1", "mux"),
        info("n1", "null"),
        info("r2", "ringbuf"),
        info("f2", "file"),
    ])),
    ("chardev-remove", {"id": "zz"}, err("Chardev 'zz' not found")),
    ("chardev-remove", {"id": "q"}, err("Chardev 'q' is busy")),
    ("chardev-remove", {"id": "m1"}, err("Chardev 'm1' is busy")),
    ("chardev-remove", {"id": "n1"}, err("Chardev 'n1' is busy")),
    ("chardev-remove", {"id": "c6"}, ok()),
    ("chardev-remove", {"id": "s4"}, ok()),
    ("chardev-send-break", {"id": "zz"}, err("Chardev 'zz' not found")),
    ("chardev-send-break", {"id": "m1"}, ok()),
    ("ringbuf-write", {"device": "zz", "data": "x"}, err("Device 'zz' not found")),
    ("ringbuf-write", {"device": "n1", "data": "x"}, err("n1 is not a ringbuf device")),
    ("ringbuf-read", {"device": "zz", "size": 1}, err("Device 'zz' not found")),
    ("ringbuf-read", {"device": "n1", "size": 1}, err("n1 is not a ringbuf device")),
    ("ringbuf-read", {"device": "rb", "size": 0}, err("size must be greater than zero")),
    ("ringbuf-read", {"device": "rb", "size": -1}, err("size must be greater than zero")),
    ("ringbuf-write", {"device": "rb", "data": "abcdefghijk"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100}, ok("defghijk")),
    ("ringbuf-write", {"device": "rb", "data": "abc\u0000def"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100}, ok("abc\u0000def")),
    ("ringbuf-write", {"device": "rb", "data": "!!!", "format": "base64"},
     err("Base64 data contains invalid characters")),
    ("ringbuf-write", {"device": "rb", "data": "YWJj", "format": "base64"}, ok()),
    ("ringbuf-write", {"device": "rb", "data": "YW", "format": "base64"}, ok()),
    ("ringbuf-write", {"device": "rb", "data": "Y", "format": "base64"}, ok()),
    ("ringbuf-write", {"device": "rb", "data": "", "format": "base64"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100, "format": "base64"}, ok("YWJj")),
    ("ringbuf-write", {"device": "rb", "data": "AP8A/w==", "format": "base64"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100}, ok("")),
    ("ringbuf-write", {"device": "rb", "data": "wqk=", "format": "base64"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 1}, ok("\ufffd")),
    ("ringbuf-read", {"device": "rb", "size": 1}, ok("\ufffd")),
    ("ringbuf-write", {"device": "rb", "data": "\u00e9\u20ac"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100, "format": "utf8"}, ok("\u00e9\u20ac")),
    ("ringbuf-write", {"device": "rb", "data": "YWJj\nZGVm", "format": "base64"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100}, ok("abcdef")),
    ("ringbuf-write", {"device": "rb", "data": "YWJj ZGVm", "format": "base64"},
     err("Base64 data contains invalid characters")),
    ("ringbuf-write", {"device": "rb", "data": "YW=J", "format": "base64"}, ok()),
    ("ringbuf-read", {"device": "rb", "size": 100}, ok("a\t")),
    # (writing into the size-0 ring r2 crashes QEMU 7.2: it overruns a 0-byte buffer)
    ("ringbuf-write", {"device": "r3", "data": "abcdef"}, ok()),
    ("ringbuf-read", {"device": "r3", "size": 10, "format": "base64"}, ok("Y2RlZg==")),
    ("query-chardev", {}, ok([
        info("r3", "memory"),
        info("s3", "disconnected:unix:{tmp}/s3.sock,server=on"),
        info("q", "*", True),
        info("rb", "ringbuf"),
        info("m1", "mux"),
        info("n1", "null"),
        info("r2", "ringbuf"),
        info("f2", "file"),
    ])),
]  # fmt: skip


def _subst(value: Any, tmp: str) -> Any:
    """Put the scratch directory in place of ``{tmp}``."""
    return json.loads(json.dumps(value).replace("{tmp}", tmp))


def _mask_q(reply: dict[str, Any]) -> dict[str, Any]:
    """The monitor chardev's filename differs between the two; hide it."""
    if isinstance(reply.get("return"), list):
        for item in reply["return"]:
            if item.get("label") == "q":
                item["filename"] = "*"
    return reply


def emu_execute(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Run a command through its schema-checked marshaller, as dispatch does."""
    cmd = qapi_schema().lookup_command(name)
    marshal = qmp_marshal(cmd, getattr(char_qmp, handler_name(name)))
    try:
        ret = marshal(args)
    except QapiError as e:
        return {"error": {"class": e.error_class.value, "desc": e.desc}}
    return {"return": {} if ret is None else ret}


def test_every_chardev_command_binds_to_the_schema():
    bound = [c.name for c in qapi_schema().commands() if hasattr(char_qmp, handler_name(c.name))]
    assert sorted(bound) == sorted(
        [
            "chardev-add",
            "chardev-remove",
            "chardev-send-break",
            "query-chardev",
            "query-chardev-backends",
            "ringbuf-read",
            "ringbuf-write",
        ]
    )
    for name in bound:
        qmp_marshal(qapi_schema().lookup_command(name), getattr(char_qmp, handler_name(name)))


def test_replies_match_qemu_7_2(chr_state, tmp_path):
    tmp = str(tmp_path)
    q = qemu_chardev_new("q", NullChardev, {"type": "null", "data": {}}, None)
    monitor = Frontend().attach(q)
    for name, args, expected in SCRIPT:
        reply = _mask_q(emu_execute(name, _subst(args, tmp)))
        assert reply == _subst(expected, tmp), f"{name} {args}"
        run_iterations(3)  # let sockets accept, as QEMU's loop does between commands
    assert (tmp_path / "out.txt").exists() and not (tmp_path / "s3.sock").exists()
    monitor.detach()


def test_backends_are_listed_in_qemu_order(chr_state):
    names = [b["name"] for b in emu_execute("query-chardev-backends", {})["return"]]
    # QEMU 7.2 lists: testdev pty wctablet serial file memory udp parallel vc socket
    # msmouse null qemu-vdagent pipe mux ringbuf stdio; the emulator has a subset
    assert names == ["file", "memory", "socket", "null", "pipe", "mux", "ringbuf", "stdio"]


def test_failed_add_leaves_nothing_behind(chr_state, tmp_path):
    path = str(tmp_path / "busy.sock")
    assert emu_execute(*add("a", "socket", addr=unix(path), wait=False))["return"] == {}
    before = emu_execute("query-chardev", {})
    bad = add("b", "socket", addr=unix(path), server=True, reconnect=1)
    assert "error" in emu_execute(*bad)
    assert emu_execute("query-chardev", {}) == before
    assert chardev_yank_instance("b") not in yank_instances()


# ---------------------------------------------------------------- against QEMU


class Qemu:
    """A qemu-system-x86_64 whose QMP monitor connects to us (no polling)."""

    def __init__(self, tmp_path: Path) -> None:
        binary = shutil.which(QEMU)
        if binary is None:
            pytest.skip(f"{QEMU} is not installed")
        path = str(tmp_path / "qmp.sock")
        listener = socket.socket(socket.AF_UNIX)
        listener.bind(path)
        listener.listen(1)
        listener.settimeout(DEADLINE)
        self.proc = subprocess.Popen(
            [binary, "-nodefaults", "-machine", "none", "-display", "none",
             "-chardev", f"socket,id=q,path={path}", "-mon", "chardev=q,mode=control"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        try:
            self.sock, _ = listener.accept()
        finally:
            listener.close()
        self.sock.settimeout(DEADLINE)
        self.file = self.sock.makefile("rwb")
        assert "QMP" in json.loads(self.file.readline())
        assert self.execute("qmp_capabilities", {}) == ok()

    def execute(self, name: str, args: dict[str, Any]) -> dict[str, Any]:
        self.file.write(json.dumps({"execute": name, "arguments": args}).encode() + b"\n")
        self.file.flush()
        while True:
            msg = json.loads(self.file.readline())
            if "event" not in msg:
                return msg

    def close(self) -> None:
        self.sock.close()
        self.proc.kill()
        self.proc.wait(DEADLINE)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


@pytest.mark.qemu
def test_the_captured_replies_are_qemus(tmp_path):
    qemu = Qemu(tmp_path)
    try:
        tmp = str(tmp_path)
        for name, args, expected in SCRIPT:
            reply = _mask_q(qemu.execute(name, _subst(args, tmp)))
            assert reply == _subst(expected, tmp), f"{name} {args}"
        backends = [b["name"] for b in qemu.execute("query-chardev-backends", {})["return"]]
        ours = ["file", "memory", "socket", "null", "pipe", "mux", "ringbuf", "stdio"]
        assert [n for n in backends if n in ours] == ours
    finally:
        qemu.close()
