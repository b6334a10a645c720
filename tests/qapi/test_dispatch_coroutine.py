"""Where handlers run: the coroutine / bottom-half hand-off of qmp_dispatch.

The test thread is the main loop thread (``main_loop`` fixture) and steps the
two main contexts by hand, so every hand-off is observed at the exact poll
where it happens:

* an ordinary command dispatched from a coroutine runs in a one-shot BH in
  iohandler_ctx, never from a poll of qemu_aio_context, with the current
  monitor set for the main thread, while the coroutine waits;
* a coroutine command runs inside the coroutine, moved to qemu_aio_context
  first, and the coroutine always yields once more on the way back to
  iohandler_ctx;
* outside coroutine context (OOB) the handler runs at once.
"""

from __future__ import annotations

from typing import Any, Optional

import pytest

from qapi.error import error_setg
from qapi.qmp_dispatch import qmp_dispatch
from qapi.qmp_registry import (
    QCO_ALLOW_OOB,
    QCO_COROUTINE,
    QCO_NO_OPTIONS,
    QmpCommandFunc,
    QmpCommandList,
    QmpCommandOptions,
    qmp_register_command,
)
from tests.conftest import CallbackErrors
from tests.qapi.support import FakeMonitors
from util.aio import aio_bh_schedule_oneshot, aio_co_schedule, aio_co_wake, aio_poll
from util.coroutine import (
    Coroutine,
    qemu_coroutine_create,
    qemu_coroutine_self,
    qemu_coroutine_yield,
    qemu_in_coroutine,
)
from util.main_loop import MainLoop, iohandler_get_aio_context, qemu_get_aio_context
from util.trace import TraceRecord, trace_enable_events, trace_event, trace_memory_start

MON = object()
mark = trace_event("qapi_test_mark", "what")


class Dispatcher:
    """A stand-in for monitor_qmp_dispatcher_co: one request, one reply."""

    def __init__(self, loop: MainLoop) -> None:
        self.loop = loop
        self.cmds = QmpCommandList()
        self.monitors = FakeMonitors()
        self.events: list[tuple[str, Any]] = []
        self.rsp: Optional[dict[str, Any]] = None
        self.co: Optional[Coroutine] = None

    def register(self, name: str, fn: QmpCommandFunc, options: QmpCommandOptions) -> None:
        qmp_register_command(self.cmds, name, fn, options)

    def record(self, what: str) -> None:
        """Note where a handler runs: in a coroutine or not, and for which monitor."""
        self.events.append((what, (qemu_in_coroutine(), self.monitors.monitor_cur())))

    def start(self, request: dict[str, Any]) -> None:
        def entry(_: Any) -> None:
            rsp = qmp_dispatch(self.cmds, request, False, MON, self.monitors.env())
            mark("reply")
            self.rsp = rsp
            self.events.append(("reply", rsp))

        self.co = qemu_coroutine_create(entry, None, "test_dispatcher_co")
        aio_co_schedule(self.loop.iohandler_ctx, self.co)

    def poll_iohandler(self) -> bool:
        return aio_poll(self.loop.iohandler_ctx, False)

    def poll_main(self) -> bool:
        return aio_poll(self.loop.qemu_aio_context, False)


@pytest.fixture
def dispatcher(main_loop: MainLoop) -> Dispatcher:
    return Dispatcher(main_loop)


def test_ordinary_command_runs_in_a_bh_in_iohandler_ctx(dispatcher: Dispatcher) -> None:
    d = dispatcher
    d.register("ord", lambda args: d.record("handler"), QCO_NO_OPTIONS)
    d.start({"execute": "ord", "id": 1})
    assert d.poll_iohandler()  # the coroutine starts, schedules the BH, yields
    assert d.events == []
    assert not d.poll_main()  # a nested qemu_aio_context loop never runs it
    assert d.events == []
    assert d.poll_iohandler()  # the BH: handler outside the coroutine, monitor set
    assert d.events == [("handler", (False, MON))]
    assert d.monitors.cur == {}  # cleared before the coroutine is woken
    assert d.poll_iohandler()  # aio_co_wake was scheduled into iohandler_ctx
    assert d.events[-1] == ("reply", {"return": {}, "id": 1})
    assert d.co is not None and d.co.finished


def test_errors_from_the_bh_reach_the_reply(dispatcher: Dispatcher) -> None:
    d = dispatcher

    def failing(args: dict[str, Any]) -> None:
        raise error_setg("Chardev '%s' not found", "x")

    d.register("fail", failing, QCO_NO_OPTIONS)
    d.start({"execute": "fail", "id": "f"})
    for _ in range(3):
        d.poll_iohandler()
    assert d.rsp == {"error": {"class": "GenericError", "desc": "Chardev 'x' not found"}, "id": "f"}


def _trace_hand_offs() -> list[TraceRecord]:
    records = trace_memory_start()
    for name in ("qapi_test_mark", "aio_co_schedule", "qemu_coroutine_yield"):
        trace_enable_events(name)
    return records


