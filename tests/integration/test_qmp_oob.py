"""Out-of-band execution, backpressure and connection handling against both targets.

Ports qmp-test.c's ``test_qmp_oob`` and adds what the monitor threading model
promises on top of it: OOB replies overtake in-band ones while the main loop
is blocked, the request queue suspends the monitor when full (QMP_REQ_QUEUE_LEN_MAX
= 8), a disconnect drops queued requests, and a socket chardev serves one
client at a time.

Blocking the main loop differs per target (``harness.make_blocker``): QEMU
runs ``blockdev-add`` of a blkdebug node whose config file is a FIFO; the
emulator runs ``x-oob-test {"lock": true}``, released by an OOB
``x-oob-test {"lock": false}`` on a second QMP monitor.  Both targets are
started with that second monitor (``aux=True``) so their argv stay identical.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.integration.conftest import Launcher
from tests.integration.harness import (
    NEGOTIATION_DESC,
    Instance,
    QMPLine,
    collect_replies,
    ids_of,
    make_blocker,
)

MIGRATE_PAUSE_DESC = "migrate-pause is currently only supported during postcopy-active state"

#: QMP_REQ_QUEUE_LEN_MAX in include/monitor/monitor.h.
QUEUE_LEN_MAX = 8


def error_line(req_id: bytes, desc: str, cls: str = "GenericError") -> bytes:
    """QEMU 7.2's error reply layout for a request that had an id (JSON text *req_id*)."""
    return (
        b'{"id": ' + req_id + b', "error": {"class": "' + cls.encode() + b'", "desc": "'
        + desc.encode() + b'"}}\r\n'
    )  # fmt: skip


@pytest.fixture
def oob_inst(launcher: Launcher) -> Instance:
    """An instance with the auxiliary monitor the emulator's blocker needs."""
    return launcher(aux=True)


def test_oob_greeting_and_negotiation(inst: Instance) -> None:
    """qmp-test.c: 'oob' is offered on a socket chardev; a fake capability fails; oob works."""
    client = inst.connect()
    _, greeting = client.recv_greeting()
    assert greeting["QMP"]["capabilities"] == ["oob"]
    client.send(
        b"{ 'execute': 'qmp_capabilities',   'arguments': { 'enable': [ 'cap-does-not-exist' ] } }"
    )
    assert client.recv_msg()[0] == (
        b'{"error": {"class": "GenericError", "desc": '
        b"\"Parameter 'null' does not accept value 'cap-does-not-exist'\"}}\r\n"
    )
    client.send(b"{ 'execute': 'qmp_capabilities',   'arguments': { 'enable': [ 'oob' ] } }")
    assert client.recv_msg()[0] == b'{"return": {}}\r\n'


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        # qmp-test.c uses query-cpus-fast; any command without allow-oob will do
        (
            b"{ 'exec-oob': 'query-name', 'id': 1 }",
            error_line(b"1", "The command query-name does not support OOB"),
        ),
        (
            b"{ 'exec-oob': 'query-status' }",
            b'{"error": {"class": "GenericError", "desc": '
            b'"The command query-status does not support OOB"}}\r\n',
        ),
        (
            b'{"exec-oob": "qmp_capabilities", "id": 2}',
            error_line(b"2", "The command qmp_capabilities does not support OOB"),
        ),
        (
            b'{"exec-oob": "no-such-cmd", "id": 3}',
            error_line(b"3", "The command no-such-cmd has not been found", "CommandNotFound"),
        ),
        (
            b'{"exec-oob": 1, "id": 4}',
            error_line(b"4", "QMP input member 'exec-oob' must be a string"),
        ),
        (
            b'{"exec-oob": "query-name", "execute": "query-name", "id": 5}',
            error_line(b"5", "QMP input member 'execute' clashes with 'exec-oob'"),
        ),
        (
            b'{"execute": "query-name", "exec-oob": "query-name", "id": 6}',
            error_line(b"6", "QMP input member 'execute' clashes with 'exec-oob'"),
        ),
        (
            b'{"exec-oob": "migrate-pause", "arguments": [], "id": 7}',
            error_line(b"7", "QMP input member 'arguments' must be an object"),
        ),
        (
            b'{"exec-oob": "migrate-pause", "arguments": {"x": 1}, "id": 8}',
            error_line(b"8", "Parameter 'x' is unexpected"),
        ),
        (
            b'{"exec-oob": "migrate-pause", "id": 9, "extra": 1}',
            error_line(b"9", "QMP input member 'extra' is unexpected"),
        ),
        (b'{"exec-oob": "migrate-pause", "id": 10}', error_line(b"10", MIGRATE_PAUSE_DESC)),
        # an allow-oob command may still run in-band
        (b'{"execute": "migrate-pause", "id": 11}', error_line(b"11", MIGRATE_PAUSE_DESC)),
    ],
)
def test_exec_oob_errors(inst: Instance, request_bytes: bytes, reply: bytes) -> None:
    """exec-oob with OOB enabled: validation errors and migrate-pause outside postcopy."""
    client = inst.connect_negotiated(oob=True)
    client.send(request_bytes)
    assert client.recv_msg()[0] == reply
    assert client.ok("query-name") == {}  # recovered


