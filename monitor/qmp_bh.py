"""QEMU 2.12's QMP monitor: the bottom-half dispatcher and the responder BH
(monitor.c of v2.12.0, the out-of-band series of 2018).

The structure that ``-x-era 2.12`` selects in ``monitor_init_globals``; the
current era never imports this module.  Threads:

* the chardev context (``IO mon_iothread`` for a socket monitor with
  ``x-oob=on``, the main loop otherwise) runs ``monitor_qmp_bh_read``,
  ``handle_qmp_command_bh`` and out-of-band commands;
* the main loop runs ``monitor_qmp_bh_dispatcher``, a bottom half in
  iohandler_ctx that pops one request per run, for every monitor
  round-robin, and schedules itself again: no coroutine, so every command
  runs to completion in the BH;
* with ``queue_replies_for_iothread`` (bugs.md 18), the I/O thread runs
  ``monitor_qmp_bh_responder``, which writes the replies other threads
  queued for its monitors.

Request syntax: out-of-band execution was asked for with
``"control": {"run-oob": true}`` next to ``"execute"`` (cf869d53172 "qmp:
support out-of-band (oob) execution", Peter Xu, 2.12); ``exec-oob``
replaced it in 3.0.  With OOB enabled every request needed an ``id``, and
the request's shape was checked here, before the queue, errors answered at
once without an id (bugs.md 17, the switch
``report_inband_errors_immediately``).  Out-of-band needed ``-mon
...,x-oob=on``; without it a monitor stayed in the main loop and offered no
``oob`` capability.
"""

from __future__ import annotations

from typing import Any, Optional

from monitor.monitor import (
    monitor_can_read,
    monitor_globals,
    monitor_puts,
    monitor_resume,
    monitor_suspend,
)
from monitor.monitor_internal import QMP_REQ_QUEUE_LEN_MAX, MonitorGlobals, MonitorQMP, QMPRequest
from monitor.qmp import (
    _dispatch_request,
    _id_json,
    monitor_qmp_dispatch,
    monitor_qmp_requests_pop_any_with_lock,
    monitor_qmp_requests_push,
    monitor_qmp_respond,
    qapi_event_send_command_dropped,
    qmp_oob_enabled,
)
from monitor.trace import (
    trace_handle_qmp_command,
    trace_monitor_qmp_cmd_out_of_band,
    trace_monitor_qmp_in_band_dequeue,
    trace_monitor_qmp_in_band_enqueue,
)
from qapi.error import ErrorClass, QapiError, error_setg
from qapi.json_streamer import JSONError
from qapi.json_writer import qdict_keys
from qapi.qmp_dispatch import qmp_error_response
from util.aio import aio_bh_new, qemu_bh_delete, qemu_bh_schedule
from util.bugs import BUG
from util.iothread import iothread_get_aio_context
from util.main_loop import iohandler_get_aio_context
from util.markers import main_loop_only

#: what a 2.12 request may hold besides "execute"
_MEMBERS_2_12 = ("execute", "arguments", "id", "control")


def monitor_qmp_bh_init(g: MonitorGlobals) -> None:
    """The era's part of monitor_init_globals: the dispatcher BH and the
    monitors' input handler (the event handler is today's)."""
    g.qmp_dispatcher_bh = aio_bh_new(
        iohandler_get_aio_context(), monitor_qmp_bh_dispatcher, g, "qmp_dispatcher_bh"
    )
    g.qmp_read = monitor_qmp_bh_read


def monitor_qmp_bh_cleanup(g: MonitorGlobals) -> None:
    """monitor_cleanup: delete the dispatcher; queued requests never run."""
    assert g.qmp_dispatcher_bh is not None
    qemu_bh_delete(g.qmp_dispatcher_bh)
    g.qmp_dispatcher_bh = None


# ---------------------------------------------------------------- the dispatcher


