"""Eras (monitor/eras.py): the same client against each QEMU generation.

One table of expected differences drives the parametrised tests; the
switch tests show that each switch the 2.12 era turns on also works alone
in the current era.  In-process, the test thread is the main loop: while
it does not run the loop, the dispatcher is as good as blocked, and the
I/O thread keeps reading, parsing and (OOB) answering.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from chardev.char import qemu_chr_cleanup
from chardev.char_pair import qemu_chr_new_pair
from monitor.eras import ERA_ENV, ERAS, current_era, era_reset, era_select
from monitor.monitor import monitor_cur, monitor_globals, monitor_init, qapi_event_send
from monitor.monitor_internal import MonitorQMP
from tests.monitor.conftest import (
    DEADLINE,
    FOREVER_MS,
    QmpEnv,
    QmpPeer,
    co_sleep_timers,
    make_monitor_globals,
    run_until,
    teardown_monitors,
    wake_co_sleepers,
)
from util.bugs import bugs_enable, bugs_reset
from util.iothread import iothread_stop
from util.main_loop import MainLoop

#: what differs per era, for the same client
EXPECTED: dict[str, dict[str, Any]] = {
    "2.12": {"version": (2, 12, 0), "dropped": ["q9"], "oob_key": "run-oob", "errors_now": True},
    "5.2": {"version": (5, 2, 0), "dropped": [], "oob_key": "exec-oob", "errors_now": False},
    "7.2": {"version": (7, 2, 0), "dropped": [], "oob_key": "exec-oob", "errors_now": False},
    "8.1": {"version": (8, 1, 0), "dropped": [], "oob_key": "exec-oob", "errors_now": False},
    "current": {"version": (7, 2, 22), "dropped": [], "oob_key": "exec-oob", "errors_now": False},
}


@pytest.fixture
def era_env(request: pytest.FixtureRequest, main_loop: MainLoop) -> Iterator[QmpEnv]:
    """Monitor globals built in the era ``request.param`` (and its switches)."""
    era_select(request.param)
    qemu_chr_cleanup()
    try:
        yield QmpEnv(make_monitor_globals())
    finally:
        teardown_monitors()
        bugs_reset()
        era_reset()


def add_oob_monitor(env: QmpEnv, label: str) -> tuple[QmpPeer, dict[str, Any]]:
    """A QMP monitor with OOB offered in every era (2.12: x-oob=on),
    negotiated with OOB; returns it and its greeting."""
    chr, client = qemu_chr_new_pair(label)
    mon = monitor_init(label, "control", False, False, x_oob=True)
    assert isinstance(mon, MonitorQMP) and mon.use_io_thread
    peer = QmpPeer(mon, chr, client)
    run_until(lambda: env.in_mon_list(mon), lambda: "monitor never joined mon_list")
    greeting = peer.recv()
    assert greeting["QMP"]["capabilities"] == ["oob"], greeting
    peer.negotiate(oob=True)
    return peer, greeting


def wait_without_loop(peer: QmpPeer, n: int) -> list[dict[str, Any]]:
    """Wait for ``n`` messages the I/O thread writes while the main loop
    (this thread) does not run; take and return them."""
    deadline = time.monotonic() + DEADLINE
    while len(peer.poll()) < n:
        left = deadline - time.monotonic()
        assert left > 0, f"only got {peer.msgs}"
        peer.client.wait_output(1, left)
    out, peer.msgs = peer.msgs[:n], peer.msgs[n:]
    return out


ALL_ERAS = pytest.mark.parametrize("era_env", list(ERAS), indirect=True)


def test_expected_table_covers_every_era() -> None:
    assert set(EXPECTED) == set(ERAS)
    for name, era in ERAS.items():
        assert era.version == EXPECTED[name]["version"]


@ALL_ERAS
def test_greeting_and_query_version(era_env: QmpEnv) -> None:
    peer, greeting = add_oob_monitor(era_env, "mon0")
    major, minor, micro = EXPECTED[current_era().name]["version"]
    version = {"major": major, "minor": minor, "micro": micro}
    assert greeting["QMP"]["version"]["qemu"] == version
    assert peer.execute("query-version")["return"]["qemu"] == version


@ALL_ERAS
def test_query_commands_lists_the_eras_commands(era_env: QmpEnv) -> None:
    peer, _ = add_oob_monitor(era_env, "mon0")
    names = {c["name"] for c in peer.execute("query-commands")["return"]}
    assert {"x-oob-test", "x-debug-co-sleep", "x-debug-emit-event", "query-status"} <= names
    era = current_era()
    assert ("yank" in names) == (era.version >= (6, 0, 0))
    assert ("x-exit-preconfig" in names) == (era.version >= (3, 0, 0))
    assert ("monitor-add" in names) == (era.name == "current")
    if "yank" not in names:
        reply = peer.execute("yank", {"instances": []})
        assert reply["error"]["class"] == "CommandNotFound"


@ALL_ERAS
def test_ninth_pipelined_request_with_oob(era_env: QmpEnv) -> None:
    """The main loop is stuck (not run); nine in-band requests arrive at
    once.  2.12 queues eight and drops the ninth with COMMAND_DROPPED;
    later eras suspend the monitor at eight and answer all nine in order."""
    expected = EXPECTED[current_era().name]
    peer, _ = add_oob_monitor(era_env, "mon0")
    ids = [f"q{i}" for i in range(1, 10)]
    peer.send("".join(f'{{"execute": "query-status", "id": "{i}"}}\n' for i in ids))
    if expected["dropped"]:
        (event,) = wait_without_loop(peer, 1)
        assert event["event"] == "COMMAND_DROPPED"
        assert event["data"] == {"id": "q9", "reason": "queue-full"}
    answered = [i for i in ids if i not in expected["dropped"]]
    replies = peer.wait_msgs(len(answered))
    assert [r.get("id") for r in replies] == answered
    assert all(r["return"]["status"] == "running" for r in replies)


@ALL_ERAS
def test_oob_request_syntax(era_env: QmpEnv) -> None:
    """Out-of-band in the era's syntax runs in the I/O thread at once; the
    other era's syntax is refused."""
    key = EXPECTED[current_era().name]["oob_key"]
    peer, _ = add_oob_monitor(era_env, "mon0")
    run_oob = (
        '{"execute": "x-oob-test", "arguments": {"lock": false},'
        ' "control": {"run-oob": true}, "id": "o"}\n'
    )
    exec_oob = '{"exec-oob": "x-oob-test", "arguments": {"lock": false}, "id": "o"}\n'
    peer.send(run_oob if key == "run-oob" else exec_oob)
    assert wait_without_loop(peer, 1) == [{"return": {}, "id": "o"}]
    monitor_globals().x_oob_test_release.reset()
    peer.send(exec_oob if key == "run-oob" else run_oob)
    other = "exec-oob" if key == "run-oob" else "control"
    (reply,) = peer.wait_msgs(1)
    assert reply["error"]["desc"] == f"QMP input member '{other}' is unexpected"