def _after_handler(records: list[TraceRecord]) -> list[tuple[str, Any]]:
    """The dispatcher's hand-offs from the handler's return to the reply."""
    timeline = [
        (r.name, r.args)
        for r in records
        if r.name == "qapi_test_mark" or "test_dispatcher_co" in r.args.values()
    ]
    return timeline[timeline.index(("qapi_test_mark", {"what": "handler returns"})) :]


BACK_TO_IOHANDLER = [
    ("qapi_test_mark", {"what": "handler returns"}),
    ("aio_co_schedule", {"ctx": "iohandler_ctx", "co": "test_dispatcher_co"}),
    ("qemu_coroutine_yield", {"from_": "test_dispatcher_co", "to": "leader:MainThread"}),
    ("qapi_test_mark", {"what": "reply"}),
]


def _poll_until_reply(d: Dispatcher) -> None:
    """Step both main contexts, as the main loop does, until the reply."""
    for _ in range(5):
        if d.rsp is not None:
            return
        d.poll_iohandler()
        d.poll_main()
    raise AssertionError("no reply after 5 passes of both main contexts")


def test_coroutine_command_runs_in_the_coroutine(dispatcher: Dispatcher) -> None:
    d = dispatcher
    records = _trace_hand_offs()

    def sleepy(args: dict[str, Any]) -> dict[str, Any]:
        d.record("handler starts")
        co = qemu_coroutine_self()
        aio_bh_schedule_oneshot(qemu_get_aio_context(), lambda _: aio_co_wake(co), None, "wake")
        qemu_coroutine_yield()  # the main loop goes on meanwhile
        d.record("handler resumes")
        mark("handler returns")
        return {"slept": True}

    d.register("sleepy", sleepy, QCO_COROUTINE)
    d.start({"execute": "sleepy"})
    assert d.poll_iohandler()  # the coroutine moves itself to qemu_aio_context...
    assert d.events == []
    assert d.poll_main()  # ...where the handler starts, then yields
    assert d.events == [("handler starts", (True, MON))]
    aio_bh_schedule_oneshot(qemu_get_aio_context(), lambda _: d.record("other work"), None, "w")
    # the wake-up BH enters the coroutine directly (it now lives in this
    # context); the main loop's other work runs in the same pass
    assert d.poll_main()
    assert d.events[-2:] == [("handler resumes", (True, MON)), ("other work", (False, None))]
    _poll_until_reply(d)
    assert d.events[-1] == ("reply", {"return": {"slept": True}})
    assert d.monitors.cur == {}
    # Moving back to iohandler_ctx always yields once before the reply.
    assert _after_handler(records) == BACK_TO_IOHANDLER


def test_coroutine_command_errors_still_move_back(dispatcher: Dispatcher) -> None:
    d = dispatcher
    records = _trace_hand_offs()

    def failing(args: dict[str, Any]) -> None:
        mark("handler returns")
        raise error_setg("nope")

    d.register("cofail", failing, QCO_COROUTINE)
    d.start({"execute": "cofail"})
    _poll_until_reply(d)
    assert d.rsp == {"error": {"class": "GenericError", "desc": "nope"}}
    assert _after_handler(records) == BACK_TO_IOHANDLER


def test_outside_coroutine_context_the_handler_runs_at_once(main_loop: MainLoop) -> None:
    d = Dispatcher(main_loop)
    d.register("oobcmd", lambda args: d.record("handler"), QCO_ALLOW_OOB)
    rsp = qmp_dispatch(d.cmds, {"exec-oob": "oobcmd"}, True, MON, d.monitors.env())
    assert rsp == {"return": {}}
    assert d.events == [("handler", (False, MON))]


def test_coroutine_command_outside_coroutine_is_a_bug(main_loop: MainLoop) -> None:
    d = Dispatcher(main_loop)
    d.register("co", lambda args: None, QCO_COROUTINE)
    with pytest.raises(AssertionError):
        qmp_dispatch(d.cmds, {"execute": "co"}, False, MON, d.monitors.env())


@pytest.mark.callback_errors_expected
def test_a_bug_in_a_bh_handler_surfaces_in_the_dispatcher(
    dispatcher: Dispatcher, hygiene: CallbackErrors
) -> None:
    d = dispatcher

    def broken(args: dict[str, Any]) -> None:
        raise ZeroDivisionError("bug")

    d.register("broken", broken, QCO_NO_OPTIONS)
    d.start({"execute": "broken"})
    for _ in range(3):
        d.poll_iohandler()
    assert d.co is not None and d.co.finished  # not left waiting forever
    assert d.rsp is None
    assert [type(exc) for _, exc in hygiene] == [ZeroDivisionError]
    assert d.monitors.cur == {}
    assert iohandler_get_aio_context() is d.loop.iohandler_ctx
