"""The lock-order checker: ranks, inversions across threads, the graph."""

from __future__ import annotations

import pytest

from util.lockdep import (
    LockOrderError,
    lockdep_dump,
    lockdep_edges,
    lockdep_reset_violations,
    lockdep_violations,
)
from util.thread import QemuCond, QemuMutex, qemu_thread_create


def test_correct_nesting_passes_and_is_recorded():
    bql, mon, out = QemuMutex("BQL"), QemuMutex("monitor_lock"), QemuMutex("mon_lock")
    with bql, mon, out:
        pass
    edges = lockdep_edges()
    assert ("BQL", "monitor_lock") in edges
    assert ("monitor_lock", "mon_lock") in edges
    assert "monitor_lock -> mon_lock" in lockdep_dump()


@pytest.mark.lockdep_violation_expected
def test_rank_violation_names_both_classes_and_sites():
    mon, out = QemuMutex("monitor_lock"), QemuMutex("mon_lock")
    with out:
        with pytest.raises(LockOrderError) as info:
            mon.lock()
    msg = str(info.value)
    assert "monitor_lock" in msg and "mon_lock" in msg
    assert msg.count("test_lockdep.py:") == 2
    assert "[MainThread]" in msg
    lockdep_reset_violations()


@pytest.mark.lockdep_violation_expected
def test_inversion_across_two_threads_without_deadlock():
    a, b = QemuMutex("test_lock_a"), QemuMutex("test_lock_b")

    def first():
        with a, b:
            pass

    qemu_thread_create("first", first).join(5)
    errors = []

    def second():
        with b:
            try:
                a.lock()
                a.unlock()
            except LockOrderError as e:
                errors.append(str(e))

    qemu_thread_create("second", second).join(5)
    assert len(errors) == 1
    assert "[first]" in errors[0] and "[second]" in errors[0]
    assert lockdep_violations()[-1] == errors[0]
    lockdep_reset_violations()


@pytest.mark.lockdep_violation_expected
def test_recursive_locking_is_reported():
    m = QemuMutex("mon_lock")
    with m:
        with pytest.raises(LockOrderError, match="recursive"):
            m.lock()
    lockdep_reset_violations()


def test_unlock_by_non_owner_is_refused():
    m = QemuMutex("test_owned")
    m.lock()
    errors = []

    def other():
        try:
            m.unlock()
        except LockOrderError as e:
            errors.append(e)

    qemu_thread_create("other", other).join(5)
    assert errors
    m.unlock()


def test_cond_wait_releases_the_mutex_for_the_checker():
    m, c = QemuMutex("test_cond_lock"), QemuCond()
    state = {"ready": False}

    def producer():
        with m:
            state["ready"] = True
            c.signal()

    with m:
        t = qemu_thread_create("producer", producer)
        while not state["ready"]:
            assert c.wait(m, timeout=5)
    t.join(5)
    assert not m.locked_by_me()