def test_exec_oob_without_oob_capability(inst: Instance) -> None:
    """Without the oob capability, exec-oob is just an unexpected member."""
    client = inst.connect_negotiated(oob=False)
    client.send(b'{"exec-oob": "migrate-pause", "id": "m"}')
    assert client.recv_msg()[0] == error_line(b'"m"', "QMP input member 'exec-oob' is unexpected")
    client.send(b'{"exec-oob": "migrate-pause", "execute": "query-name", "id": "n"}')
    assert client.recv_msg()[0] == error_line(b'"n"', "QMP input member 'exec-oob' is unexpected")


def test_exec_oob_during_negotiation(inst: Instance) -> None:
    """OOB is not accepted before qmp_capabilities has enabled it."""
    client = inst.connect()
    client.recv_greeting()
    client.send(b'{"exec-oob": "qmp_capabilities", "id": 1}')
    assert client.recv_msg()[0] == error_line(b"1", "QMP input member 'exec-oob' is unexpected")
    client.send(b'{"exec-oob": "migrate-pause", "id": 2}')
    assert client.recv_msg()[0] == error_line(b"2", "QMP input member 'exec-oob' is unexpected")


def test_oob_with_async_qmp_client(inst: Instance) -> None:
    """qemu.qmp's QMPClient enables OOB itself and reports OOB command errors."""
    from qemu.qmp import ExecuteError, QMPClient

    async def scenario() -> None:
        qmp = QMPClient("it-oob")
        await qmp.connect(inst.mon_path)
        try:
            assert qmp.greeting is not None and "oob" in qmp.greeting.QMP.capabilities
            with pytest.raises(ExecuteError) as info:
                await qmp.execute("migrate-pause", oob=True)
            assert info.value.error_class == "GenericError"
            assert str(info.value) == MIGRATE_PAUSE_DESC
            assert await qmp.execute("query-name") == {}
        finally:
            await qmp.disconnect()

    asyncio.run(scenario())


def test_oob_overtakes_blocked_in_band(oob_inst: Instance) -> None:
    """qmp-test.c: an OOB reply overtakes a slow in-band command and those queued behind it;
    malformed in-band input and parse errors still fail in-band, in order."""
    client = oob_inst.connect_negotiated(oob=True)
    blocker = make_blocker(oob_inst)

    blocker.block(client, "ib-blocks-1")
    client.send(b"{ 'execute': 'query-name', 'id': 'ib-quick-1' }")
    client.send(b"{ 'exec-oob': 'migrate-pause', 'id': 'oob-1' }")
    assert client.recv_msg()[0] == error_line(b'"oob-1"', MIGRATE_PAUSE_DESC)
    blocker.unblock()
    assert client.recv_msg()[0] == b'{"return": {}, "id": "ib-blocks-1"}\r\n'
    assert client.recv_msg()[0] == b'{"return": {}, "id": "ib-quick-1"}\r\n'

    # Even malformed in-band command fails in-band
    blocker.block(client, "blocks-2")
    client.send(b"{ 'id': 'err-2' }")
    blocker.unblock()
    assert client.recv_msg()[0] == b'{"return": {}, "id": "blocks-2"}\r\n'
    assert client.recv_msg()[0] == error_line(b'"err-2"', "QMP input lacks member 'execute'")

    # A parse error (no id) is queued in-band too: the OOB reply overtakes it
    blocker.block(client, "blocks-3")
    client.send(b"{]\n{ 'exec-oob': 'migrate-pause', 'id': 'oob-3' }")
    assert client.recv_msg()[0] == error_line(b'"oob-3"', MIGRATE_PAUSE_DESC)
    blocker.unblock()
    assert client.recv_msg()[0] == b'{"return": {}, "id": "blocks-3"}\r\n'
    assert client.recv_msg()[0] == (
        b'{"error": {"class": "GenericError", "desc": "JSON parse error, expecting value"}}\r\n'
    )


def test_x_oob_test_lock_released_out_of_band(oob_inst: Instance) -> None:
    """The emulator's test command: in-band ``lock`` blocks until an OOB ``unlock``
    on the same monitor releases it.  QEMU 7.2 has no such command."""
    client = oob_inst.connect_negotiated(oob=True)
    if oob_inst.target == "qemu":
        client.send(b'{"execute": "x-oob-test", "arguments": {"lock": true}, "id": 1}')
        assert client.recv_msg()[0] == error_line(
            b"1", "The command x-oob-test has not been found", "CommandNotFound"
        )
        return
    client.send_cmd("x-oob-test", {"lock": True}, req_id="lock")
    client.send_cmd("query-name", req_id="after")
    client.assert_silent()  # the main loop is blocked
    client.send_cmd("x-oob-test", {"lock": False}, req_id="unlock", oob=True)
    replies = collect_replies(client, ["lock", "after", "unlock"])
    assert all(msg.get("return") == {} for _, msg in replies), replies
    order = ids_of(replies)
    assert order.index("lock") < order.index("after"), order  # in-band order holds


