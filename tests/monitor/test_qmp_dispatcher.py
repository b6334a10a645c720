"""The QMP dispatcher coroutine in process (monitor/qmp.c): round-robin,
the ``qmp_dispatcher_co_busy`` handshake, ``monitor_cleanup``, coroutine
commands, ``monitor_cur()``, suspend/resume pairing on disconnect (bugs.md
1), in-order in-band errors (bugs.md 17) and replies of a client that
disconnected (bugs.md 3).

Interleavings are made deterministic without sleeping: a coroutine command
(``x-debug-co-sleep``) with a timer that only the test fires parks the
dispatcher, and the main loop (the test thread) runs only when the test
pumps it, while the monitor I/O thread keeps reading on its own.
"""

from __future__ import annotations

from typing import Any

import pytest

import monitor.qmp
import monitor.qmp_cmds
from monitor.monitor import monitor_cleanup, monitor_cur, monitor_globals_initialised
from qapi.qmp_dispatch import qmp_dispatch
from qapi.qmp_registry import qmp_find_command
from tests.monitor.conftest import (
    FOREVER_MS,
    QmpEnv,
    QmpPeer,
    co_sleep_timers,
    run_passes,
    run_until,
    wake_co_sleepers,
)
from util.aio import aio_timer_new
from util.atomic import qatomic_read
from util.coroutine import qemu_coroutine_self, qemu_in_coroutine
from util.main_loop import qemu_get_aio_context, qemu_in_main_thread
from util.thread import QemuEvent, qemu_thread_create, qemu_thread_get_name
from util.timer import QEMU_CLOCK_REALTIME, SCALE_MS, qemu_clock_get_ms, timer_mod
from util.trace import TraceRecord, trace_enable_events, trace_memory_start

QUERY_STATUS = {"running": True, "singlestep": False, "status": "running"}


def queue_len(peer: QmpPeer) -> int:
    with peer.mon.qmp_queue_lock:
        return len(peer.mon.qmp_requests)


def suspend_cnt(peer: QmpPeer) -> int:
    return qatomic_read(peer.mon.suspend_cnt)


def park_dispatcher(peer: QmpPeer, req_id: str = "sleep") -> str:
    """``peer`` runs a coroutine command that sleeps until the test wakes it:
    the dispatcher stays inside it and pops nothing else meanwhile."""
    peer.cmd("x-debug-co-sleep", {"ms": FOREVER_MS}, req_id=req_id)
    run_until(lambda: len(co_sleep_timers()) == 1, lambda: "x-debug-co-sleep never started")
    return req_id


def in_band_ids(records: list[TraceRecord]) -> list[str]:
    """Ids of the in-band commands the dispatcher ran, in order (JSON text stripped)."""
    return [r.args["id"].strip('"') for r in records if r.name == "monitor_qmp_cmd_in_band"]


# ---------------------------------------------------------------- round-robin


def test_dispatcher_serves_monitors_round_robin(qmp_env: QmpEnv) -> None:
    """With requests queued on two monitors, the dispatcher alternates
    between them (the served monitor moves to the back of mon_list) instead
    of draining one queue first."""
    a = qmp_env.add_qmp("a", oob=True)
    b = qmp_env.add_qmp("b", oob=True)
    parker = qmp_env.add_qmp("parker", oob=True)
    park_dispatcher(parker)
    for i in range(4):
        a.cmd("query-status", req_id=f"a{i}")
    for i in range(4):
        b.cmd("query-status", req_id=f"b{i}")
    run_until(lambda: queue_len(a) == 4 and queue_len(b) == 4, lambda: (queue_len(a), queue_len(b)))

    trace_enable_events("monitor_qmp_cmd_in_band")
    records = trace_memory_start()
    wake_co_sleepers()
    assert [m["id"] for m in a.wait_msgs(4)] == ["a0", "a1", "a2", "a3"]
    assert [m["id"] for m in b.wait_msgs(4)] == ["b0", "b1", "b2", "b3"]
    order = in_band_ids(records)
    assert sorted(order) == [f"a{i}" for i in range(4)] + [f"b{i}" for i in range(4)]
    monitors = [rid[0] for rid in order]
    assert all(x != y for x, y in zip(monitors, monitors[1:])), f"not interleaved: {order}"


