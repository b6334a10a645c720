"""monitor-qmp / monitor-hmp objects as QEMU 11.1 merged them, over real sockets.

The shape of the successor series' functional test (hotplug.md section 3.4):
add/delete cycle, auto-delete, reconnect, self-deletion refused, HMP
refused, a stress loop; plus -object on the command line, qom-list, qom-get,
qom-list-types and query-qmp-schema.  The main monitor is the raw line
client of the integration harness; monitors under test are driven by
qemu.qmp's legacy client.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from qemu.qmp import QMPClient

from tests.integration.harness import DEADLINE, Instance, QMPLine, launched

CLI_EXTRA = [
    "-chardev",
    "socket,id=clichr,path={tmpdir}/cliobj.sock,server=on,wait=off",
    "-object",
    "monitor-qmp,id=climon,chardev=clichr,close-action=delete",
]


@pytest.fixture
def inst() -> Iterator[Instance]:
    with launched("emu", CLI_EXTRA) as instance:
        yield instance


def _err(reply: Any) -> tuple[str, str]:
    assert "error" in reply, reply
    return reply["error"]["class"], reply["error"]["desc"]


def _add(main: QMPLine, inst: Instance, mon: str, chr: str, **props: Any) -> str:
    path = os.path.join(inst.tmpdir, f"{chr}.sock")
    backend = {
        "type": "socket",
        "data": {"addr": {"type": "unix", "data": {"path": path}}, "server": True, "wait": False},
    }
    assert main.ok("chardev-add", {"id": chr, "backend": backend}) == {}
    args = {"qom-type": "monitor-qmp", "id": mon, "chardev": chr, **props}
    assert main.ok("object-add", args) == {}
    return path


def _delete(main: QMPLine, mon: str, chr: str) -> None:
    """object-del, retried while the I/O thread's setup is pending (the
    successor's answer to removal during setup)."""
    end = time.monotonic() + DEADLINE
    while True:
        reply = main.execute("object-del", {"id": mon})
        if "return" in reply or time.monotonic() > end:
            break
        assert _err(reply) == ("GenericError", "monitor is still initializing")
    assert "return" in reply, reply
    assert main.ok("chardev-remove", {"id": chr}) == {}


def _objects(main: QMPLine) -> list[str]:
    listing = main.ok("qom-list", {"path": "/objects"})
    assert isinstance(listing, list)
    return [p["name"] for p in listing if p["type"].startswith("child<")]


def _chardevs(main: QMPLine) -> list[str]:
    info = main.ok("query-chardev")
    assert isinstance(info, list)
    return [c["label"] for c in info]


def _wait(cond: Any, what: str) -> None:
    end = time.monotonic() + DEADLINE
    while not cond():
        assert time.monotonic() < end, f"timed out waiting for {what}"
        time.sleep(0.02)  # polling the emulator over QMP, as the successor's test does


def test_add_delete_cycle_twice_on_the_same_names(inst: Instance) -> None:
    main = inst.connect_negotiated()
    for _ in range(2):
        path = _add(main, inst, "hotplug-mon", "hotplug-chr")
        qmp = inst.legacy(path)
        greeting = qmp.connect(negotiate=True)
        assert "version" in greeting["QMP"] and greeting["QMP"]["capabilities"] == ["oob"]
        assert "qemu" in qmp.cmd("query-version")
        assert "hotplug-mon" in _objects(main)
        qmp.close()
        _delete(main, "hotplug-mon", "hotplug-chr")
        assert "hotplug-mon" not in _objects(main)


def test_properties_types_and_schema(inst: Instance) -> None:
    main = inst.connect_negotiated()
    _add(main, inst, "m1", "c1", pretty=True)
    assert main.ok("qom-list", {"path": "/objects/m1"}) == [
        {"name": "type", "type": "string"},
        {"name": "chardev", "type": "string"},
        {"name": "pretty", "type": "bool"},
        {"name": "close-action", "type": "MonitorQMPCloseAction"},
    ]
    assert main.ok("qom-get", {"path": "/objects/m1", "property": "chardev"}) == "c1"
    assert main.ok("qom-get", {"path": "m1", "property": "pretty"}) is True
    assert main.ok("qom-get", {"path": "/objects/m1", "property": "close-action"}) == "none"
    assert main.ok("qom-get", {"path": "/objects/m1", "property": "type"}) == "monitor-qmp"
    assert main.ok("qom-get", {"path": "/objects", "property": "m1"}) == "/objects/m1"
    types = main.ok("qom-list-types", {"implements": "user-creatable"})
    assert {"name": "monitor-qmp", "parent": "monitor"} in types
    assert {"name": "monitor-hmp", "parent": "monitor"} in types
    assert all(t["name"] != "monitor" for t in types)  # abstract: only with abstract=true
    abstract = main.ok("qom-list-types", {"abstract": True, "implements": "monitor"})
    assert {"name": "monitor", "abstract": True, "parent": "object"} in abstract
    schema = {e["name"]: e for e in main.ok("query-qmp-schema")}
    add = schema["object-add"]
    options = schema[add["arg-type"]]
    branches = {v["case"] for v in options["variants"]}
    assert branches == {"monitor-hmp", "monitor-qmp"}
    qmp_props = schema[next(v["type"] for v in options["variants"] if v["case"] == "monitor-qmp")]
    assert [m["name"] for m in qmp_props["members"]] == ["chardev", "pretty", "close-action"]
    _delete(main, "m1", "c1")