@pytest.mark.parametrize("era_env", ["2.12"], indirect=True)
def test_2_12_oob_needs_an_id(era_env: QmpEnv) -> None:
    peer, _ = add_oob_monitor(era_env, "mon0")
    peer.send('{"execute": "query-status"}\n')
    (reply,) = wait_without_loop(peer, 1)
    assert reply == {
        "error": {
            "class": "GenericError",
            "desc": "Out-Of-Band capability requires that every command contains an 'id' field",
        }
    }


@pytest.mark.parametrize("era_env", ["2.12"], indirect=True)
def test_2_12_without_x_oob_no_oob_offered(era_env: QmpEnv) -> None:
    chr, client = qemu_chr_new_pair("plain")
    mon = monitor_init("plain", "control", False, False)
    assert isinstance(mon, MonitorQMP) and not mon.use_io_thread
    peer = QmpPeer(mon, chr, client)
    assert peer.recv()["QMP"]["capabilities"] == []
    peer.negotiate()
    ids = [peer.cmd("query-status") for _ in range(3)]
    assert [peer.reply(i)["id"] for i in ids] == ids  # suspended per request, none lost


def _error_order(peer: QmpPeer, now: bool) -> None:
    """In-band A, then malformed B: B's error overtakes A's reply iff ``now``."""
    peer.send('{"execute": "query-status", "id": "a"}\n{"execute": 1, "id": "b"}\n')
    if now:
        (err,) = wait_without_loop(peer, 1)
        assert err == {
            "error": {
                "class": "GenericError",
                "desc": "QMP input member 'execute' must be a string",
            }
        }
        assert peer.recv()["id"] == "a"
    else:
        first, second = peer.wait_msgs(2)
        assert first["id"] == "a" and second["id"] == "b" and "error" in second


@ALL_ERAS
def test_inband_error_order(era_env: QmpEnv) -> None:
    peer, _ = add_oob_monitor(era_env, "mon0")
    _error_order(peer, EXPECTED[current_era().name]["errors_now"])


# ---------------------------------------------------------------- each switch alone, current era


@pytest.fixture
def switched(request: pytest.FixtureRequest, main_loop: MainLoop) -> Iterator[QmpEnv]:
    bugs_enable(request.param)
    qemu_chr_cleanup()
    try:
        yield QmpEnv(make_monitor_globals())
    finally:
        teardown_monitors()
        bugs_reset()


@pytest.mark.parametrize("switched", [["report_inband_errors_immediately"]], indirect=True)
def test_switch_report_inband_errors_immediately(switched: QmpEnv) -> None:
    assert current_era().name == "current"
    peer = switched.add_qmp("mon0", oob=True)
    _error_order(peer, True)


