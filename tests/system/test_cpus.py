"""vCPU threads and the run-state handshakes (system/cpus.py, accel_model.py).

In-process tests drive the real vCPU threads with the BQL held by the test
thread (the main loop's); process tests use ``-smp``/``-accel x-model`` on
the command line and the qemu.qmp client, and compare the default
configuration with real QEMU 7.2.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from system import runstate as rs
from system.accel_model import GuestModel, x_model_init_vcpus
from system.cpus import (
    cpus_cleanup,
    pause_all_vcpus,
    query_cpus_fast,
    resume_all_vcpus,
)
from system.cpus_common import (
    CPUState,
    async_run_on_cpu,
    cpu_globals,
    cpu_globals_reset,
    qemu_cpu_is_self,
    run_on_cpu,
)
from tests.integration.harness import launched
from util.bugs import bugs_enable, bugs_reset
from util.lockdep import lockdep_edges
from util.main_loop import MainLoop, bql_lock, bql_locked, bql_unlock
from util.rcu import drain_call_rcu, rcu_cleanup
from util.sched import SCHED, Strategy
from util.thread import QemuEvent, qemu_thread_create, qemu_thread_get_name

BUSY = GuestModel(exit_rate=2000, exit_cost=50, rcu_section=True)


class Events(list[tuple[str, bool]]):
    """The events sent, each with whether every vCPU was parked then."""

    def __call__(self, name: str, data: Any = None) -> None:
        self.append((name, all(cpu.stopped for cpu in cpu_globals().cpus)))


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch) -> Events:
    sent = Events()
    monkeypatch.setattr(rs, "qapi_event_send", sent)
    return sent


@contextmanager
def running_vcpus(model: GuestModel, n: int) -> Iterator[list[CPUState]]:
    """``n`` vCPUs running ``model``, the VM started; joined at the end."""
    cpu_globals_reset()
    state = rs.runstate_init(autostart=True)
    state.pause_all_vcpus = pause_all_vcpus
    state.resume_all_vcpus = resume_all_vcpus
    try:
        x_model_init_vcpus(model, n)
        rs.vm_start()
        yield cpu_globals().cpus
    finally:
        rs.runstate_set(rs.RunState.SHUTDOWN)
        cpus_cleanup()
        rcu_cleanup()
        cpu_globals_reset()


@pytest.fixture
def vcpus(main_loop: MainLoop, events: Events) -> Iterator[list[CPUState]]:
    """Four vCPUs of a busy guest, running."""
    with running_vcpus(BUSY, 4) as cpus:
        events.clear()
        yield cpus


def test_vcpus_are_created_named_and_listed(vcpus: list[CPUState]) -> None:
    assert [cpu.created for cpu in vcpus] == [True] * 4
    names = [cpu.thread.name for cpu in vcpus if cpu.thread is not None]
    assert names == ["CPU 0/TCG", "CPU 1/TCG", "CPU 2/TCG", "CPU 3/TCG"]
    info = query_cpus_fast()
    assert [c["cpu-index"] for c in info] == [0, 1, 2, 3]
    assert [c["thread-id"] for c in info] == [cpu.thread.native_id for cpu in vcpus if cpu.thread]
    assert all(os.path.isdir(f"/proc/self/task/{c['thread-id']}") for c in info)


def test_pause_parks_every_vcpu_and_resume_releases_them(vcpus: list[CPUState]) -> None:
    for _ in range(20):
        pause_all_vcpus()
        assert bql_locked()
        assert all(cpu.stopped and not cpu.stop for cpu in vcpus)
        exits = [cpu.accel.exits for cpu in vcpus]
        # parked: no vCPU takes the BQL for an exit any more
        assert [cpu.accel.exits for cpu in vcpus] == exits
        resume_all_vcpus()
        assert not any(cpu.stopped for cpu in vcpus)


def test_run_on_cpu_runs_in_the_vcpu_thread_and_waits(vcpus: list[CPUState]) -> None:
    seen: list[tuple[int, str, bool, bool]] = []

    def work(cpu: CPUState, data: Any) -> None:
        seen.append((data, qemu_thread_get_name(), qemu_cpu_is_self(cpu), bql_locked()))

    for cpu in vcpus:
        run_on_cpu(cpu, work, cpu.cpu_index)
    assert seen == [(i, f"CPU {i}/TCG", True, True) for i in range(4)]


def test_async_run_on_cpu_runs_while_paused_vcpus_wake_for_work(
    vcpus: list[CPUState],
) -> None:
    pause_all_vcpus()
    ran = QemuEvent(name="ran")
    async_run_on_cpu(vcpus[2], lambda cpu, data: ran.set())
    # the queued work wakes the parked vCPU, which runs it (with the BQL,
    # which this thread drops meanwhile) and parks again
    bql_unlock()
    try:
        assert ran.wait(10)
    finally:
        bql_lock()
    assert vcpus[2].stopped
    resume_all_vcpus()


def test_stop_and_cont_order_the_events_after_the_handshake(
    vcpus: list[CPUState], events: Events
) -> None:
    rs.qmp_stop()
    rs.qmp_cont()
    # STOP once all are parked; RESUME (vm_prepare_start) before the release
    assert events == [("STOP", True), ("RESUME", True)]
    assert not any(cpu.stopped for cpu in vcpus)


def test_lockdep_ranks_the_vcpu_locks_under_the_bql(main_loop: MainLoop, events: Events) -> None:
    """A vCPU takes its work mutex with the BQL, a force_rcu notifier with
    rcu_registry_lock: both edges are seen and in the declared order."""
    with running_vcpus(BUSY, 2) as cpus:
        run_on_cpu(cpus[0], lambda cpu, data: None)
        done, thread = _drain_in_thread()
        assert _wait_without_bql(done, 10)
        thread.join(10)
    edges = lockdep_edges()
    assert ("BQL", "cpu_work_mutex") in edges
    assert ("rcu_registry_lock", "cpu_work_mutex") in edges
    assert ("rcu_sync_lock", "rcu_registry_lock") in edges


# ---------------------------------------------------------------- processes


def _qmp(path: str, *commands: str) -> tuple[list[Any], list[str]]:
    """Run ``commands`` with qemu.qmp; the replies and the events' names."""
    from qemu.qmp import QMPClient

    async def scenario() -> tuple[list[Any], list[str]]:
        qmp = QMPClient("test-cpus")
        await qmp.connect(path)
        try:
            with qmp.listener() as listener:
                replies: list[Any] = [await qmp.execute(cmd) for cmd in commands]
                # STOP and RESUME go out before the replies of stop and cont
                events = [str(event["event"]) for event in listener.clear()]
        finally:
            await qmp.disconnect()
        return replies, events

    return asyncio.run(scenario())