@main_loop_only
def monitor_qmp_bh_dispatcher(g: MonitorGlobals) -> None:
    """Run one queued request, then reschedule (so the main loop gets a
    turn between requests); stop rescheduling once the queues are empty."""
    with g.monitor_lock:
        req_obj = monitor_qmp_requests_pop_any_with_lock(g)
    if req_obj is None:
        return
    mon = req_obj.mon
    if trace_monitor_qmp_in_band_dequeue.state:
        trace_monitor_qmp_in_band_dequeue(id(req_obj), len(mon.qmp_requests))
    # without OOB the monitor is suspended for every request: resume once
    # it is answered; with OOB it was never suspended (queue_full_drop_event)
    need_resume = not qmp_oob_enabled(mon) or (
        not BUG.queue_full_drop_event and len(mon.qmp_requests) == QMP_REQ_QUEUE_LEN_MAX - 1
    )
    mon.qmp_queue_lock.unlock()
    _dispatch_request(mon, req_obj)
    if need_resume:
        monitor_resume(mon)
    assert g.qmp_dispatcher_bh is not None
    qemu_bh_schedule(g.qmp_dispatcher_bh)


# ---------------------------------------------------------------- input


def qmp_check_request_2_12(mon: MonitorQMP, req: Any) -> bool:
    """Check a request's shape as 2.12 did before queueing it, members in
    QDict order as qmp_dispatch_check_obj walked them; returns whether it
    asks for out-of-band execution (qmp_is_oob: ``run-oob`` is true).
    Raises QapiError."""
    if not isinstance(req, dict):
        raise error_setg("QMP input must be a JSON object")
    for name in qdict_keys(req):
        value = req[name]
        if name not in _MEMBERS_2_12:
            raise error_setg("QMP input member '%s' is unexpected", name)
        if name == "execute" and not isinstance(value, str):
            raise error_setg("QMP input member 'execute' must be a string")
        if name == "arguments" and not isinstance(value, dict):
            raise error_setg("QMP input member 'arguments' must be an object")
        if name == "control" and not isinstance(value, dict):
            raise error_setg("QMP input member 'control' must be a dict")
    if "execute" not in req:
        raise error_setg("QMP input lacks member 'execute'")
    oob = req.get("control", {}).get("run-oob") is True
    if oob and not qmp_oob_enabled(mon):
        raise error_setg("Please enable Out-Of-Band first for the session during handshake")
    if qmp_oob_enabled(mon) and "id" not in req:
        raise error_setg(
            "Out-Of-Band capability requires that every command contains an 'id' field"
        )
    return oob


def qmp_request_today(req: dict[str, Any], oob: bool) -> dict[str, Any]:
    """The same request in today's syntax, for qapi/'s qmp_dispatch."""
    if not oob and "control" not in req:
        return req
    out = {k: v for k, v in req.items() if k not in ("control", "execute")}
    out["exec-oob" if oob else "execute"] = req["execute"]
    return out


def handle_qmp_command_bh(mon: MonitorQMP, req: Any, err: Optional[JSONError]) -> None:
    """A complete message: check it, run it now (OOB), drop it (full queue,
    OOB) or queue it for the dispatcher BH."""
    if trace_handle_qmp_command.state:
        trace_handle_qmp_command(mon.name, req)
    qerr = QapiError(ErrorClass.GENERIC_ERROR, err.desc) if err is not None else None
    if qerr is None:
        try:
            oob = qmp_check_request_2_12(mon, req)
        except QapiError as e:
            qerr = e
        else:
            req = qmp_request_today(req, oob)
            if oob:
                trace_monitor_qmp_cmd_out_of_band(_id_json(req))
                monitor_qmp_dispatch(mon, req)
                return
    if qerr is not None and BUG.report_inband_errors_immediately:
        monitor_qmp_respond(mon, qmp_error_response(qerr))  # bugs.md 17: no id, now
        return
    g = monitor_globals()
    with mon.qmp_queue_lock:
        full = len(mon.qmp_requests) >= QMP_REQ_QUEUE_LEN_MAX
        if not full or not BUG.queue_full_drop_event:
            _queue_locked(g, mon, QMPRequest(mon, None if qerr else req, qerr, mon.session))
    if full and BUG.queue_full_drop_event:
        qapi_event_send_command_dropped(req)  # bugs.md 16
        return
    assert g.qmp_dispatcher_bh is not None
    qemu_bh_schedule(g.qmp_dispatcher_bh)