def test_errors(inst: Instance) -> None:
    main = inst.connect_negotiated()
    _add(main, inst, "e1", "echr")
    cases = [
        ({"qom-type": "monitor-qmp", "id": "e2", "chardev": "nosuch"},
         'chardev "nosuch" not found'),
        ({"qom-type": "monitor-qmp", "id": "e2", "chardev": "echr"}, "Device 'echr' is in use"),
        ({"qom-type": "monitor-qmp", "id": "e1", "chardev": "x"},
         "attempt to add duplicate property 'e1' to object (type 'container')"),
        ({"qom-type": "monitor-qmp", "id": "2x", "chardev": "x"},
         "Parameter 'id' expects an identifier"),
        ({"qom-type": "monitor-qmp", "id": "e2"}, "Parameter 'chardev' is missing"),
        ({"qom-type": "monitor-qmp", "id": "e2", "chardev": "x", "close-action": "x"},
         "Parameter 'close-action' does not accept value 'x'"),
        ({"qom-type": "monitor-qmp", "id": "e2", "chardev": "x", "readline": True},
         "Parameter 'readline' is unexpected"),
        ({"qom-type": "nosuch", "id": "e2"}, "Parameter 'qom-type' does not accept value 'nosuch'"),
    ]  # fmt: skip
    for args, desc in cases:
        assert _err(main.execute("object-add", args)) == ("GenericError", desc), args
    assert _err(main.execute("object-del", {"id": "nosuch"})) == (
        "GenericError",
        "object 'nosuch' not found",
    )
    assert _err(main.execute("qom-get", {"path": "/objects/e1", "property": "zz"})) == (
        "GenericError",
        "Property 'monitor-qmp.zz' not found",
    )
    assert _err(main.execute("qom-list", {"path": "/objects/nosuch"})) == (
        "DeviceNotFound",
        "Device '/objects/nosuch' not found",
    )
    # the seed design refuses what it did not create
    assert _err(main.execute("monitor-remove", {"id": "e1"})) == (
        "GenericError",
        "monitor 'e1' was not dynamically added",
    )
    assert "e1" in [m.get("id") for m in main.ok("query-monitors")]
    _delete(main, "e1", "echr")
    assert "e2" not in _objects(main)


def test_self_deletion_refused_then_deleted_from_main(inst: Instance) -> None:
    main = inst.connect_negotiated()
    path = _add(main, inst, "selfmon", "selfchr")
    qmp = inst.legacy(path)
    qmp.connect(negotiate=True)
    reply = qmp.cmd_raw("object-del", {"id": "selfmon"})
    assert reply["error"] == {
        "class": "GenericError",
        "desc": "Cannot delete the current QMP monitor",
    }
    assert "qemu" in qmp.cmd("query-version")  # still served
    qmp.close()
    _delete(main, "selfmon", "selfchr")


def test_hmp_object_refuses_deletion(inst: Instance) -> None:
    main = inst.connect_negotiated()
    assert main.ok("chardev-add", {"id": "hchr", "backend": {"type": "null", "data": {}}}) == {}
    args = {"qom-type": "monitor-hmp", "id": "hmon", "chardev": "hchr", "readline": False}
    assert main.ok("object-add", args) == {}
    assert main.ok("qom-get", {"path": "/objects/hmon", "property": "readline"}) is False
    assert _err(main.execute("object-del", {"id": "hmon"})) == (
        "GenericError",
        "Deleting HMP monitors is not supported",
    )
    assert "hmon" in _objects(main)
    assert {"id": "hmon", "mode": "readline", "chardev": "hchr", "dynamic": False} in main.ok(
        "query-monitors"
    )


def test_auto_delete_from_the_command_line(inst: Instance) -> None:
    """-object monitor-qmp,...,close-action=delete: the object, then its
    chardev, go when the client closes."""
    main = inst.connect_negotiated()
    assert "climon" in _objects(main) and "clichr" in _chardevs(main)
    qmp = inst.legacy(os.path.join(inst.tmpdir, "cliobj.sock"))
    qmp.connect(negotiate=True)
    assert qmp.cmd("query-status")["running"] is True
    assert "climon" in _objects(main) and "clichr" in _chardevs(main)
    qmp.close()
    _wait(lambda: "climon" not in _objects(main), "the object to go")
    _wait(lambda: "clichr" not in _chardevs(main), "the chardev to go")
    assert not os.path.exists(os.path.join(inst.tmpdir, "cliobj.sock"))


