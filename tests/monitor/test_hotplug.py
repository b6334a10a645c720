"""Monitor hotplug (monitor-add, monitor-remove, query-monitors) over real sockets.

Emulator only: QEMU 7.2 has no such commands.  Every test runs the emulator
as a process with QEMU's argv and talks to it with the raw line client of the
integration harness (and qemu.qmp for the churn test's traffic).
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.harness import (
    AUX_SOCKET,
    Instance,
    QMPLine,
    launched,
)

CLI_EXTRA = [
    "-chardev",
    "socket,id=cli1,path={tmpdir}/cli1.sock,server=on,wait=off",
    "-mon",
    "chardev=cli1,mode=control,id=climon",
]


@pytest.fixture
def inst() -> Iterator[Instance]:
    with launched("emu", CLI_EXTRA, aux=True) as instance:
        yield instance


def _err(reply: Any) -> tuple[str, str]:
    assert "error" in reply, reply
    return reply["error"]["class"], reply["error"]["desc"]


def _add_socket_monitor(main: QMPLine, inst: Instance, mon_id: str, chr_id: str, **kw: Any) -> str:
    path = os.path.join(inst.tmpdir, f"{chr_id}.sock")
    ret = main.ok(
        "chardev-add",
        {
            "id": chr_id,
            "backend": {
                "type": "socket",
                "data": {"addr": {"type": "unix", "data": {"path": path}}, "server": True},
            },
        },
    )
    assert ret == {}
    assert main.ok("monitor-add", {"id": mon_id, "chardev": chr_id, **kw}) == {}
    return path


def _monitors(main: QMPLine) -> list[dict[str, Any]]:
    result = main.ok("query-monitors")
    assert isinstance(result, list)
    return result


def _wait_listed(main: QMPLine, mon_id: str) -> dict[str, Any]:
    """The monitor joins mon_list from the I/O thread's setup BH; a client's
    greeting proves it ran, so callers connect first.  Here: just look."""
    entries = [m for m in _monitors(main) if m.get("id") == mon_id]
    assert len(entries) == 1, _monitors(main)
    return entries[0]


def test_full_cycle_twice_on_the_same_names(inst: Instance) -> None:
    main = inst.connect_negotiated()
    for _ in range(2):
        path = _add_socket_monitor(main, inst, "dyn0", "dynchr0")
        client = inst.connect(path, name="dyn0")
        greeting = client.negotiate()[1]
        assert greeting["QMP"]["capabilities"] == ["oob"]
        assert client.ok("query-version")["qemu"]["major"] == 7
        listed = {m.get("id", "<none>"): m for m in _monitors(main)}
        assert listed["dyn0"] == {
            "id": "dyn0",
            "mode": "control",
            "chardev": "dynchr0",
            "dynamic": True,
        }
        assert listed["climon"] == {
            "id": "climon",
            "mode": "control",
            "chardev": "cli1",
            "dynamic": False,
        }
        assert listed["<none>"]["dynamic"] is False
        client.close()
        assert main.ok("monitor-remove", {"id": "dyn0"}) == {}
        assert main.ok("chardev-remove", {"id": "dynchr0"}) == {}
        assert "dyn0" not in [m.get("id") for m in _monitors(main)]


def test_errors(inst: Instance) -> None:
    main = inst.connect_negotiated()
    _add_socket_monitor(main, inst, "dyn1", "dynchr1")
    cases = [
        ("monitor-add", {"id": "dyn1", "chardev": "cli1"}, "monitor 'dyn1' already exists"),
        ("monitor-add", {"id": "climon", "chardev": "x"}, "monitor 'climon' already exists"),
        ("monitor-add", {"id": "dyn2", "chardev": "nosuch"}, "chardev 'nosuch' not found"),
        ("monitor-add", {"id": "dyn2", "chardev": "cli1"}, "Device 'cli1' is in use"),
        ("monitor-add", {"id": "dyn2"}, "Parameter 'chardev' is missing"),
        ("monitor-add", {"id": "dyn2", "chardev": "c", "pretty": 1},
         "Invalid parameter type for 'pretty', expected: boolean"),
        ("monitor-remove", {"id": "nosuch"}, "monitor 'nosuch' not found"),
        ("monitor-remove", {"id": "climon"}, "monitor 'climon' was not dynamically added"),
        ("chardev-remove", {"id": "dynchr1"}, "Chardev 'dynchr1' is busy"),
    ]  # fmt: skip
    for name, args, desc in cases:
        assert _err(main.execute(name, args)) == ("GenericError", desc), (name, args)
    assert main.ok("monitor-remove", {"id": "dyn1"}) == {}
    assert main.ok("chardev-remove", {"id": "dynchr1"}) == {}


def test_self_removal_gets_its_reply_then_eof(inst: Instance) -> None:
    main = inst.connect_negotiated()
    path = _add_socket_monitor(main, inst, "selfmon", "selfchr")
    client = inst.connect(path, name="self")
    client.negotiate()
    client.send(b'{"execute": "monitor-remove", "arguments": {"id": "selfmon"}, "id": "bye"}\n')
    assert client.recv_msg()[0] == b'{"return": {}, "id": "bye"}\r\n'
    assert client.recv_until_eof() == []
    assert "selfmon" not in [m.get("id") for m in _monitors(main)]
    assert main.ok("chardev-remove", {"id": "selfchr"}) == {}
    assert main.ok("query-status")["status"] == "running"


def test_removal_from_another_monitor_drops_queued_requests(inst: Instance) -> None:
    main = inst.connect_negotiated()
    aux = inst.connect_negotiated(inst.path(AUX_SOCKET))
    path = _add_socket_monitor(main, inst, "victim", "victimchr")
    victim = inst.connect(path, name="victim")
    victim.negotiate()
    # the victim itself blocks the main loop, so the dispatcher moves it to
    # the back of mon_list: the remover's request is served before its queue
    victim.send_cmd("x-oob-test", {"lock": True}, req_id="lock")
    victim.assert_silent()
    queued = [victim.send_cmd("query-name", req_id=f"q{i}") for i in range(3)]
    remove_id = main.send_cmd("monitor-remove", {"id": "victim"})
    main.assert_silent()
    assert "return" in aux.execute("x-oob-test", {"lock": False}, oob=True)
    assert main.recv_reply(remove_id)[1] == {"return": {}, "id": remove_id}
    seen = victim.recv_until_eof()
    ids = [m.get("id") for _, m in seen if isinstance(m, dict)]
    assert ids in ([], ["lock"]), seen  # the running request may finish first
    assert not set(queued) & set(ids)
    assert main.ok("chardev-remove", {"id": "victimchr"}) == {}
    assert main.ok("query-name") == {}


def test_large_reply_and_events_only_after_negotiation(inst: Instance) -> None:
    main = inst.connect_negotiated()
    path = _add_socket_monitor(main, inst, "big", "bigchr", pretty=True)
    client = inst.connect(path, name="big")
    client.recv_greeting()
    main.ok("stop")
    main.ok("cont")
    client.assert_silent()  # negotiating: STOP/RESUME were dropped, not queued
    assert "return" in client.execute("qmp_capabilities")
    schema = client.ok("query-qmp-schema")
    assert isinstance(schema, list) and len(schema) > 100
    main.ok("stop")
    assert client.recv_event("STOP")[1]["event"] == "STOP"
    main.ok("cont")
    assert client.recv_event("RESUME")[1]["event"] == "RESUME"
    client.close()
    main.ok("monitor-remove", {"id": "big"})
    main.ok("chardev-remove", {"id": "bigchr"})


def _fd_and_thread_counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


@pytest.mark.timeout(120)
def test_churn_leaves_nothing_behind(inst: Instance) -> None:
    main = inst.connect_negotiated()
    other = inst.connect_negotiated(inst.path("cli1.sock"))
    baseline_monitors = _monitors(main)
    baseline = _fd_and_thread_counts(inst.proc.pid)
    for i in range(32):
        path = _add_socket_monitor(main, inst, f"churn{i % 3}", f"churnchr{i % 3}")
        client = inst.connect(path, name=f"churn{i}")
        client.negotiate(oob=bool(i % 2))
        assert client.ok("query-name") == {}
        assert other.ok("query-status")["running"] is True  # traffic elsewhere
        if i % 2:
            client.close()
            main.ok("monitor-remove", {"id": f"churn{i % 3}"})
        else:
            client.send_cmd("query-version", req_id="in-flight")
            main.ok("monitor-remove", {"id": f"churn{i % 3}"})
            client.recv_until_eof()
        main.ok("chardev-remove", {"id": f"churnchr{i % 3}"})
    assert _monitors(main) == baseline_monitors
    assert _fd_and_thread_counts(inst.proc.pid) == baseline
    with pytest.raises(OSError):
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(os.path.join(inst.tmpdir, "churnchr0.sock"))
        finally:
            probe.close()


def test_hmp_info_monitors_matches_query_monitors(inst: Instance) -> None:
    main = inst.connect_negotiated()
    _add_socket_monitor(main, inst, "shown", "shownchr")
    text = main.ok("human-monitor-command", {"command-line": "info monitors"})
    assert isinstance(text, str)
    for mon in _monitors(main):
        assert mon["chardev"] in text
    assert "shown" in text
    main.ok("monitor-remove", {"id": "shown"})
    main.ok("chardev-remove", {"id": "shownchr"})
