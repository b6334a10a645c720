"""Event messages built from the schema (qapi_event_build)."""

from __future__ import annotations

import pytest

from qapi.qmp_event import qapi_event_build
from qapi.schema import qapi_schema
from tests.qapi.support import load_test_schema

NOW_US = 1_795_255_576_302_737  # a fixed wall-clock instant, in microseconds
TEST_SCHEMA = load_test_schema()
SCHEMA = qapi_schema()


def now() -> int:
    return NOW_US


def test_event_with_data() -> None:
    data = {"reason": "host-qmp-quit", "guest": False}
    msg = qapi_event_build(SCHEMA, "SHUTDOWN", data, real_time_us=now)
    assert msg == {
        "event": "SHUTDOWN",
        "timestamp": {"seconds": 1_795_255_576, "microseconds": 302_737},
        "data": {"guest": False, "reason": "host-qmp-quit"},
    }
    # QEMU's insertion order, which the JSON writer turns into its byte order
    assert list(msg) == ["event", "timestamp", "data"]
    assert list(msg["timestamp"]) == ["seconds", "microseconds"]
    assert list(msg["data"]) == ["guest", "reason"]


def test_event_without_data_type_has_no_data_member() -> None:
    assert qapi_event_build(SCHEMA, "STOP", real_time_us=now) == {
        "event": "STOP",
        "timestamp": {"seconds": 1_795_255_576, "microseconds": 302_737},
    }


def test_empty_data_is_left_out() -> None:
    msg = qapi_event_build(TEST_SCHEMA, "TEST_EVENT", {}, now)
    assert "data" not in msg
    msg = qapi_event_build(TEST_SCHEMA, "TEST_EVENT", {"b": "x"}, now)
    assert msg["data"] == {"b": "x"}


def test_boxed_event_data_is_the_whole_object() -> None:
    msg = qapi_event_build(TEST_SCHEMA, "TEST_EVENT_BOXED", {"x": 1, "kind": "one"}, now)
    assert list(msg["data"].items()) == [("kind", "one"), ("x", 1)]


def test_real_clock_by_default() -> None:
    msg = qapi_event_build(SCHEMA, "RESUME")
    assert msg["timestamp"]["seconds"] > 1_600_000_000
    assert 0 <= msg["timestamp"]["microseconds"] < 1_000_000


@pytest.mark.parametrize(
    ("name", "data", "problem"),
    [
        ("STOP", {}, "carries no data"),
        ("RTC_CHANGE", {"offset": 1}, "qom-path: required member"),
        ("WATCHDOG", {"action": "explode"}, "'explode' is not a value of WatchdogAction"),
        ("VSERPORT_CHANGE", {"id": "v", "open": 1}, "1 is not a bool"),
        ("BALLOON_CHANGE", {"actual": 1, "extra": 2}, "members ['extra'] are not in"),
        ("MEMORY_DEVICE_SIZE_CHANGE", {"size": -1, "qom-path": "/m"}, "-1 is not a valid size"),
    ],
)
def test_bad_data_from_emulator_code_is_a_bug(name: str, data: dict, problem: str) -> None:
    with pytest.raises(AssertionError) as info:
        qapi_event_build(SCHEMA, name, data, real_time_us=now)
    assert problem in str(info.value)


def test_unknown_event_is_a_bug() -> None:
    with pytest.raises(KeyError):
        qapi_event_build(SCHEMA, "NO_SUCH_EVENT")