def test_auto_delete_added_at_runtime(inst: Instance) -> None:
    main = inst.connect_negotiated()
    path = _add(main, inst, "auto", "autochr", **{"close-action": "delete"})
    qmp = inst.legacy(path)
    qmp.connect(negotiate=True)
    assert main.ok("qom-get", {"path": "/objects/auto", "property": "close-action"}) == "delete"
    qmp.close()
    _wait(lambda: "auto" not in _objects(main), "the object to go")
    _wait(lambda: "autochr" not in _chardevs(main), "the chardev to go")


def test_reconnect_without_close_action(inst: Instance) -> None:
    main = inst.connect_negotiated()
    path = _add(main, inst, "rc", "rcchr")
    for _ in range(3):
        qmp = inst.legacy(path)
        qmp.connect(negotiate=True)
        assert "qemu" in qmp.cmd("query-version")
        qmp.close()
    assert "rc" in _objects(main)
    _delete(main, "rc", "rcchr")


def _counts(pid: int) -> tuple[int, int]:
    return len(os.listdir(f"/proc/{pid}/fd")), len(os.listdir(f"/proc/{pid}/task"))


class _Hammer:
    """A qemu.qmp client in its own thread looping query-qmp-schema, stop,
    cont until the monitor is deleted under it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.rounds = 0
        self.failure: list[BaseException] = []
        self.connected = threading.Event()
        self.thread = threading.Thread(target=self._run, name="hammer")
        self.thread.start()

    def _run(self) -> None:
        try:
            asyncio.run(self._loop())
        except BaseException as e:  # reported by the test
            self.failure.append(e)

    async def _loop(self) -> None:
        client = QMPClient("hammer")
        await client.connect(self.path)
        self.connected.set()
        try:
            while True:
                await client.execute("query-qmp-schema")
                await client.execute("stop")
                await client.execute("cont")
                self.rounds += 1
        except (ConnectionResetError, EOFError, BrokenPipeError, ConnectionError):
            pass
        except Exception as e:  # qemu.qmp wraps a lost connection
            if "disconnect" not in repr(e).lower() and "eof" not in repr(e).lower():
                name = type(e).__name__
                if name not in ("ExecInterruptedError", "StateError", "ProtocolError"):
                    raise
        finally:
            try:
                await client.disconnect()
            except (ConnectionResetError, EOFError, BrokenPipeError, ConnectionError):
                pass


@pytest.mark.timeout(180)
def test_stress_delete_under_a_busy_client(inst: Instance) -> None:
    main = inst.connect_negotiated()
    main.ok("qom-list", {"path": "/objects"})
    baseline = _counts(inst.proc.pid)
    rng = random.Random(11)
    for i in range(10):
        path = _add(main, inst, "stress-mon", "stress-chr")
        hammer = _Hammer(path)
        assert hammer.connected.wait(DEADLINE)
        time.sleep(rng.uniform(0, 0.5))  # the successor's random 0-0.5 s of traffic
        _delete(main, "stress-mon", "stress-chr")
        hammer.thread.join(DEADLINE)
        assert not hammer.thread.is_alive()
        assert not hammer.failure, hammer.failure
        # nothing lost on the main monitor, which saw every stop and cont
        assert main.ok("query-status")["status"] in ("running", "paused"), i
    main.ok("cont")
    assert main.ok("query-status")["running"] is True
    assert "stress-mon" not in _objects(main)
    assert _counts(inst.proc.pid) == baseline


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("monitor-qmp,id=m1,chardev=c1,zz=1", "Invalid parameter 'zz'"),
        ("monitor-qmp,id=m1", "Parameter 'chardev' is missing"),
        ("nosuch,id=x", "Parameter 'qom-type' does not accept value 'nosuch'"),
        ("monitor-qmp,id=m1,chardev=c1,pretty=maybe", "Parameter 'pretty' expects 'on' or 'off'"),
        ("monitor-qmp,id=m1,chardev=nosuch", 'chardev "nosuch" not found'),
        ('{"qom-type": "monitor-qmp", "id": "m1", "chardev": "c1", "zz": 1}',
         "Parameter 'zz' is unexpected"),
    ],
)  # fmt: skip
def test_object_option_errors(arg: str, message: str) -> None:
    """-object's errors as QEMU prints them (same texts as 7.2 for its types)."""
    import subprocess
    import sys

    from tests.integration.harness import REPO_ROOT

    proc = subprocess.run(
        [sys.executable, "-m", "system", "-nodefaults", "-chardev", "null,id=c1", "-object", arg],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=DEADLINE,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 1
    assert proc.stderr == f"qemu-monitor-emu: -object {arg}: {message}\n"