def _queue_locked(g: MonitorGlobals, mon: MonitorQMP, req_obj: QMPRequest) -> None:
    """Suspend as the era does (without OOB: always), then push."""
    if not qmp_oob_enabled(mon) or (
        not BUG.queue_full_drop_event and len(mon.qmp_requests) == QMP_REQ_QUEUE_LEN_MAX - 1
    ):
        monitor_suspend(mon)
    if trace_monitor_qmp_in_band_enqueue.state:
        trace_monitor_qmp_in_band_enqueue(id(req_obj), mon.name, len(mon.qmp_requests))
    monitor_qmp_requests_push(g, mon, req_obj)


def monitor_qmp_bh_read(mon: MonitorQMP, data: bytes) -> int:
    """monitor_qmp_read with this era's handle_qmp_command (same framing:
    stop after the message that suspended the monitor)."""
    parser = mon.parser
    assert parser is not None
    taken = 0
    while taken < len(data):
        items, used = parser.feed(data[taken:] if taken else data, max_messages=1)
        taken += used
        for item in items:
            if isinstance(item, JSONError):
                handle_qmp_command_bh(mon, None, item)
            else:
                handle_qmp_command_bh(mon, item, None)
        if monitor_can_read(mon) == 0 or used == 0:
            break
    return taken


# ---------------------------------------------------------------- responses (bugs.md 18)


def monitor_qmp_responder_init(g: MonitorGlobals) -> None:
    """With the I/O thread: the responder BH in its context (abe3cd0ff7f7)."""
    assert g.mon_iothread is not None
    g.qmp_respond_bh = aio_bh_new(
        iothread_get_aio_context(g.mon_iothread), monitor_qmp_bh_responder, g, "qmp_respond_bh"
    )


def qmp_queue_response(mon: MonitorQMP, text: str) -> None:
    """Queue a serialised reply or event for the I/O thread to write: in
    2.12 chardevs were not thread-safe, so only their thread wrote."""
    g = monitor_globals()
    with mon.qmp_queue_lock:
        mon.qmp_responses.append(text)
    assert g.qmp_respond_bh is not None
    qemu_bh_schedule(g.qmp_respond_bh)


def monitor_qmp_response_pop_any(g: MonitorGlobals) -> Optional[tuple[MonitorQMP, str]]:
    with g.monitor_lock:
        for mon in g.mon_list:
            if isinstance(mon, MonitorQMP):
                with mon.qmp_queue_lock:
                    if mon.qmp_responses:
                        return mon, mon.qmp_responses.popleft()
    return None


def monitor_qmp_bh_responder(g: MonitorGlobals) -> None:
    """Write every queued response (I/O thread; at cleanup, main loop)."""
    while True:
        item = monitor_qmp_response_pop_any(g)
        if item is None:
            return
        mon, text = item
        monitor_puts(mon, text + "\n")


def monitor_qmp_responder_cleanup(g: MonitorGlobals) -> None:
    """After the I/O thread stopped: write what it did not get to, unless
    ``no_flush_at_cleanup`` (before abe3cd0ff7f7: the ``quit`` reply
    queued behind a stopping I/O thread was lost)."""
    assert g.qmp_respond_bh is not None
    if not BUG.no_flush_at_cleanup:
        monitor_qmp_bh_responder(g)
    qemu_bh_delete(g.qmp_respond_bh)
    g.qmp_respond_bh = None
