"""File descriptors passed with SCM_RIGHTS over the QMP socket (monitor/fds.c):
``getfd``/``closefd`` and the fd sets of ``add-fd``/``remove-fd``/
``query-fdsets``, byte for byte against QEMU 7.2.

The only thing allowed to differ is the number an fd gets in the server
process; replies are compared with those numbers replaced by names in order
of first appearance, and each number is checked in ``/proc/PID/fd`` to be the
very pipe the test sent.
"""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterator
from typing import Any, Optional

import pytest

from tests.integration.conftest import Launcher
from tests.integration.harness import AUX_SOCKET, Instance, QMPLine

_FD_RE = re.compile(rb'"fd": (\d+)')


class FdNames:
    """Server fd numbers -> stable names (``FD0``, ``FD1``...) in order seen."""

    def __init__(self) -> None:
        self.names: dict[int, str] = {}

    def mask(self, raw: bytes) -> bytes:
        def name(m: re.Match[bytes]) -> bytes:
            fd = int(m.group(1))
            label = self.names.setdefault(fd, f"FD{len(self.names)}")
            return b'"fd": "' + label.encode() + b'"'

        return _FD_RE.sub(name, raw)

    def number(self, label: str) -> int:
        return next(fd for fd, name in self.names.items() if name == label)


def send_with_fd(
    client: QMPLine, name: str, args: dict[str, Any], req_id: str, fd: Optional[int]
) -> bytes:
    """One command, with ``fd`` attached (SCM_RIGHTS) to its bytes; the raw reply."""
    data = (json.dumps({"execute": name, "arguments": args, "id": req_id}) + "\n").encode()
    if fd is None:
        client.send(data)
    else:
        socket.send_fds(client.sock, [data], [fd])
    raw, _ = client.recv_reply(req_id)
    return raw


def proc_fd_target(pid: int, fd: int) -> Optional[str]:
    try:
        return os.readlink(f"/proc/{pid}/fd/{fd}")
    except FileNotFoundError:
        return None


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    yield r, w
    os.close(r)
    os.close(w)


def err(req_id: str, desc: str) -> bytes:
    return (
        b'{"id": "'
        + req_id.encode()
        + b'", "error": {"class": "GenericError", "desc": '
        + json.dumps(desc).encode()
        + b"}}\r\n"
    )


def ok(req_id: str, ret: bytes = b"{}") -> bytes:
    return b'{"return": ' + ret + b', "id": "' + req_id.encode() + b'"}\r\n'


def test_getfd_closefd(inst: Instance, pipe: tuple[int, int]) -> None:
    r, w = pipe
    c = inst.connect_negotiated(oob=False)
    assert send_with_fd(c, "getfd", {"fdname": "p0"}, "1", r) == ok("1")
    assert send_with_fd(c, "getfd", {"fdname": "p0"}, "2", w) == ok("2"), "a name is reused"
    assert send_with_fd(c, "getfd", {"fdname": "p1"}, "3", None) == err(
        "3", "No file descriptor supplied via SCM_RIGHTS"
    )
    assert send_with_fd(c, "getfd", {"fdname": "1abc"}, "4", r) == err(
        "4", "Parameter 'fdname' expects a name not starting with a digit"
    )
    assert send_with_fd(c, "closefd", {"fdname": "p0"}, "5", None) == ok("5")
    assert send_with_fd(c, "closefd", {"fdname": "p0"}, "6", None) == err(
        "6", "File descriptor named 'p0' not found"
    )
    # an fd that came with a request not taking one waits for the next that does
    assert send_with_fd(c, "query-status", {}, "7", r).startswith(b'{"return": {"status"')
    assert send_with_fd(c, "getfd", {"fdname": "p2"}, "8", None) == ok("8")
    assert send_with_fd(c, "getfd", {"fdname": "p3"}, "9", None) == err(
        "9", "No file descriptor supplied via SCM_RIGHTS"
    )


