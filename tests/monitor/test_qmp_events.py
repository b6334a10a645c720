"""QAPI events in process: throttling on the virtual clock, who receives
events, and re-entrant emission (monitor.c's event code, bugs.md entry 13).

Events are written synchronously by the emitting thread, so what a client
has received right after ``qapi_event_send`` returns is exactly what was sent.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from monitor.monitor import EVENT_RATE_NS, qapi_event_send
from tests.monitor.conftest import QmpEnv, QmpPeer, run_passes
from util.timer import QEMU_CLOCK_VIRTUAL, qemu_clock_step

RTC = "RTC_CHANGE"
VSERPORT = "VSERPORT_CHANGE"


def rtc(offset: int) -> dict[str, Any]:
    return {"offset": offset, "qom-path": "/machine/unattached/device[0]"}


def events(peer: QmpPeer, name: Optional[str] = None) -> list[Optional[dict[str, Any]]]:
    """The data of every event received so far (of ``name``, if given)."""
    msgs = peer.take_all()
    assert all("event" in m for m in msgs), msgs
    return [m.get("data") for m in msgs if name is None or m["event"] == name]


@pytest.fixture
def throttled(qmp_env: QmpEnv, virtual_clock: None) -> QmpPeer:
    """One negotiated monitor; throttling runs on the manual virtual clock."""
    qmp_env.g.event_clock = QEMU_CLOCK_VIRTUAL
    return qmp_env.add_qmp("qmp0")


def test_rtc_change_is_throttled_to_the_latest(qmp_env: QmpEnv, throttled: QmpPeer) -> None:
    """The first event goes out at once; later ones within the second are
    held and only the newest is sent when the timer fires; a quiet period
    then forgets the state, so the next event is immediate again."""
    qapi_event_send(RTC, rtc(1))
    assert events(throttled) == [rtc(1)]

    for offset in (2, 3, 4):
        qapi_event_send(RTC, rtc(offset))
    run_passes()
    assert events(throttled) == [], "held back until the rate window ends"

    qemu_clock_step(EVENT_RATE_NS - 1)
    run_passes()
    assert events(throttled) == [], "one nanosecond early"

    qemu_clock_step(1)  # the timer fires in the main loop: only the newest goes out
    assert [m["data"] for m in throttled.wait_msgs(1)] == [rtc(4)]
    run_passes()
    assert events(throttled) == []

    # the window restarted when the held event went out: a new one is held
    qapi_event_send(RTC, rtc(5))
    assert events(throttled) == []
    qemu_clock_step(EVENT_RATE_NS)
    assert [m["data"] for m in throttled.wait_msgs(1)] == [rtc(5)]

    # a whole window without events: the timer finds nothing and drops the state
    qemu_clock_step(EVENT_RATE_NS)
    run_passes()
    assert events(throttled) == []
    assert qmp_env.g.monitor_qapi_event_state == {}
    qapi_event_send(RTC, rtc(6))
    assert events(throttled) == [rtc(6)]


def test_held_event_is_the_latest_one(qmp_env: QmpEnv, throttled: QmpPeer) -> None:
    qapi_event_send(RTC, rtc(10))
    qapi_event_send(RTC, rtc(11))
    qapi_event_send(RTC, rtc(12))
    assert events(throttled) == [rtc(10)]
    qemu_clock_step(1_000_000_000)
    assert [m["data"] for m in throttled.wait_msgs(1)] == [rtc(12)]
    run_passes()
    assert events(throttled) == []


def test_x_debug_emit_event_is_throttled(qmp_env: QmpEnv, throttled: QmpPeer) -> None:
    """The same through the emulator's QMP command, as a client sees it."""
    for offset in (1, 2, 3):
        reply = throttled.execute("x-debug-emit-event", {"event": RTC, "data": rtc(offset)})
        assert reply["return"] == {}
    assert events(throttled) == [rtc(1)]
    qemu_clock_step(1_000_000_000)
    assert [m["data"] for m in throttled.wait_msgs(1)] == [rtc(3)]


