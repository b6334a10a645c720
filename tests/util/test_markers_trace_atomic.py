"""Thread-role markers, trace events and atomics."""

from __future__ import annotations

import os
import sys

import pytest

from util.aio import aio_bh_schedule_oneshot
from util.atomic import QAtomic, qatomic_cmpxchg, qatomic_dec_fetch, qatomic_inc_fetch, qatomic_xchg
from util.coroutine import qemu_coroutine_create, qemu_coroutine_enter
from util.iothread import iothread_create, iothread_destroy
from util.main_loop import bql_unlock
from util.markers import ThreadRoleError, coroutine_fn, iothread_only, main_loop_only, requires_bql
from util.thread import (
    QemuEvent,
    qemu_thread_create,
    qemu_thread_get_cpu,
    qemu_thread_set_affinity,
)
from util.trace import trace_enable_events, trace_event, trace_memory_start

#: seconds any wait in these tests may take before it counts as a hang
DEADLINE = 10.0


@main_loop_only
def global_state():
    return "ok"


@requires_bql
def needs_bql():
    return "ok"


@coroutine_fn
def in_co():
    return "ok"


@iothread_only
def io_code():
    return "ok"


@main_loop_only
@requires_bql
def global_state_with_bql(x, *, y):
    """Stacked markers: one wrapper, every check, outermost first."""
    return (x, y)


def test_markers_pass_in_the_right_place(main_loop):
    assert global_state() == "ok"
    assert needs_bql() == "ok"
    out = []
    qemu_coroutine_enter(qemu_coroutine_create(lambda o: out.append(in_co()), None, "c"))
    assert out == ["ok"]
    it = iothread_create("marker")
    done = QemuEvent()
    aio_bh_schedule_oneshot(it.ctx, lambda o: (out.append(io_code()), done.set()), None, "io")
    assert done.wait(5)
    iothread_destroy(it)
    assert out == ["ok", "ok"]


def test_markers_fire_in_the_wrong_place(main_loop):
    errors = []

    def elsewhere():
        for fn in (global_state, needs_bql, in_co, io_code):
            try:
                fn()
            except ThreadRoleError as e:
                errors.append(str(e))

    qemu_thread_create("wrong", elsewhere).join(5)
    assert len(errors) == 4
    assert all("called in wrong" in e for e in errors)
    with pytest.raises(ThreadRoleError, match="must run in an IOThread"):
        io_code()
    bql_unlock()
    with pytest.raises(ThreadRoleError, match="requires the BQL"):
        needs_bql()


def test_stacked_markers_check_each_and_keep_the_function(main_loop):
    assert global_state_with_bql(1, y=2) == (1, 2)
    assert global_state_with_bql.__name__ == "global_state_with_bql"
    assert "Stacked markers" in global_state_with_bql.__doc__
    errors = []

    def elsewhere():
        try:
            global_state_with_bql(1, y=2)
        except ThreadRoleError as e:
            errors.append(str(e))

    qemu_thread_create("wrong", elsewhere).join(5)
    assert errors == ["global_state_with_bql must run in the main loop thread; called in wrong"]
    bql_unlock()
    with pytest.raises(ThreadRoleError, match="global_state_with_bql requires the BQL"):
        global_state_with_bql(1, y=2)


def test_trace_pattern_enables_and_records_thread_and_args():
    ev_a = trace_event("test_monitor_a", "mon", "req")
    ev_b = trace_event("test_other_b", "x")
    records = trace_memory_start()
    ev_a("m0", "r0")  # disabled: nothing
    assert trace_enable_events("test_monitor_*") == 1
    ev_a("m1", "r1")
    ev_b(1)
    assert [(r.name, r.args) for r in records] == [("test_monitor_a", {"mon": "m1", "req": "r1"})]
    assert records[0].thread == "MainThread" and records[0].ts_ns > 0
    trace_enable_events("-test_monitor_*")
    ev_a("m2", "r2")
    assert len(records) == 1


def test_atomics():
    cell = QAtomic(0)
    assert qatomic_inc_fetch(cell) == 1
    assert qatomic_dec_fetch(cell) == 0
    assert qatomic_xchg(cell, 5) == 0
    assert qatomic_cmpxchg(cell, 4, 9) == 5 and cell.value == 5
    assert qatomic_cmpxchg(cell, 5, 9) == 5 and cell.value == 9
    counter = QAtomic(0)

    def incr():
        for _ in range(5000):
            qatomic_inc_fetch(counter)

    threads = [qemu_thread_create(f"i{i}", incr) for i in range(4)]
    for t in threads:
        t.join(10)
    assert counter.value == 20000


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux CPU affinity")
def test_thread_affinity_is_per_thread_and_inherited():
    """qemu_thread_set_affinity moves one thread (None: the caller); a thread
    it then creates starts with the same CPUs; the others keep theirs."""
    allowed = os.sched_getaffinity(0)
    cpu = qemu_thread_get_cpu()
    assert cpu in allowed
    seen: dict[str, set[int]] = {}
    done = QemuEvent()

    def child() -> None:
        seen["child"] = os.sched_getaffinity(0)
        done.set()

    def pinned() -> None:
        qemu_thread_set_affinity(None, {cpu})
        seen["pinned"] = os.sched_getaffinity(0)
        qemu_thread_create("affinity-child", child).join(DEADLINE)

    qemu_thread_create("affinity-pinned", pinned).join(DEADLINE)
    assert done.wait(DEADLINE)
    assert seen == {"pinned": {cpu}, "child": {cpu}}
    assert os.sched_getaffinity(0) == allowed

    idle = QemuEvent()
    other = qemu_thread_create("affinity-other", idle.wait, DEADLINE)
    try:
        qemu_thread_set_affinity(other, {cpu})
        assert other.native_id is not None
        assert os.sched_getaffinity(other.native_id) == {cpu}
    finally:
        idle.set()
        other.join(DEADLINE)
    assert os.sched_getaffinity(0) == allowed
