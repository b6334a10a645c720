"""The races QEMU 11.1's monitor objects close (bugs.md 23, hotplug.md section 4).

In process, on chardev pairs: the test thread is the main loop, so it
decides when main-context BHs (the close-action delete) run, while the
monitor I/O thread runs for real.  Each test forces one interleaving.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from chardev.char import qemu_chr_find
from chardev.char_fe import qemu_chr_fe_set_open
from chardev.char_pair import qemu_chr_new_pair
from monitor import qmp as qmp_module
from monitor.monitor import monitor_globals, monitor_puts, monitor_resume, monitor_suspend
from monitor.monitor_internal import MonitorQMP
from qapi.error import QapiError
from qom.object import (
    object_get_objects_root,
    object_is_alive,
    object_resolve_path_component,
)
from qom.object_interfaces import user_creatable_add_type, user_creatable_del
from tests.monitor.conftest import QmpEnv, QmpPeer, run_until
from util.aio import BH_DELETED, aio_bh_schedule_oneshot, run_in_context
from util.iothread import iothread_get_aio_context
from util.thread import QemuEvent


def _add(env: QmpEnv, label: str, **props: Any) -> QmpPeer:
    chr, client = qemu_chr_new_pair(label)
    obj = user_creatable_add_type("monitor-qmp", f"{label}mon", {"chardev": label, **props})
    assert isinstance(obj, MonitorQMP) and obj.use_io_thread
    peer = QmpPeer(obj, chr, client)
    run_until(lambda: env.in_mon_list(obj), lambda: "never joined mon_list")
    assert "QMP" in peer.recv()
    peer.negotiate()
    return peer


def _iothread_barrier() -> None:
    g = monitor_globals()
    assert g.mon_iothread is not None
    run_in_context(iothread_get_aio_context(g.mon_iothread), lambda _: None, None)


def _until_delete_pending(mon: MonitorQMP) -> None:
    """The CLOSED runs in the I/O thread; barriers there until it did."""
    for _ in range(1000):
        if mon.delete_pending:
            return
        _iothread_barrier()
    raise AssertionError("CLOSED never reached the monitor")


def _in_objects(name: str) -> bool:
    return object_resolve_path_component(object_get_objects_root(), name) is not None


def test_reconnect_while_delete_pending_is_ignored(qmp_env: QmpEnv) -> None:
    peer = _add(qmp_env, "rcp", **{"close-action": "delete"})
    mon = peer.mon
    peer.hangup(wait=False)
    _until_delete_pending(mon)
    # the delete BH waits for the main loop; a quick reconnect meanwhile
    peer.client.connect()
    _iothread_barrier()
    _iothread_barrier()
    assert peer.poll() == []  # no greeting: the monitor is not revived
    run_until(lambda: not _in_objects("rcpmon"), lambda: "the object stayed")
    run_until(lambda: qemu_chr_find("rcp") is None, lambda: "the chardev stayed")
    assert not object_is_alive(mon)


def test_explicit_object_del_overtakes_the_delete_bh(qmp_env: QmpEnv) -> None:
    peer = _add(qmp_env, "race", **{"close-action": "delete"})
    mon = peer.mon
    peer.hangup(wait=False)
    _until_delete_pending(mon)
    user_creatable_del("racemon")  # another monitor's object-del, before the BH
    assert not _in_objects("racemon") and object_is_alive(mon)  # the BH's reference
    run_until(lambda: not object_is_alive(mon), lambda: "the BH never dropped its ref")
    assert qemu_chr_find("race") is not None  # the BH yields: it deletes nothing
    assert mon.chr.chr is None  # finalize detached the frontend


def test_delete_refused_while_setup_is_pending(qmp_env: QmpEnv) -> None:
    _add(qmp_env, "first")  # starts the I/O thread
    g = monitor_globals()
    assert g.mon_iothread is not None
    release = QemuEvent(name="test-hold-iothread")
    aio_bh_schedule_oneshot(
        iothread_get_aio_context(g.mon_iothread), lambda _: release.wait(), None, "test-hold"
    )
    qemu_chr_new_pair("early")
    try:
        obj = user_creatable_add_type("monitor-qmp", "earlymon", {"chardev": "early"})
        with pytest.raises(QapiError, match=r"^monitor is still initializing$"):
            user_creatable_del("earlymon")
        assert _in_objects("earlymon")
    finally:
        release.set()
    run_until(lambda: qmp_env.in_mon_list(obj), lambda: "setup never ran")
    user_creatable_del("earlymon")
    assert not _in_objects("earlymon") and not qmp_env.in_mon_list(obj)


def test_teardown_drains_twice_around_an_iothread_barrier(
    qmp_env: QmpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    peer = _add(qmp_env, "order")
    steps: list[tuple[str, str]] = []
    drain = qmp_module.monitor_qmp_drain_queue
    quiesce = qmp_module.monitor_qmp_iothread_quiesce

    def spy_drain(mon: MonitorQMP) -> None:
        steps.append(("drain", threading.current_thread().name))
        drain(mon)

    def spy_quiesce(opaque: None) -> None:
        steps.append(("barrier", threading.current_thread().name))
        quiesce(opaque)

    monkeypatch.setattr(qmp_module, "monitor_qmp_drain_queue", spy_drain)
    monkeypatch.setattr(qmp_module, "monitor_qmp_iothread_quiesce", spy_quiesce)
    main = threading.current_thread().name
    user_creatable_del("ordermon")
    assert [s for s, _ in steps] == ["drain", "barrier", "drain"]
    assert steps[0][1] == steps[2][1] == main and steps[1][1] != main
    assert not object_is_alive(peer.mon)


def test_no_watch_after_the_frontend_is_closed(qmp_env: QmpEnv) -> None:
    chr, client = qemu_chr_new_pair("fe", out_capacity=16)
    obj = user_creatable_add_type("monitor-qmp", "femon", {"chardev": "fe"})
    assert isinstance(obj, MonitorQMP)
    peer = QmpPeer(obj, chr, client)
    assert "QMP" in peer.recv()  # the greeting drained: its watch is gone
    run_until(lambda: obj.out_watch == 0, lambda: "the greeting's watch stayed")
    with obj.mon_lock:
        qemu_chr_fe_set_open(obj.chr, False)  # what object-del does before its last cancel
    monitor_puts(obj, "x" * 4096 + "\n")
    with obj.mon_lock:
        assert obj.out_watch == 0 and len(obj.outbuf) > 4096
    user_creatable_del("femon")


def test_accept_input_bh_is_persistent_and_deleted_at_finalize(qmp_env: QmpEnv) -> None:
    peer = _add(qmp_env, "bh")
    mon = peer.mon
    bh = mon.accept_input_bh
    assert bh is not None
    for i in range(3):  # without OOB every request suspends and resumes
        assert peer.execute("query-name")["return"] == {}, i
    assert mon.accept_input_bh is bh and not bh.flags & BH_DELETED
    user_creatable_del("bhmon")
    assert bh.flags & BH_DELETED
    monitor_suspend(mon)
    with pytest.raises(AssertionError, match="used after qemu_bh_delete"):
        monitor_resume(mon)  # the use after free of the one-shot BH, made loud