@pytest.mark.parametrize("switched", [["queue_full_drop_event"]], indirect=True)
def test_switch_queue_full_drop_event(switched: QmpEnv) -> None:
    peer = switched.add_qmp("mon0", oob=True)
    ids = [f"q{i}" for i in range(1, 10)]
    peer.send("".join(f'{{"execute": "query-status", "id": "{i}"}}\n' for i in ids))
    (event,) = wait_without_loop(peer, 1)
    assert event["event"] == "COMMAND_DROPPED" and event["data"]["id"] == "q9"
    assert [r["id"] for r in peer.wait_msgs(8)] == ids[:8]
    assert peer.execute("query-status")["return"]["status"] == "running"  # never suspended


@pytest.mark.parametrize("switched", [[], ["current_monitor_per_thread"]], indirect=True)
def test_switch_current_monitor_per_thread(switched: QmpEnv) -> None:
    """bugs.md 8: while a coroutine command is yielded, code the main
    thread runs meanwhile believes it works for that command's monitor."""
    peer = switched.add_qmp("mon0")
    req = peer.cmd("x-debug-co-sleep", {"ms": FOREVER_MS})
    run_until(lambda: bool(co_sleep_timers()), lambda: "the command never slept")
    assert monitor_cur() is (peer.mon if _on("current_monitor_per_thread") else None)
    wake_co_sleepers()
    assert peer.reply(req)["return"] == {}


def _on(name: str) -> bool:
    from util.bugs import BUG

    return bool(getattr(BUG, name))


@pytest.mark.parametrize(
    "switched",
    [["queue_replies_for_iothread"], ["queue_replies_for_iothread", "no_flush_at_cleanup"]],
    indirect=True,
)
def test_switch_replies_queued_for_iothread(switched: QmpEnv) -> None:
    """bugs.md 18: the I/O thread stops before its responder BH ran: the
    cleanup flush writes the queued reply; without it the reply is lost."""
    peer = switched.add_qmp("mon0")
    g = monitor_globals()
    assert g.mon_iothread is not None
    iothread_stop(g.mon_iothread)
    qapi_event_send("POWERDOWN")
    with peer.mon.qmp_queue_lock:
        assert len(peer.mon.qmp_responses) == 1  # waiting for the stopped thread
    teardown_monitors()
    got = peer.poll()
    if _on("no_flush_at_cleanup"):
        assert got == []
    else:
        assert [m["event"] for m in got] == ["POWERDOWN"]


# ---------------------------------------------------------------- start-up


def _emu(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "system", "-nodefaults", *args],
        capture_output=True,
        text=True,
        timeout=30,
        env={**os.environ, **env},
        stdin=subprocess.DEVNULL,
    )


def test_unknown_era_is_a_startup_error() -> None:
    res = _emu("-x-era", "4.0", env={})
    assert res.returncode == 1
    assert res.stderr == (
        "qemu-monitor-emu: -x-era 4.0: unknown era '4.0'; "
        "valid eras: 2.12, 5.2, 7.2, 8.1, current\n"
    )
    res = _emu(env={ERA_ENV: "9"})
    assert res.returncode == 1 and "unknown era '9'" in res.stderr


def test_version_option_reports_the_era() -> None:
    res = _emu("-x-era", "5.2", "-version", env={})
    assert res.stdout.startswith("QEMU emulator version 5.2.0 (qemu-monitor-emu)\n")
    res = _emu("-version", env={})
    assert res.stdout.startswith("QEMU emulator version 7.2.22 (qemu-monitor-emu)\n")


def test_preconfig_option_from_3_0() -> None:
    res = _emu("-x-era", "2.12", "--preconfig", env={})
    assert res.returncode == 1
    assert res.stderr == "qemu-monitor-emu: --preconfig: invalid option\n"


def test_x_oob_only_in_2_12() -> None:
    res = _emu("-chardev", "null,id=n", "-mon", "n,mode=control,x-oob=on", env={})
    assert res.returncode == 1 and "Invalid parameter 'x-oob'" in res.stderr


def test_era_from_env_and_command_line(tmp_path: Any) -> None:
    """The env var picks the era; -x-era overrides it (QMP over stdio)."""
    qmp = '{"execute": "qmp_capabilities"}\n{"execute": "quit"}\n'
    for args, env, major in (
        ((), {ERA_ENV: "2.12"}, 2),
        (("-x-era", "8.1"), {ERA_ENV: "2.12"}, 8),
        ((), {}, 7),
    ):
        res = subprocess.run(
            [sys.executable, "-m", "system", "-nodefaults", "-qmp", "stdio", *args],
            input=qmp,
            capture_output=True,
            text=True,
            timeout=30,
            env={**os.environ, **env},
        )
        assert res.returncode == 0, res.stderr
        assert f'"major": {major}' in res.stdout.splitlines()[0]