def test_smp_4_shows_four_vcpu_threads_with_real_ids() -> None:
    args = ["-smp", "4", "-accel", "x-model,exit-rate=1000,exit-cost=50,rcu-section=on"]
    with launched("emu", args) as inst:
        (cpus,), _ = _qmp(inst.mon_path, "query-cpus-fast")
        assert [c["cpu-index"] for c in cpus] == [0, 1, 2, 3]
        tasks = set(os.listdir(f"/proc/{inst.proc.pid}/task"))
        assert {str(c["thread-id"]) for c in cpus} <= tasks
        assert cpus[1] == {
            "thread-id": cpus[1]["thread-id"],
            "props": {"core-id": 1, "thread-id": 0, "socket-id": 0},
            "qom-path": "/machine/unattached/device[1]",
            "cpu-index": 1,
            "target": "x86_64",
        }


def test_stop_cont_under_load_send_stop_and_resume() -> None:
    args = ["-smp", "4", "-accel", "x-model,exit-rate=5000,exit-cost=100,rcu-section=on"]
    with launched("emu", args) as inst:
        commands = ("stop", "query-status", "cont", "query-status") * 3
        replies, events = _qmp(inst.mon_path, *commands)
        assert [r["status"] for r in replies[1::2]] == ["paused", "running"] * 3
        assert events == ["STOP", "RESUME"] * 3