def pending_queues(env: QmpEnv) -> tuple[int, int]:
    """(the dispatcher's count of non-empty queues, the true number)."""
    g = env.g
    with g.monitor_lock:
        true = sum(1 for mon in g.mon_list if mon.qmp_requests)
    return qatomic_read(g.qmp_queues_pending), true


def test_pending_count_never_misses_a_queue(qmp_env: QmpEnv) -> None:
    """The count the dispatcher consults before scanning is never below the
    number of non-empty queues (a miss would leave a request unserved), and
    is back to zero once every queue is drained."""
    a = qmp_env.add_qmp("a", oob=True)
    b = qmp_env.add_qmp("b", oob=True)
    parker = qmp_env.add_qmp("parker", oob=True)
    park_dispatcher(parker)
    a.cmd("query-status", req_id="a0")
    b.cmd("query-status", req_id="b0")
    b.cmd("query-status", req_id="b1")
    run_until(lambda: pending_queues(qmp_env) == (2, 2), lambda: pending_queues(qmp_env))
    wake_co_sleepers()
    assert parker.recv() == {"return": {}, "id": "sleep"}
    assert [m["id"] for m in a.wait_msgs(1)] == ["a0"]
    assert [m["id"] for m in b.wait_msgs(2)] == ["b0", "b1"]
    run_until(lambda: pending_queues(qmp_env) == (0, 0), lambda: pending_queues(qmp_env))