def test_vserport_change_is_throttled_per_id(qmp_env: QmpEnv, throttled: QmpPeer) -> None:
    """VSERPORT_CHANGE is keyed by ``id``: another port is not held back by
    the first one's window, the same port is."""
    qapi_event_send(VSERPORT, {"id": "a", "open": True})
    qapi_event_send(VSERPORT, {"id": "b", "open": True})
    qapi_event_send(VSERPORT, {"id": "a", "open": False})
    qapi_event_send(VSERPORT, {"id": "c", "open": True})
    assert events(throttled) == [
        {"id": "a", "open": True},
        {"id": "b", "open": True},
        {"id": "c", "open": True},
    ]
    qemu_clock_step(1_000_000_000)
    assert [m["data"] for m in throttled.wait_msgs(1)] == [{"id": "a", "open": False}]
    run_passes()
    assert events(throttled) == []


def test_unthrottled_events_are_never_held(qmp_env: QmpEnv, throttled: QmpPeer) -> None:
    qapi_event_send("POWERDOWN")
    qapi_event_send("POWERDOWN")
    assert [m["event"] for m in throttled.take_all()] == ["POWERDOWN", "POWERDOWN"]
    assert qmp_env.g.monitor_qapi_event_state == {}


def test_events_reach_only_negotiated_monitors(qmp_env: QmpEnv) -> None:
    """A monitor still negotiating gets no event; once negotiated it does.
    Monitors in the main loop and in the I/O thread alike."""
    done = qmp_env.add_qmp("done")
    done_main = qmp_env.add_qmp("done-main", io_thread=False)
    waiting = qmp_env.add_qmp("waiting", negotiate=False)
    waiting_main = qmp_env.add_qmp("waiting-main", io_thread=False, negotiate=False)

    qapi_event_send("POWERDOWN")
    assert [m["event"] for m in done.take_all()] == ["POWERDOWN"]
    assert [m["event"] for m in done_main.take_all()] == ["POWERDOWN"]
    assert waiting.take_all() == []
    assert waiting_main.take_all() == []

    waiting.negotiate()
    qapi_event_send("POWERDOWN")
    assert [m["event"] for m in waiting.take_all()] == ["POWERDOWN"]
    assert [m["event"] for m in done_main.take_all()] == ["POWERDOWN"]
    assert waiting_main.take_all() == []

    # a new client on a negotiated monitor is back in negotiation
    done.hangup()
    done.reconnect()
    qapi_event_send("POWERDOWN")
    assert done.take_all() == []
    assert [m["event"] for m in done_main.take_all()] == ["POWERDOWN"]


def test_reentrant_emission_is_queued_in_order(qmp_env: QmpEnv) -> None:
    """bugs.md 13: a chardev write that raises another event while the first
    is being broadcast (monitor_lock held) must not deadlock; the nested
    event is sent after the first one has reached *every* monitor."""
    first = qmp_env.add_qmp("first")
    second = qmp_env.add_qmp("second", io_thread=False)
    nested: list[str] = []
    real_write = first.chr.chr_write

    def write_and_emit(buf: bytes) -> int:
        n = real_write(buf)
        if b'"POWERDOWN"' in buf and not nested:
            nested.append("RESET")
            qapi_event_send("RESET", {"guest": True, "reason": "guest-reset"})
            nested.append("STOP")
            qapi_event_send("STOP")
        return n

    first.chr.chr_write = write_and_emit  # type: ignore[method-assign]
    # mon_list is newest first: "second" is written to after "first"
    qapi_event_send("POWERDOWN")
    assert nested == ["RESET", "STOP"]
    expected = ["POWERDOWN", "RESET", "STOP"]
    assert [m["event"] for m in first.take_all()] == expected
    assert [m["event"] for m in second.take_all()] == expected