@pytest.mark.parametrize("target", [pytest.param("qemu", marks=pytest.mark.qemu), "emu"])
def test_machine_none_has_no_cpus_by_default(target: str) -> None:
    if target == "qemu" and shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    with launched(target, ["-smp", "1"]) as inst:
        replies, _ = _qmp(inst.mon_path, "query-cpus-fast")
        assert replies == [[]]


def _start_error(target: str, args: list[str]) -> str:
    """What ``target`` prints when it refuses ``args`` (without its name)."""
    if target == "qemu":
        if shutil.which("qemu-system-x86_64") is None:
            pytest.skip("qemu-system-x86_64 is not installed")
        argv = ["qemu-system-x86_64"]
    else:
        argv = [sys.executable, "-m", "system"]
    argv += ["-machine", "none", "-nodefaults", "-display", "none", *args]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    assert proc.returncode == 1
    return proc.stderr.split(": ", 1)[1]


@pytest.mark.parametrize("target", [pytest.param("qemu", marks=pytest.mark.qemu), "emu"])
@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["-smp", "4"], "Invalid SMP CPUs 4. The max CPUs supported by machine 'none' is 1\n"),
        (["-smp", "cpus=2"], "Invalid SMP CPUs 2. The max CPUs supported by machine 'none' is 1\n"),
        (["-smp", "x"], "Parameter 'smp.cpus' expects integer\n"),
        (["-smp", "foo=1"], "Parameter 'smp.foo' is unexpected\n"),
        (["-accel", "x-none"], "-accel x-none: invalid accelerator x-none\n"),
    ],
)
def test_smp_and_accel_errors_match_qemu(target: str, args: list[str], error: str) -> None:
    assert _start_error(target, args) == error


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (
            ["-smp", "65", "-accel", "x-model"],
            "Invalid SMP CPUs 65. The max CPUs supported by machine 'none' is 64\n",
        ),
        (
            ["-smp", "cores=2"],
            "-smp cores=2: Parameter 'smp.cores' is not emulated: only cpus is\n",
        ),
        (["-accel", "x-model,bogus=1"], "-accel x-model,bogus=1: Invalid parameter 'bogus'\n"),
    ],
)
def test_emulator_only_limits_of_smp_and_x_model(args: list[str], error: str) -> None:
    assert _start_error("emu", args) == error


def _hmp(qmp_path: str, *lines: tuple[str, Any]) -> list[Any]:
    """human-monitor-command for each (command line, cpu-index or None)."""
    from qemu.qmp import ExecuteError, QMPClient

    async def scenario() -> list[Any]:
        qmp = QMPClient("test-hmp-cpus")
        await qmp.connect(qmp_path)
        out: list[Any] = []
        try:
            for line, cpu_index in lines:
                args: dict[str, Any] = {"command-line": line}
                if cpu_index is not None:
                    args["cpu-index"] = cpu_index
                try:
                    out.append(await qmp.execute("human-monitor-command", args))
                except ExecuteError as e:
                    out.append(str(e))
        finally:
            await qmp.disconnect()
        return out

    return asyncio.run(scenario())


def test_hmp_info_cpus_and_cpu_with_vcpus() -> None:
    with launched("emu", ["-smp", "2", "-accel", "x-model"]) as inst:
        (cpus,), _ = _qmp(inst.mon_path, "query-cpus-fast")
        ids = [c["thread-id"] for c in cpus]
        out = _hmp(
            inst.mon_path,
            ("info cpus", None),
            ("info cpus", 1),
            ("cpu 1", None),
            ("cpu 2", None),
            ("info status", 2),
        )
        assert out == [
            f"* CPU #0: thread_id={ids[0]}\r\n  CPU #1: thread_id={ids[1]}\r\n",
            f"  CPU #0: thread_id={ids[0]}\r\n* CPU #1: thread_id={ids[1]}\r\n",
            "",
            "invalid CPU index\r\n",
            "Parameter 'cpu-index' expects a CPU number",
        ]