def test_a_lone_busy_monitor_is_served_without_scanning_idle_ones(
    qmp_env: QmpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one queue holding requests and many monitors idle, the
    dispatcher pops it without peeking at every queue (round trips do not
    grow with idle monitors), and still rotates it to the end of mon_list."""
    idle = [qmp_env.add_qmp(f"idle{i}", oob=False) for i in range(8)]
    busy = qmp_env.add_qmp("busy", oob=False)
    peeks: list[object] = []
    real = monitor.qmp._queued_requests

    def counting_peek(mon: Any) -> Any:
        peeks.append(mon)
        return real(mon)

    monkeypatch.setattr(monitor.qmp, "_queued_requests", counting_peek)
    for i in range(5):
        assert busy.execute("query-name", req_id=f"n{i}") == {"return": {}, "id": f"n{i}"}
    assert peeks == []
    with qmp_env.g.monitor_lock:
        assert qmp_env.g.mon_list[-1] is busy.mon
    assert all(queue_len(peer) == 0 for peer in idle)


# ---------------------------------------------------------------- busy handshake


def test_wake_while_running_is_consumed_not_doubled(
    qmp_env: QmpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """bugs.md 7, interleaving A: after the dispatcher popped a request with
    busy cleared, the I/O thread queues another request and wakes it before
    the dispatcher sets busy again.  The dispatcher must consume that wake-up
    (one extra yield) before running the command; otherwise the stale
    schedule re-enters it in the middle of its command (a wrong reply) or
    schedules it twice (an abort)."""
    a = qmp_env.add_qmp("a", oob=True)
    b = qmp_env.add_qmp("b", oob=True)
    g = qmp_env.g
    real_xchg = monitor.qmp.qatomic_xchg
    injected: list[str] = []

    def xchg(cell: Any, value: Any) -> Any:
        if cell is g.qmp_dispatcher_co_busy and qemu_in_coroutine() and not injected:
            # the dispatcher is about to set busy after its pop: this is the
            # window; play the I/O thread's part (enqueue + wake) from another thread
            assert qatomic_read(cell) is False
            injected.append("late")
            t = qemu_thread_create(
                "fake-iot",
                monitor.qmp.handle_qmp_command,
                b.mon,
                {"execute": "query-status", "id": "late"},
                None,
            )
            t.join(5)
            assert qatomic_read(cell) is True, "the late request did not wake the dispatcher"
        return real_xchg(cell, value)

    monkeypatch.setattr(monitor.qmp, "qatomic_xchg", xchg)
    a.cmd("query-status", req_id="first")
    assert a.recv() == {"return": QUERY_STATUS, "id": "first"}
    assert b.recv() == {"return": QUERY_STATUS, "id": "late"}
    assert injected == ["late"]
    monkeypatch.undo()
    assert a.execute("query-name") == {"return": {}, "id": "a-2"}
    assert b.execute("query-name") == {"return": {}, "id": "b-2"}


@pytest.mark.parametrize("io_thread", [True, False], ids=["iothread", "main-loop"])
def test_many_requests_while_the_dispatcher_runs(qmp_env: QmpEnv, io_thread: bool) -> None:
    """Requests keep arriving from the I/O thread (and the main loop) while
    the dispatcher runs: every wake-up finds it busy or idle, never
    scheduled twice, and every request is answered once, in order."""
    peers = [qmp_env.add_qmp(f"m{i}", oob=io_thread, io_thread=io_thread) for i in range(3)]
    n = 25
    for peer in peers:
        peer.send(
            b"".join(
                b'{"execute": "query-status", "id": "%s-%d"}\n' % (peer.mon.name.encode(), i)
                for i in range(n)
            )
        )
    for peer in peers:
        replies = peer.wait_msgs(n)
        assert [m["id"] for m in replies] == [f"{peer.mon.name}-{i}" for i in range(n)]
        assert all(m["return"] == QUERY_STATUS for m in replies)
        assert suspend_cnt(peer) == 0


# ---------------------------------------------------------------- monitor_cleanup


def test_cleanup_with_the_dispatcher_idle(qmp_env: QmpEnv) -> None:
    peer = qmp_env.add_qmp("qmp0", oob=True)
    main = qmp_env.add_qmp("main", io_thread=False)
    co = qatomic_read(qmp_env.g.qmp_dispatcher_co)
    assert co is not None
    run_passes()
    monitor_cleanup()
    assert co.finished
    assert qatomic_read(qmp_env.g.qmp_dispatcher_co) is None
    assert qmp_env.g.mon_list == [] and qmp_env.g.mon_iothread is None
    assert peer.mon.chr.chr is None and main.mon.chr.chr is None
    assert not monitor_globals_initialised()


@pytest.mark.parametrize("io_thread", [True, False], ids=["iothread", "main-loop"])
def test_cleanup_completes_a_coroutine_command_in_flight(qmp_env: QmpEnv, io_thread: bool) -> None:
    """monitor_cleanup stops the dispatcher by polling both main contexts:
    the coroutine command in progress finishes (its timer fires inside the
    cleanup's own poll) and its reply is sent; the request queued behind it
    is never started."""
    peer = qmp_env.add_qmp("qmp0", io_thread=io_thread, oob=io_thread)
    park_dispatcher(peer, "in-flight")
    peer.cmd("query-status", req_id="queued")
    if io_thread:
        run_until(lambda: queue_len(peer) == 1)

    # fire the sleeper from qemu_aio_context, which only the cleanup polls now
    def kick_cb(opaque: Any) -> None:
        wake_co_sleepers()

    kick = aio_timer_new(qemu_get_aio_context(), QEMU_CLOCK_REALTIME, SCALE_MS, kick_cb)
    timer_mod(kick, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 1)
    co = qatomic_read(qmp_env.g.qmp_dispatcher_co)
    assert co is not None
    monitor_cleanup()
    assert co.finished and co_sleep_timers() == []
    assert peer.take_all() == [{"return": {}, "id": "in-flight"}]


# ---------------------------------------------------------------- coroutine commands


def test_coroutine_command_yields_to_the_main_loop(
    qmp_env: QmpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """x-debug-co-sleep yields inside the dispatcher coroutine: meanwhile the
    main loop runs HMP (whose errors go to the HMP monitor: monitor_cur() is
    per coroutine, bugs.md 8) and another monitor's OOB command; in-band
    commands of every monitor wait for the one dispatcher.  Inside the
    command, before and after the yield, monitor_cur() is its own monitor."""
    sleeper = qmp_env.add_qmp("sleeper", oob=True)
    other = qmp_env.add_qmp("other", oob=True)
    hmp = qmp_env.add_hmp("hmp")
    seen: list[tuple[str, Any, Any]] = []
    real_yield = monitor.qmp_cmds.qemu_coroutine_yield

    def recording_yield() -> None:
        seen.append(("before", monitor_cur(), qemu_coroutine_self()))
        real_yield()
        seen.append(("after", monitor_cur(), qemu_coroutine_self()))

    monkeypatch.setattr(monitor.qmp_cmds, "qemu_coroutine_yield", recording_yield)
    dispatcher = qatomic_read(qmp_env.g.qmp_dispatcher_co)
    park_dispatcher(sleeper)
    assert monitor_cur() is None, "nothing is current for the main loop between callbacks"

    other.cmd("query-status", req_id="in-band")
    assert other.execute("query-yank", oob=True)["return"] == []
    hmp.type("info status")
    assert b"VM status: running\r\n" in hmp.wait_for(b"running\r\n(qemu) ")
    hmp.type("exit_preconfig")
    out = hmp.wait_for(b"initialization\r\n(qemu) ")
    assert b"Error: The command is permitted only before machine initialization\r\n" in out
    run_passes()
    assert other.take_all() == [], "in-band commands wait for the sleeping dispatcher"
    assert sleeper.take_all() == []

    wake_co_sleepers()
    assert sleeper.recv() == {"return": {}, "id": "sleep"}
    assert other.recv() == {"return": QUERY_STATUS, "id": "in-band"}
    assert seen == [
        ("before", sleeper.mon, dispatcher),
        ("after", sleeper.mon, dispatcher),
    ]


def test_monitor_cur_of_bh_and_oob_commands(
    qmp_env: QmpEnv, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An ordinary in-band command runs in a BH of the main thread, an OOB
    command in the I/O thread; each sees its own monitor as current, even
    while the other is in the middle of its handler."""
    oob_mon = qmp_env.add_qmp("oob", oob=True)
    main_mon = qmp_env.add_qmp("main", io_thread=False)
    cmd = qmp_find_command(qmp_env.g.qmp_commands, "query-yank")
    assert cmd is not None
    real_fn = cmd.fn
    seen: list[tuple[str, Any, bool, bool]] = []
    oob_entered, oob_release = QemuEvent(), QemuEvent()

    def recording_fn(args: dict[str, Any]) -> Any:
        where = qemu_thread_get_name()
        seen.append((where, monitor_cur(), qemu_in_coroutine(), qemu_in_main_thread()))
        if not qemu_in_main_thread():
            oob_entered.set()
            assert oob_release.wait(5)
            seen.append((where, monitor_cur(), qemu_in_coroutine(), False))
        return real_fn(args)

    monkeypatch.setattr(cmd, "fn", recording_fn)
    oob_mon.cmd("query-yank", req_id="oob", oob=True)
    assert oob_entered.wait(5)
    # the I/O thread is inside the OOB handler now; the main loop serves the other
    assert main_mon.execute("query-yank") == {"return": [], "id": "main-2"}
    oob_release.set()
    assert oob_mon.recv() == {"return": [], "id": "oob"}
    assert seen == [
        ("IO mon_iothread", oob_mon.mon, False, False),
        ("MainThread", main_mon.mon, False, True),
        ("IO mon_iothread", oob_mon.mon, False, False),
    ]


# ---------------------------------------------------------------- suspend / resume


@pytest.mark.parametrize(
    ("io_thread", "oob", "sent", "queued", "suspended"),
    [
        (True, False, 3, 1, 1),  # one request in flight: the rest stays unread
        (False, False, 3, 1, 1),
        (True, True, 10, 8, 1),  # a full queue suspends; two requests unread
        (True, True, 3, 3, 0),  # not full: nothing to resume
    ],
    ids=["iothread-no-oob", "main-loop", "oob-full-queue", "oob-partial-queue"],
)
def test_disconnect_with_queued_requests_resumes_exactly(
    qmp_env: QmpEnv, io_thread: bool, oob: bool, sent: int, queued: int, suspended: int
) -> None:
    """bugs.md 1: the client leaves while its requests wait for a busy
    dispatcher.  CLOSED drops them unanswered and resumes the monitor iff
    they had suspended it: suspend_cnt ends at 0 (never stuck at 1, never
    -1), and the next client is served."""
    peer = qmp_env.add_qmp("qmp0", io_thread=io_thread, oob=oob)
    parker = qmp_env.add_qmp("parker", oob=True)
    park_dispatcher(parker)
    for i in range(sent):
        peer.cmd("query-status", req_id=f"q{i}")
    run_until(
        lambda: queue_len(peer) == queued and suspend_cnt(peer) == suspended,
        lambda: (queue_len(peer), suspend_cnt(peer)),
    )
    peer.hangup()
    run_until(
        lambda: queue_len(peer) == 0 and suspend_cnt(peer) == 0,
        lambda: (queue_len(peer), suspend_cnt(peer)),
    )
    wake_co_sleepers()
    assert parker.recv() == {"return": {}, "id": "sleep"}
    run_passes()
    assert suspend_cnt(peer) == 0

    peer.reconnect()
    peer.negotiate(oob)
    assert peer.execute("query-status")["return"] == QUERY_STATUS
    run_passes()
    assert suspend_cnt(peer) == 0
    assert qatomic_read(qmp_env.g.qmp_queues_pending) == 0, "the dropped queue was uncounted"


# ---------------------------------------------------------------- in-band errors


def test_in_band_errors_never_overtake_earlier_replies(qmp_env: QmpEnv) -> None:
    """bugs.md 17: with OOB on, syntax and semantic errors of in-band input
    are queued like requests and answered in order; only an OOB reply
    overtakes."""
    peer = qmp_env.add_qmp("qmp0", oob=True)
    park_dispatcher(peer, "slow")
    peer.send(
        b'{"execute": "query-status", "id": "syntax", }\n'
        b'{"execute": "no-such-command", "id": "unknown"}\n'
        b'{"execute": "query-status", "id": "member", "foo": 1}\n'
        b"[1]\n"
        b'{"execute": "query-status", "id": "ok"}\n'
        b'{"exec-oob": "query-yank", "id": "oob"}\n'
    )
    assert peer.recv() == {"return": [], "id": "oob"}
    run_until(lambda: queue_len(peer) == 5, lambda: queue_len(peer))
    assert peer.take_all() == []
    wake_co_sleepers()
    replies = peer.wait_msgs(6)
    assert replies[0] == {"return": {}, "id": "slow"}
    assert replies[1]["error"]["desc"].startswith("JSON parse error") and "id" not in replies[1]
    assert replies[2] == {
        "id": "unknown",
        "error": {
            "class": "CommandNotFound",
            "desc": "The command no-such-command has not been found",
        },
    }
    assert replies[3] == {
        "id": "member",
        "error": {"class": "GenericError", "desc": "QMP input member 'foo' is unexpected"},
    }
    assert replies[4] == {
        "error": {"class": "GenericError", "desc": "QMP input must be a JSON object"}
    }
    assert replies[5] == {"return": QUERY_STATUS, "id": "ok"}


# ---------------------------------------------------------------- bugs.md 3


@pytest.mark.parametrize("session_check", [False, True], ids=["qemu", "x-session-check"])
def test_reply_of_a_gone_client_coroutine_command(qmp_env: QmpEnv, session_check: bool) -> None:
    """bugs.md 3: a client disconnects while its (coroutine) command runs and
    a new client connects.  QEMU, and the emulator by default, send the old
    request's reply to the new client; with x-session-check=on it is dropped."""
    peer = qmp_env.add_qmp("qmp0", session_check=session_check)
    park_dispatcher(peer, "old")
    peer.hangup()
    peer.reconnect()
    wake_co_sleepers()
    g = qmp_env.g
    run_until(lambda: co_sleep_timers() == [] and qatomic_read(g.dispatcher_servicing) is None)
    peer.cmd("qmp_capabilities", req_id="new")
    replies = peer.wait_msgs(2 if not session_check else 1)
    if session_check:
        assert replies == [{"return": {}, "id": "new"}]
    else:
        assert replies == [{"return": {}, "id": "old"}, {"return": {}, "id": "new"}]
    assert peer.execute("query-status")["return"] == QUERY_STATUS


@pytest.mark.parametrize("session_check", [False, True], ids=["qemu", "x-session-check"])
def test_gone_client_negotiation_does_not_leak(qmp_env: QmpEnv, session_check: bool) -> None:
    """bugs.md 3 as reported: the old client's qmp_capabilities waits in its
    bottom half while the client leaves and a new one is greeted.  By
    default (as in QEMU) it then completes the *new* client's negotiation,
    turning OOB on for it, replies to it with the old id, and the new
    client's own qmp_capabilities fails.  With x-session-check=on the new
    client sees nothing of the old one and negotiates normally."""
    peer = qmp_env.add_qmp("qmp0", negotiate=False, session_check=session_check)
    trace_enable_events("monitor_qmp_cmd_in_band")
    records = trace_memory_start()
    peer.cmd("qmp_capabilities", {"enable": ["oob"]}, req_id="old")
    # one main-loop pass at a time: stop once the dispatcher has scheduled the
    # command's BH (it runs in the next pass, which the test holds back)
    run_until(lambda: in_band_ids(records) == ["old"])
    peer.hangup(wait=False)
    peer.client.connect()
    # the I/O thread handles CLOSED and OPENED on its own; wait for the greeting
    assert peer.client.wait_output(1, 5)
    greeting = peer.recv()
    assert greeting["QMP"]["capabilities"] == ["oob"]
    peer.cmd("qmp_capabilities", req_id="new")
    if session_check:
        assert peer.recv() == {"return": {}, "id": "new"}
        assert peer.mon.capab == set(), "the old client's capabilities must not apply"
    else:
        assert peer.recv() == {"return": {}, "id": "old"}
        assert peer.recv() == {
            "id": "new",
            "error": {
                "class": "CommandNotFound",
                "desc": "Capabilities negotiation is already complete, command ignored",
            },
        }
        assert peer.mon.capab == {"oob"}
    assert peer.execute("query-status")["return"] == QUERY_STATUS


def test_dispatch_outside_the_dispatcher_is_refused(qmp_env: QmpEnv) -> None:
    """monitor_cur() is per coroutine: qmp_dispatch refuses to start while
    something is already current for the calling context (an assertion in
    QEMU too), so a handler can never run on behalf of the wrong monitor."""
    peer = qmp_env.add_qmp("qmp0")
    g = qmp_env.g
    assert g.dispatch_env is not None
    g.dispatch_env.monitor_set_cur(qemu_coroutine_self(), peer.mon)
    try:
        with pytest.raises(AssertionError):
            qmp_dispatch(g.qmp_commands, {"execute": "query-name"}, False, peer.mon, g.dispatch_env)
    finally:
        g.dispatch_env.monitor_set_cur(qemu_coroutine_self(), None)