def test_backpressure_with_oob(oob_inst: Instance) -> None:
    """40 pipelined in-band requests while the main loop is blocked: the queue fills,
    the monitor stops reading (even an OOB request waits), and after unblocking
    every request is answered, in order."""
    client = oob_inst.connect_negotiated(oob=True)
    blocker = make_blocker(oob_inst)
    blocker.block(client, "blk")
    n = 40
    client.send(b"".join(b'{"execute": "query-name", "id": %d}\n' % i for i in range(n)))
    client.send(b'{"exec-oob": "migrate-pause", "id": "oob"}\n')
    client.assert_silent()  # the OOB request is stuck behind the full queue
    blocker.unblock()
    replies = [client.recv_msg() for _ in range(n + 2)]
    order = ids_of(replies)
    assert order[0] == "blk"
    assert [i for i in order if i != "oob"] == ["blk", *range(n)]
    for raw, msg in replies[1:]:
        if msg["id"] != "oob":
            assert raw == b'{"return": {}, "id": %d}\r\n' % msg["id"]
    assert replies[order.index("oob")][0] == error_line(b'"oob"', MIGRATE_PAUSE_DESC)
    # The OOB request was read only once all 40 had been queued, i.e. when at
    # most QUEUE_LEN_MAX were still queued and one was running.
    assert order.index("oob") >= 1 + n - QUEUE_LEN_MAX - 1, order
    client.assert_silent(0.1)


def test_pipelining_without_oob_is_serial(inst: Instance) -> None:
    """Without OOB the monitor reads one request at a time: even an exec-oob
    request pipelined after 40 others is answered last."""
    client = inst.connect_negotiated(oob=False)
    n = 40
    client.send(b"".join(b'{"execute": "query-name", "id": %d}' % i for i in range(n)))
    client.send(b'{"exec-oob": "migrate-pause", "id": "oob"}')
    for i in range(n):
        assert client.recv_msg()[0] == b'{"return": {}, "id": %d}\r\n' % i
    assert client.recv_msg()[0] == error_line(b'"oob"', "QMP input member 'exec-oob' is unexpected")


def test_disconnect_with_requests_queued(oob_inst: Instance) -> None:
    """Disconnecting drops queued requests unanswered; a new client gets a fresh
    greeting at once (the I/O thread is not blocked), its negotiation waits for
    the main loop, and (QEMU 7.2) the reply of the command that was running at
    the disconnect goes to the new client."""
    first = oob_inst.connect_negotiated(oob=True)
    blocker = make_blocker(oob_inst)
    blocker.block(first, "blk")
    first.send(b"".join(b'{"execute": "query-name", "id": "queued-%d"}' % i for i in range(5)))
    first.close()

    second = oob_inst.connect()
    second.recv_greeting()
    second.send(b'{"execute": "qmp_capabilities", "id": "neg"}')
    second.assert_silent()  # qmp_capabilities is in-band: it waits for the main loop
    blocker.unblock()
    assert second.recv_msg()[0] == b'{"return": {}, "id": "blk"}\r\n'
    assert second.recv_msg()[0] == b'{"return": {}, "id": "neg"}\r\n'
    second.send(b'{"execute": "query-name", "id": "fresh"}')
    assert second.recv_msg()[0] == b'{"return": {}, "id": "fresh"}\r\n'  # no queued-N replies


def test_reconnect_restarts_negotiation(inst: Instance) -> None:
    """Each connection gets its own greeting and starts negotiating again."""
    first = inst.connect_negotiated(oob=True)
    assert first.ok("query-name") == {}
    first.close()
    second = inst.connect()
    second.recv_greeting()
    second.send(b'{"execute": "query-name", "id": 1}')
    assert second.recv_msg()[0] == error_line(b"1", NEGOTIATION_DESC, "CommandNotFound")


def test_one_client_at_a_time(inst: Instance) -> None:
    """A second connection is not served (no greeting, input not read) until the first closes."""
    first = inst.connect(name="first")
    first.recv_greeting()
    second = inst.connect(name="second")
    second.assert_silent()
    second.send(b'{"execute": "qmp_capabilities", "id": "second-neg"}')
    second.assert_silent()
    first.send(b'{"execute": "qmp_capabilities", "id": "first-neg"}')
    assert first.recv_msg()[0] == b'{"return": {}, "id": "first-neg"}\r\n'
    assert first.ok("query-name") == {}
    first.close()
    second.recv_greeting()
    assert second.recv_msg()[0] == b'{"return": {}, "id": "second-neg"}\r\n'
    assert second.ok("query-name") == {}


def _negotiated_pair(inst: Instance) -> tuple[QMPLine, QMPLine]:
    """Negotiated clients on the primary and the auxiliary monitor."""
    return inst.connect_negotiated(), inst.connect_negotiated(inst.path("aux.sock"))


def test_events_reach_every_monitor(oob_inst: Instance) -> None:
    """An event is broadcast to every negotiated QMP monitor."""
    primary, aux = _negotiated_pair(oob_inst)
    primary.ok("stop")
    assert primary.recv_event("STOP")[1]["event"] == "STOP"
    assert aux.recv_event("STOP")[1]["event"] == "STOP"
