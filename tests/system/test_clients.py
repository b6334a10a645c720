"""Clients over real UNIX sockets: one that stops reading must not stall the
others, and qemu.qmp's legacy synchronous client works end to end.

Both run against real QEMU 7.2 too (skipped when it is not installed).
"""

from __future__ import annotations

import socket
import time
from typing import Any

from tests.integration.conftest import Launcher
from tests.integration.harness import AUX_SOCKET, DEADLINE, QMPLine

QUERY_STATUS_RUNNING = {"status": "running", "singlestep": False, "running": True}

#: replies the stuck client leaves unread: far beyond what the socket buffers
#: of both ends hold (net.core.wmem_max is 208 KiB by default), so the
#: server's writes to it would block long before the last reply
STUCK_BACKLOG = 4 * 1024 * 1024


def test_stuck_client_does_not_block_another_monitor(launcher: Launcher) -> None:
    """A client floods ``query-qmp-schema`` and reads nothing: its replies
    pile up in the monitor's output buffer (written without blocking, the
    rest when the socket drains).  A client of another monitor keeps getting
    prompt answers meanwhile, and the stuck client finally gets every reply,
    whole and in order."""
    inst = launcher(aux=True)
    other = inst.connect_negotiated(inst.path(AUX_SOCKET))
    raw, _ = other.recv_reply(other.send_cmd("query-qmp-schema"))
    count = STUCK_BACKLOG // len(raw) + 1

    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(inst.mon_path)
    stuck = QMPLine(sock, "stuck")
    try:
        _flood_and_check(stuck, other, count)
    finally:
        stuck.close()


def _flood_and_check(stuck: QMPLine, other: QMPLine, count: int) -> None:
    stuck.negotiate(oob=False)
    stuck.send(b"".join(b'{"execute": "query-qmp-schema", "id": %d}\n' % i for i in range(count)))

    # the dispatcher serves both monitors; every answer here means it did
    # not block on the stuck client's full socket
    for _ in range(2 * count):
        start = time.monotonic()
        assert other.execute("query-status", deadline=5)["return"] == QUERY_STATUS_RUNNING
        assert time.monotonic() - start < 5

    total = 0
    for i in range(count):
        raw, reply = stuck.recv_reply(i, deadline=30)
        assert isinstance(reply["return"], list) and reply["return"]
        total += len(raw)
    assert total > STUCK_BACKLOG
    assert other.execute("query-status")["return"] == QUERY_STATUS_RUNNING


def test_legacy_client(launcher: Launcher) -> None:
    """qemu.qmp's ``QEMUMonitorProtocol``: connect (greeting and
    negotiation), cmd, cmd_raw with an error, and events pulled and listed."""
    inst = launcher()
    qmp = inst.legacy()
    greeting = qmp.connect()
    assert set(greeting["QMP"]) == {"version", "capabilities"}
    assert qmp.cmd("query-status") == QUERY_STATUS_RUNNING
    assert qmp.cmd_raw("no-such-command") == {
        "error": {
            "class": "CommandNotFound",
            "desc": "The command no-such-command has not been found",
        }
    }
    assert qmp.cmd("stop") == {}
    event = qmp.pull_event(wait=DEADLINE)
    assert event is not None and event["event"] == "STOP"
    assert qmp.cmd("cont") == {}
    assert qmp.cmd("system_reset") == {}
    events: list[dict[str, Any]] = []
    end = time.monotonic() + DEADLINE
    while len(events) < 2 and time.monotonic() < end:
        events += qmp.get_events(wait=max(end - time.monotonic(), 0.001))
    assert [e["event"] for e in events] == ["RESUME", "RESET"]
    assert events[1]["data"] == {"guest": False, "reason": "host-qmp-system-reset"}
    qmp.clear_events()
    assert qmp.get_events() == []
    assert qmp.cmd("query-status") == QUERY_STATUS_RUNNING