def test_fd_sets(launcher: Launcher, pipe: tuple[int, int]) -> None:
    """add-fd/remove-fd/query-fdsets, and when sets are freed: a removed fd
    at once (the VM runs), the rest only when no client is connected to any
    monitor (QMP monitors count, not just HMP ones)."""
    inst = launcher(aux=True)
    r, w = pipe
    pid = inst.proc.pid
    names = FdNames()
    c = inst.connect_negotiated(oob=False)

    def run(name: str, args: dict[str, Any], req_id: str, fd: Optional[int] = None) -> bytes:
        return names.mask(send_with_fd(c, name, args, req_id, fd))

    assert run("add-fd", {}, "1") == err("1", "No file descriptor supplied via SCM_RIGHTS")
    assert run("add-fd", {"opaque": "hello"}, "2", r) == ok("2", b'{"fd": "FD0", "fdset-id": 0}')
    assert run("add-fd", {"fdset-id": 3}, "3", w) == ok("3", b'{"fd": "FD1", "fdset-id": 3}')
    assert run("add-fd", {"fdset-id": 3, "opaque": "x"}, "4", r) == ok(
        "4", b'{"fd": "FD2", "fdset-id": 3}'
    )
    assert run("add-fd", {"fdset-id": -1}, "5", r) == err(
        "5", "Parameter 'fdset-id' expects a non-negative value"
    )
    r_ino, w_ino = os.fstat(r).st_ino, os.fstat(w).st_ino
    assert proc_fd_target(pid, names.number("FD0")) == f"pipe:[{r_ino}]"
    assert proc_fd_target(pid, names.number("FD1")) == f"pipe:[{w_ino}]"
    assert proc_fd_target(pid, names.number("FD2")) == f"pipe:[{r_ino}]"

    both = (
        b'[{"fds": [{"fd": "FD1"}, {"fd": "FD2", "opaque": "x"}], "fdset-id": 3}, '
        b'{"fds": [{"fd": "FD0", "opaque": "hello"}], "fdset-id": 0}]'
    )
    assert run("query-fdsets", {}, "6") == ok("6", both)
    assert run("remove-fd", {"fdset-id": 3, "fd": 999}, "7") == err(
        "7", "File descriptor named 'fdset-id:3, fd:999' not found"
    )
    assert run("remove-fd", {"fdset-id": 7}, "8") == err(
        "8", "File descriptor named 'fdset-id:7' not found"
    )
    assert run("query-fdsets", {}, "9") == ok("9", both)

    fd1 = names.number("FD1")
    assert run("remove-fd", {"fdset-id": 3, "fd": fd1}, "10") == ok("10")
    assert proc_fd_target(pid, fd1) != f"pipe:[{w_ino}]", "a removed fd is closed"
    # the other fd of set 3 stays: a client is connected
    assert run("query-fdsets", {}, "11") == ok(
        "11",
        b'[{"fds": [{"fd": "FD2", "opaque": "x"}], "fdset-id": 3}, '
        b'{"fds": [{"fd": "FD0", "opaque": "hello"}], "fdset-id": 0}]',
    )
    assert run("remove-fd", {"fdset-id": 0}, "12") == ok("12")
    only3 = b'[{"fds": [{"fd": "FD2", "opaque": "x"}], "fdset-id": 3}]'
    assert run("query-fdsets", {}, "13") == ok("13", only3)

    # another monitor's client comes and goes: ours is still connected
    aux = inst.connect_negotiated(inst.path(AUX_SOCKET), oob=False)
    aux.close()
    assert run("query-fdsets", {}, "14") == ok("14", only3)

    # no client anywhere: sets nothing uses are freed
    c.close()
    c = inst.connect_negotiated(oob=False)
    assert run("query-fdsets", {}, "15") == ok("15", b"[]")
    assert proc_fd_target(pid, names.number("FD2")) != f"pipe:[{r_ino}]"


def test_getfd_with_the_legacy_client(inst: Instance, pipe: tuple[int, int]) -> None:
    """qemu.qmp's legacy ``send_fd_scm`` sends the fd with a lone space
    before the command; the fd waits in the chardev for the next getfd."""
    r, _ = pipe
    qmp = inst.legacy()
    qmp.connect()
    qmp.send_fd_scm(r)
    assert qmp.cmd("getfd", fdname="legacy") == {}
    assert qmp.cmd("closefd", fdname="legacy") == {}