@pytest.mark.parametrize("target", [pytest.param("qemu", marks=pytest.mark.qemu), "emu"])
def test_hmp_cpu_commands_without_cpus_match_qemu(target: str) -> None:
    if target == "qemu" and shutil.which("qemu-system-x86_64") is None:
        pytest.skip("qemu-system-x86_64 is not installed")
    with launched(target) as inst:
        out = _hmp(inst.mon_path, ("info cpus", None), ("cpu 0", None), ("cpu", None))
    assert out == [
        "",
        "invalid CPU index\r\n",
        'unexpected end of expression\r\nTry "help cpu" for more information\r\n',
    ]


# ---------------------------------------------------------------- bugs.md 24


def _drain_in_thread() -> tuple[QemuEvent, Any]:
    done = QemuEvent(name="drained")

    def drain() -> None:
        drain_call_rcu()
        done.set()

    return done, qemu_thread_create("drainer", drain)


def _wait_without_bql(event: QemuEvent, timeout: float) -> bool:
    """Wait with the BQL dropped: the vCPUs and the RCU callbacks need it."""
    bql_unlock()
    try:
        return event.wait(timeout)
    finally:
        bql_lock()


def test_drain_call_rcu_forces_busy_vcpus_out_of_their_section(
    main_loop: MainLoop, events: Events
) -> None:
    """The fix: each vCPU's force_rcu notifier kicks it out of cpu_exec."""
    with running_vcpus(BUSY, 2):
        done, thread = _drain_in_thread()
        assert _wait_without_bql(done, 10)
        thread.join(10)


def test_bug_24_drain_waits_for_a_busy_vcpu_until_stop(main_loop: MainLoop, events: Events) -> None:
    """With ``vcpu_holds_rcu_read_lock`` the drain waits for as long as the
    guest runs; ``stop`` (the reporter's workaround) lets it finish."""
    bugs_enable(["vcpu_holds_rcu_read_lock"])
    try:
        with running_vcpus(BUSY, 2):
            done, thread = _drain_in_thread()
            assert not _wait_without_bql(done, 0.5)
            rs.qmp_stop()
            assert _wait_without_bql(done, 10)
            thread.join(10)
    finally:
        bugs_reset()


def test_device_add_against_busy_vcpus_fails_promptly() -> None:
    """bugs.md 24's observation, fixed: device_add returns its error while
    the vCPUs run inside their RCU read-side sections."""
    args = ["-smp", "2", "-accel", "x-model,exit-rate=2000,exit-cost=50,rcu-section=on"]
    with launched("emu", args) as inst:
        out = _hmp(inst.mon_path, ("device_add", None), ("info status", None))
        assert out == ["Error: Parameter 'driver' is missing\r\n", "VM status: running\r\n"]


@pytest.mark.parametrize("bug", [False, True], ids=["fixed", "vcpu_holds_rcu_read_lock"])
def test_bug_24_under_the_explorer(main_loop: MainLoop, events: Events, bug: bool) -> None:
    """The same scenario with the baton scheduler: one thread at a time,
    virtual time, so the half second the drain waits in vain costs nothing
    and the run is the same every time."""
    if bug:
        bugs_enable(["vcpu_holds_rcu_read_lock"])
    failures: list[str] = []
    SCHED.start(Strategy(), on_failure=failures.append)
    try:
        with running_vcpus(BUSY, 2):
            done, thread = _drain_in_thread()
            assert _wait_without_bql(done, 0.5) is not bug
            rs.qmp_stop()
            assert _wait_without_bql(done, 10)
            thread.join()
    finally:
        SCHED.stop()
        bugs_reset()
    assert failures == []
