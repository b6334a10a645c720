"""util/rcu.py: grace periods, the call_rcu thread, drain_call_rcu and force_rcu."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from util.main_loop import MainLoop, bql_locked
from util.rcu import (
    call_rcu1,
    drain_call_rcu,
    rcu_add_force_rcu_notifier,
    rcu_cleanup,
    rcu_globals,
    rcu_read_lock,
    rcu_read_unlock,
    rcu_register_thread,
    rcu_remove_force_rcu_notifier,
    rcu_unregister_thread,
    synchronize_rcu,
)
from util.thread import QemuEvent, qemu_thread_create

DEADLINE = 10.0


@pytest.fixture(autouse=True)
def rcu() -> Iterator[None]:
    yield
    rcu_cleanup()


class Reader:
    """A registered thread that enters a section and leaves it when told."""

    def __init__(self, force: bool = False) -> None:
        self.inside = QemuEvent(name="inside")
        self.leave = QemuEvent(name="leave")
        self.forced = QemuEvent(name="forced")
        self.force = force
        self.thread = qemu_thread_create("reader", self.run)
        assert self.inside.wait(DEADLINE)

    def run(self) -> None:
        rcu_register_thread()
        if self.force:
            rcu_add_force_rcu_notifier(self.forced.set)
        rcu_read_lock()
        rcu_read_lock()  # nested: only the outermost unlock counts
        self.inside.set()
        while not self.leave.is_set() and not self.forced.is_set():
            self.leave.wait(0.01)
        rcu_read_unlock()
        assert rcu_globals().registry  # still inside the outer section
        rcu_read_unlock()
        if self.force:
            rcu_remove_force_rcu_notifier(self.forced.set)
        rcu_unregister_thread()


def test_synchronize_rcu_waits_for_a_reader_in_its_section() -> None:
    reader = Reader()
    done = QemuEvent(name="synced")
    syncer = qemu_thread_create("syncer", lambda: (synchronize_rcu(), done.set()))
    assert not done.wait(0.05)
    reader.leave.set()
    assert done.wait(DEADLINE)
    syncer.join(DEADLINE)
    reader.thread.join(DEADLINE)


def test_synchronize_rcu_without_readers_returns_at_once() -> None:
    synchronize_rcu()
    assert rcu_globals().thread is None  # no callback yet, no thread


def test_callbacks_run_in_order_with_the_bql(main_loop: MainLoop) -> None:
    seen: list[tuple[int, bool]] = []
    for i in range(3):
        call_rcu1(lambda i=i: seen.append((i, bql_locked())))
    assert bql_locked()
    drain_call_rcu()  # drops the BQL so the callbacks can take it
    assert bql_locked()
    assert seen == [(0, True), (1, True), (2, True)]


def test_drain_forces_a_reader_out_through_its_notifier(main_loop: MainLoop) -> None:
    reader = Reader(force=True)
    drain_call_rcu()
    assert reader.forced.is_set()
    reader.thread.join(DEADLINE)


def test_a_reader_without_notifier_delays_the_drain(main_loop: MainLoop) -> None:
    reader = Reader()
    ran = QemuEvent(name="ran")
    call_rcu1(ran.set)
    assert not ran.wait(0.1)
    reader.leave.set()
    drain_call_rcu()
    assert ran.is_set()
    reader.thread.join(DEADLINE)
