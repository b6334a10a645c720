"""QMP monitors (monitor/qmp.c).

Threads:

* the chardev context of the monitor (``IO mon_iothread`` for socket
  chardevs, the main loop otherwise) runs ``monitor_qmp_read``, the JSON
  parser, ``handle_qmp_command`` and OOB commands;
* the main loop thread runs ``monitor_qmp_dispatcher_co``, one coroutine in
  iohandler_ctx that serves the request queues of every QMP monitor, one
  request at a time, round-robin.

``qmp_dispatcher_co_busy`` makes sure the dispatcher is never scheduled twice:
it is true while the dispatcher will look at the queues again before
sleeping, and only the dispatcher sets it back to false.
"""

from __future__ import annotations

from itertools import compress, count
from operator import attrgetter
from typing import Any, Optional

from chardev.char import (
    CHR_EVENT_CLOSED,
    CHR_EVENT_OPENED,
    QEMU_CHAR_FEATURE_GCONTEXT,
    Chardev,
    qemu_chr_be_update_read_handlers,
    qemu_chr_has_feature,
)
from chardev.char_fe import (
    qemu_chr_fe_disconnect,
    qemu_chr_fe_init,
    qemu_chr_fe_remove_watch,
    qemu_chr_fe_set_handlers,
    qemu_chr_fe_set_open,
)
from monitor.fds import monitor_fdsets_cleanup
from monitor.monitor import (
    monitor_can_read,
    monitor_data_destroy,
    monitor_data_init,
    monitor_flush_locked,
    monitor_globals,
    monitor_list_append,
    monitor_puts,
    monitor_puts_locked,
    monitor_register_id,
    monitor_resume,
    monitor_suspend,
)
from monitor.monitor_internal import (
    QMP_REQ_QUEUE_LEN_MAX,
    MonitorGlobals,
    MonitorQMP,
    QMPRequest,
)
from monitor.trace import (
    trace_handle_qmp_command,
    trace_monitor_qmp_cmd_in_band,
    trace_monitor_qmp_cmd_out_of_band,
    trace_monitor_qmp_err_in_band,
    trace_monitor_qmp_in_band_dequeue,
    trace_monitor_qmp_in_band_enqueue,
    trace_monitor_qmp_respond,
)
from qapi.error import ErrorClass, QapiError, error_setg
from qapi.json_streamer import JSONError, JSONMessageParser
from qapi.json_writer import to_json
from qapi.qmp_dispatch import (
    qmp_dispatch,
    qmp_dispatch_check_obj,
    qmp_error_response,
    qmp_is_oob,
)
from qom.object import object_get_canonical_path_component, object_ref, object_unref
from util.aio import AioContext, aio_bh_schedule_oneshot, aio_co_wake, run_in_context
from util.atomic import qatomic_dec, qatomic_inc, qatomic_read, qatomic_set, qatomic_xchg
from util.bugs import BUG
from util.coroutine import qemu_coroutine_yield
from util.error_report import error_report
from util.iothread import iothread_get_aio_context
from util.main_loop import iohandler_get_aio_context, qemu_get_aio_context
from util.markers import coroutine_fn

#: QMPCapability, in enum order (the greeting lists offered ones in this order)
QMP_CAPABILITIES = ("oob",)

NEGOTIATION_DESC = "Expecting capabilities negotiation with 'qmp_capabilities'"


def qmp_oob_enabled(mon: MonitorQMP) -> bool:
    return "oob" in mon.capab


def monitor_qmp_caps_reset(mon: MonitorQMP) -> None:
    """Forget negotiated capabilities; offer OOB only with the I/O thread."""
    mon.capab_offered = {"oob"} if mon.use_io_thread else set()
    mon.capab = set()


def monitor_qmp_cleanup_queue_and_resume(mon: MonitorQMP) -> None:
    """Drop queued requests unanswered, resuming iff they had suspended us.

    Same condition as the dispatcher's, before removing anything: without
    OOB any queued request implies a suspend; with OOB only a full queue
    does.  An empty queue means nothing is suspended on its account (the
    dispatcher resumes for the request it holds).
    """
    with mon.qmp_queue_lock:
        if BUG.queue_full_drop_event and qmp_oob_enabled(mon):
            need_resume = False  # bugs.md 16: with OOB nothing ever suspended
        else:
            need_resume = (
                not qmp_oob_enabled(mon) or len(mon.qmp_requests) == QMP_REQ_QUEUE_LEN_MAX
            ) and bool(mon.qmp_requests)
        monitor_qmp_requests_clear(monitor_globals(), mon)
        if BUG.queue_replies_for_iothread:
            mon.qmp_responses.clear()  # bugs.md 18: replies not yet written are lost
        if need_resume:
            monitor_resume(mon)


def monitor_qmp_requests_push(g: MonitorGlobals, mon: MonitorQMP, req_obj: QMPRequest) -> None:
    """Queue ``req_obj``; caller holds mon.qmp_queue_lock.

    A queue about to turn non-empty is counted first, so the dispatcher,
    which pops under this lock, never sees a request the count misses.
    """
    if not mon.qmp_requests:
        qatomic_set(g.qmp_queue_last, mon)
        qatomic_inc(g.qmp_queues_pending)
    mon.qmp_requests.append(req_obj)


def monitor_qmp_requests_clear(g: MonitorGlobals, mon: MonitorQMP) -> None:
    """Drop every queued request; caller holds mon.qmp_queue_lock."""
    if mon.qmp_requests:
        mon.qmp_requests.clear()
        qatomic_dec(g.qmp_queues_pending)


def qmp_send_response(mon: MonitorQMP, rsp: dict[str, Any]) -> None:
    """Serialise ``rsp`` (pretty if asked) and write it with a newline."""
    qmp_send_response_text(mon, to_json(rsp, mon.pretty))


def qmp_send_response_text(mon: MonitorQMP, text: str) -> None:
    """Write an already serialised message (an event shared by many monitors)."""
    if trace_monitor_qmp_respond.state:
        trace_monitor_qmp_respond(mon.name, text)
    if BUG.queue_replies_for_iothread and mon.use_io_thread:
        # bugs.md 18: QEMU 2.12 queued the reply for a BH in the I/O thread
        from monitor.qmp_bh import qmp_queue_response

        qmp_queue_response(mon, text)
        return
    monitor_puts(mon, text + "\n")


def monitor_qmp_respond(
    mon: MonitorQMP, rsp: Optional[dict[str, Any]], session: Optional[int] = None
) -> None:
    """Send ``rsp``; None happens only for commands without success reply.

    With ``session`` (the fix of bugs.md entry 3 is on) the reply goes out
    only if that connection is still the monitor's: checked under mon_lock,
    which the session changes take too, so no connection can end or begin
    between the check and the write (the explorer found a check made before
    taking the lock too weak: a new client could connect in between).
    """
    if rsp is None:
        return
    if session is None:
        qmp_send_response(mon, rsp)
        return
    text = to_json(rsp, mon.pretty)
    with mon.mon_lock:
        if session != mon.session:
            return  # the client that asked has gone (bugs.md entry 3, fixed)
        if trace_monitor_qmp_respond.state:
            trace_monitor_qmp_respond(mon.name, text)
        monitor_puts_locked(mon, text + "\n")


def monitor_qmp_dispatch(mon: MonitorQMP, req: Any, session: Optional[int] = None) -> None:
    """Run one request and reply.

    Outside coroutine context for OOB, inside the dispatcher otherwise.
    While negotiating, "command not found" gets a more helpful text.
    ``session`` is the connection the request came from (an OOB request
    runs in the thread that handles connection events: the current one).
    """
    g = monitor_globals()
    if session is None:
        session = mon.session
    assert mon.commands is not None and g.dispatch_env is not None
    rsp = qmp_dispatch(mon.commands, req, qmp_oob_enabled(mon), mon, g.dispatch_env)
    if rsp is not None and mon.commands is g.qmp_cap_negotiation_commands:
        error = rsp.get("error")
        if isinstance(error, dict) and error.get("class") == ErrorClass.COMMAND_NOT_FOUND.value:
            del error["desc"]
            error["desc"] = NEGOTIATION_DESC
    monitor_qmp_respond(mon, rsp, session if mon.session_generation_check else None)


# ---------------------------------------------------------------- the dispatcher


def monitor_qmp_requests_pop_any_with_lock(g: MonitorGlobals) -> Optional[QMPRequest]:
    """Pop one request round-robin; caller holds monitor_lock.

    On success the request's monitor has its qmp_queue_lock held (the
    caller releases it) and moves to the end of mon_list, so a busy monitor
    cannot starve the others.

    QEMU takes each monitor's qmp_queue_lock in turn just to find its queue
    empty, so every request costs time per idle monitor.  Here the count of
    non-empty queues answers first: none means nothing to pop, and one means
    the monitor that last filled its queue is the one, if its queue (looked
    at under its lock) is not empty.  Otherwise a scan peeks at the queues
    without their locks, in one C-level pass over mon_list.  The count and
    the peek are relaxed reads, like ``qatomic_read``: a request pushed
    just after them wakes the dispatcher (``qmp_dispatcher_co_busy``),
    which then looks again, and a queue emptied just after them (a CLOSED
    cleanup) is found empty under its lock and skipped.  The queue that has
    a request is locked and popped as in QEMU: same thread, same locks
    held, same round-robin order; only the idle monitors' locks are left
    alone.
    """
    last = qatomic_read(g.qmp_queue_last)
    pending = qatomic_read(g.qmp_queues_pending)
    if pending == 0:
        return None
    mons = g.mon_list
    if pending == 1 and isinstance(last, MonitorQMP):
        # usually the monitor served last time, so already at the end
        i = len(mons) - 1
        if i < 0 or mons[i] is not last:
            try:
                i = mons.index(last)  # identity: monitors define no __eq__
            except ValueError:
                i = -1
        if i >= 0:  # else not in mon_list (being added or removed): the scan decides
            req_obj = _pop_locked(g, last)
            if req_obj is not None:
                del mons[i]
                mons.append(last)
                return req_obj
    for i in compress(count(), map(_queued_requests, mons)):
        mon = mons[i]
        assert isinstance(mon, MonitorQMP)
        req_obj = _pop_locked(g, mon)
        if req_obj is not None:
            del mons[i]
            mons.append(mon)
            return req_obj
    return None


def _pop_locked(g: MonitorGlobals, mon: MonitorQMP) -> Optional[QMPRequest]:
    """Take ``mon``'s qmp_queue_lock and pop its first request, keeping the
    lock; None, with the lock released, when the queue is empty."""
    mon.qmp_queue_lock.lock()
    if not mon.qmp_requests:
        mon.qmp_queue_lock.unlock()  # emptied since the peek (a cleanup)
        return None
    req_obj = mon.qmp_requests.popleft()
    if not mon.qmp_requests:
        qatomic_dec(g.qmp_queues_pending)
    return req_obj


_queued_requests = attrgetter("qmp_requests")


def monitor_qmp_dispatcher_pop_any(g: MonitorGlobals) -> Optional[QMPRequest]:
    """Wait for a request; None once shutdown is requested.

    Busy is cleared *before* looking at the queues, so a request pushed
    while we look is never missed: its pusher sees busy false and wakes us.
    """
    while True:
        assert qatomic_read(g.qmp_dispatcher_co_busy) is True
        qatomic_set(g.qmp_dispatcher_co_busy, False)
        with g.monitor_lock:
            if g.qmp_dispatcher_co_shutdown:
                return None
            req_obj = monitor_qmp_requests_pop_any_with_lock(g)
            if req_obj is not None:
                return req_obj
        qemu_coroutine_yield()


@coroutine_fn
def monitor_qmp_dispatcher_co(g: MonitorGlobals) -> None:
    """The dispatcher: one in-band request at a time, for every QMP monitor."""
    while True:
        req_obj = monitor_qmp_dispatcher_pop_any(g)
        if req_obj is None:
            break
        mon = req_obj.mon
        if trace_monitor_qmp_in_band_dequeue.state:
            trace_monitor_qmp_in_band_dequeue(id(req_obj), len(mon.qmp_requests))
        # We hold mon.qmp_queue_lock.  Resume a monitor suspended for a full
        # queue now (OOB on) so OOB commands can be read while this request
        # runs; without OOB resume only when done.  qmp_capabilities may
        # change OOB, so remember what it is now.
        oob_enabled = qmp_oob_enabled(mon)
        if (
            oob_enabled
            and len(mon.qmp_requests) == QMP_REQ_QUEUE_LEN_MAX - 1
            and not BUG.queue_full_drop_event  # bugs.md 16: never suspended with OOB
        ):
            monitor_resume(mon)
        # never hold a mutex across a yield (DESIGN.md invariant 1)
        mon.qmp_queue_lock.unlock()

        if qatomic_xchg(g.qmp_dispatcher_co_busy, True):
            # woken while running: take that wake-up now, to be re-entered
            # at once and removed from the scheduled coroutines
            qemu_coroutine_yield()

        qatomic_set(g.dispatcher_servicing, mon)
        try:
            _dispatch_request(mon, req_obj)
        finally:
            qatomic_set(g.dispatcher_servicing, None)
        if qatomic_read(mon.dead):
            # it removed itself: the reply is out, now it can go
            monitor_qmp_destroy_removed(mon)
        elif not oob_enabled:
            monitor_resume(mon)
    qatomic_set(g.qmp_dispatcher_co, None)


def _dispatch_request(mon: MonitorQMP, req_obj: QMPRequest) -> None:
    if mon.session_generation_check and req_obj.session != mon.session:
        return
    if req_obj.err is None:
        # a JSON null is a request too (QEMU's QNull): only err tells them apart
        if trace_monitor_qmp_cmd_in_band.state:
            trace_monitor_qmp_cmd_in_band(_id_json(req_obj.req))
        mon.dispatch_session = req_obj.session
        monitor_qmp_dispatch(mon, req_obj.req, req_obj.session)
        return
    trace_monitor_qmp_err_in_band(req_obj.err.desc)
    session = req_obj.session if mon.session_generation_check else None
    monitor_qmp_respond(mon, qmp_error_response(req_obj.err), session)


def _id_json(req: Any) -> str:
    qid = req.get("id") if isinstance(req, dict) else None
    return "" if qid is None else to_json(qid)


def qmp_dispatcher_co_wake() -> None:
    """Wake the dispatcher unless it is already going to look at the queues."""
    g = monitor_globals()
    co = qatomic_read(g.qmp_dispatcher_co)
    if not qatomic_xchg(g.qmp_dispatcher_co_busy, True) and co is not None:
        aio_co_wake(co)


# ---------------------------------------------------------------- input


def qmp_report_error_now(mon: MonitorQMP, req: Any, err: Optional[JSONError]) -> bool:
    """bugs.md 17, reverted: answer a parse error or a malformed request
    right here, in the parser's thread, ahead of queued in-band replies.

    QEMU 2.12 checked the request's shape before queueing it and replied
    without an id (cf869d53172); 69240fe62d1a and 1cc37471525d (3.0) moved
    both checks behind the queue.  Returns whether it answered.
    """
    if err is not None:
        monitor_qmp_respond(mon, qmp_error_response(QapiError(ErrorClass.GENERIC_ERROR, err.desc)))
        return True
    try:
        if not isinstance(req, dict):
            raise QapiError(ErrorClass.GENERIC_ERROR, "QMP input must be a JSON object")
        qmp_dispatch_check_obj(req, qmp_oob_enabled(mon))
    except QapiError as e:
        monitor_qmp_respond(mon, qmp_error_response(e))
        return True
    return False


def qmp_queue_full(mon: MonitorQMP) -> bool:
    """Is the request queue full?  Only this thread (the parser's) pushes,
    so the answer holds until it pushes again."""
    with mon.qmp_queue_lock:
        return len(mon.qmp_requests) >= QMP_REQ_QUEUE_LEN_MAX


def qapi_event_send_command_dropped(req: Any) -> None:
    """COMMAND_DROPPED (QEMU 2.12, bf1e7301745a): broadcast like any event.

    The event left the schema with the drop (3.0), so it is built here
    rather than from the schema, which stays today's.
    """
    from monitor.monitor import qapi_event_emit
    from qapi.qmp_event import qapi_event_timestamp

    qid = req.get("id") if isinstance(req, dict) else None
    qapi_event_emit(
        "COMMAND_DROPPED",
        {
            "event": "COMMAND_DROPPED",
            "timestamp": qapi_event_timestamp(),
            "data": {"id": qid, "reason": "queue-full"},
        },
    )


def handle_qmp_command(mon: MonitorQMP, req: Any, err: Optional[JSONError]) -> None:
    """A complete message arrived: run it now (OOB) or queue it (in-band).

    Parse errors go through the queue too, so an id-less error never
    overtakes replies to requests received before it (invariant 8).
    """
    if trace_handle_qmp_command.state:
        trace_handle_qmp_command(mon.name, req)
    if err is None and isinstance(req, dict) and qmp_is_oob(req):
        trace_monitor_qmp_cmd_out_of_band(_id_json(req))
        monitor_qmp_dispatch(mon, req)
        return
    if BUG.report_inband_errors_immediately and qmp_report_error_now(mon, req, err):
        return
    req_obj = QMPRequest(
        mon,
        req if err is None else None,
        QapiError(ErrorClass.GENERIC_ERROR, err.desc) if err is not None else None,
        mon.session,
    )
    g = monitor_globals()
    if BUG.queue_full_drop_event and qmp_oob_enabled(mon) and qmp_queue_full(mon):
        # bugs.md 16: QEMU 2.12 never suspended with OOB; a full queue
        # dropped the request and told every client with an event
        qapi_event_send_command_dropped(req)
        return
    with mon.qmp_queue_lock:
        # Suspend when the queue cannot take another request after this
        # one (always, without OOB: one request in flight); the dispatcher
        # or a CLOSED event resumes.
        if not qmp_oob_enabled(mon) or (
            len(mon.qmp_requests) == QMP_REQ_QUEUE_LEN_MAX - 1
            and not BUG.queue_full_drop_event  # bugs.md 16: never suspended with OOB
        ):
            monitor_suspend(mon)
        if trace_monitor_qmp_in_band_enqueue.state:
            trace_monitor_qmp_in_band_enqueue(id(req_obj), mon.name, len(mon.qmp_requests))
        assert len(mon.qmp_requests) < QMP_REQ_QUEUE_LEN_MAX
        monitor_qmp_requests_push(g, mon, req_obj)
    qmp_dispatcher_co_wake()


def monitor_qmp_read(mon: MonitorQMP, data: bytes) -> int:
    """Feed input to the parser; return how many bytes were taken.

    QEMU reads one byte at a time while the monitor is not suspended.  The
    same effect without a per-byte loop: take one complete message at a
    time and stop right after the one that suspended the monitor; the
    chardev keeps the rest until ``accept_input``.
    """
    parser = mon.parser
    assert parser is not None
    taken = 0
    while taken < len(data):
        items, used = parser.feed(data[taken:] if taken else data, max_messages=1)
        taken += used
        for item in items:
            if isinstance(item, JSONError):
                handle_qmp_command(mon, None, item)
            else:
                handle_qmp_command(mon, item, None)
        if monitor_can_read(mon) == 0 or used == 0:
            break
    return taken


def qmp_greeting(mon: MonitorQMP) -> dict[str, Any]:
    g = monitor_globals()
    assert g.query_version is not None
    caps = [cap for cap in QMP_CAPABILITIES if cap in mon.capab_offered]
    return {"QMP": {"version": g.query_version(), "capabilities": caps}}


def monitor_qmp_event(mon: MonitorQMP, event: int) -> None:
    """Chardev events: greet a new client; forget everything of a gone one.

    With close-action=delete (11.1) a CLOSED schedules the monitor's own
    deletion; from then on open/close events are ignored, so a client that
    reconnects at once cannot revive a monitor being deleted.
    """
    if mon.delete_pending:
        return
    if event == CHR_EVENT_OPENED:
        g = monitor_globals()
        with mon.mon_lock:  # a checked reply (monitor_qmp_respond) sees one or the other
            mon.session += 1
        mon.commands = g.qmp_cap_negotiation_commands
        monitor_qmp_caps_reset(mon)
        if mon.greeting is None:
            mon.greeting = to_json(qmp_greeting(mon), mon.pretty)
        qmp_send_response_text(mon, mon.greeting)
        mon.client_open = True
        with g.mon_fdsets_lock:
            g.mon_refcount += 1
    elif event == CHR_EVENT_CLOSED:
        with mon.mon_lock:  # the connection's session ends here, not at the next OPENED
            mon.session += 1
        # useful only while the backend's output is still open (stdio)
        monitor_qmp_cleanup_queue_and_resume(mon)
        mon.parser = JSONMessageParser()
        monitor_qmp_client_gone(mon)
        if mon.close_action == "delete":
            mon.delete_pending = True
            # in the main context, where object-del runs; the reference
            # keeps the monitor alive if an object-del overtakes the BH
            object_ref(mon)
            aio_bh_schedule_oneshot(
                qemu_get_aio_context(),
                monitor_qmp_self_delete_bh,
                mon,
                "monitor_qmp_self_delete_bh",
            )


def monitor_qmp_client_gone(mon: MonitorQMP) -> None:
    """A client left (CLOSED, or cut off by monitor-remove): it no longer
    holds fd sets.  Runs in the chardev's context, like OPENED/CLOSED."""
    if not mon.client_open:
        return
    mon.client_open = False
    g = monitor_globals()
    with g.mon_fdsets_lock:
        g.mon_refcount -= 1
    monitor_fdsets_cleanup()


def monitor_data_destroy_qmp(mon: MonitorQMP) -> None:
    mon.parser = None
    with mon.qmp_queue_lock:
        monitor_qmp_requests_clear(monitor_globals(), mon)


def monitor_qmp_set_handlers(mon: MonitorQMP, context: Any) -> None:
    g = monitor_globals()
    qemu_chr_fe_set_handlers(
        mon.chr,
        monitor_can_read,
        g.qmp_read or monitor_qmp_read,
        monitor_qmp_event,
        None,
        mon,
        context,
        True,
    )


def monitor_qmp_setup_handlers_bh(mon: MonitorQMP) -> None:
    """In the I/O thread: attach the chardev there, then join mon_list."""
    g = monitor_globals()
    assert mon.use_io_thread and g.mon_iothread is not None
    monitor_qmp_set_handlers(mon, iothread_get_aio_context(g.mon_iothread))
    monitor_list_append(mon)
    qatomic_set(mon.setup_pending, False)


def monitor_init_qmp(
    chr: Chardev,
    pretty: bool,
    mon_id: Optional[str] = None,
    dynamic: bool = False,
    session_check: bool = False,
    x_oob: bool = False,
) -> MonitorQMP:
    """Create a QMP monitor on ``chr``; in the I/O thread when it can move there.

    In the 2.12 era only a monitor with ``x-oob=on`` moves there (and offers
    OOB); ``x_oob`` means nothing in the others.
    """
    from monitor.eras import current_era

    use_io_thread = qemu_chr_has_feature(chr, QEMU_CHAR_FEATURE_GCONTEXT)
    if current_era().x_oob:
        use_io_thread = use_io_thread and x_oob
    mon = MonitorQMP(use_io_thread, pretty)
    mon.id = mon_id
    mon.dynamic = dynamic
    mon.session_generation_check = session_check
    monitor_qmp_setup(mon, chr)
    return mon


def monitor_qmp_setup(mon: MonitorQMP, chr: Chardev) -> None:
    """Attach ``mon`` to ``chr`` and start serving it (both designs).

    With the I/O thread the handlers are installed, and the monitor joins
    mon_list, from a BH there; until it runs ``setup_pending`` is set.
    """
    # QEMU starts with no command list, which event broadcast treats as
    # "negotiated"; starting in negotiation mode keeps events away from a
    # client that has not been greeted yet.
    mon.commands = monitor_globals().qmp_cap_negotiation_commands
    qemu_chr_fe_init(mon.chr, chr)
    mon.label_locks()
    monitor_register_id(mon)
    monitor_data_init(mon)
    mon.parser = JSONMessageParser()
    if mon.use_io_thread:
        g = monitor_globals()
        assert g.mon_iothread is not None
        # Move the chardev's sources (listener, connection) to the I/O
        # thread now, from the thread that polls them, so nothing fires in
        # the old context while the BH installs the handlers.  QEMU only
        # removes the read watch here (remove_fd_in_watch), leaving a window
        # in which a client that connects early is served by two threads.
        qemu_chr_be_update_read_handlers(chr, iothread_get_aio_context(g.mon_iothread))
        qatomic_set(mon.setup_pending, True)
        aio_bh_schedule_oneshot(
            iothread_get_aio_context(g.mon_iothread),
            monitor_qmp_setup_handlers_bh,
            mon,
            "monitor_qmp_setup_handlers_bh",
        )
        # the bottom half adds mon to mon_list
    else:
        monitor_qmp_set_handlers(mon, None)
        monitor_list_append(mon)


# ---------------------------------------------------------------- removal
#
# Two designs take a QMP monitor apart.  Seed 001's monitor-remove (the
# proposed, unmerged series) and QEMU 11.1's object-del share the steps that
# do the same thing: unlinking (monitor_qmp_unlink), cancelling the output
# watch (monitor_cancel_out_watch), detaching the handlers in the chardev's
# context, and dropping queued requests (monitor_qmp_drain_queue).  Where
# they differ, each says so:
#
# * self-removal: monitor-remove defers destruction to the dispatcher,
#   which destroys the monitor after its reply; object-del refuses
#   ("Cannot delete the current QMP monitor");
# * setup not done yet: object-del refuses ("monitor is still
#   initializing"); monitor-remove goes ahead, and the setup BH, still
#   queued, later links the destroyed monitor back into mon_list (bugs.md
#   23.4, left as the series had it);
# * the client: monitor-remove cuts it off; object-del leaves the
#   connection to the chardev (chardev-remove ends it);
# * object-del then marks the frontend closed and cancels again, waits for
#   a barrier BH in the I/O thread and drains a second time (races 4-5 of
#   hotplug.md section 4, which monitor-remove leaves open).


def monitor_qmp_unlink(mon: MonitorQMP) -> None:
    """Step 1, both designs: off mon_list (and the id table) under
    monitor_lock, so event broadcasts and the dispatcher's pop no longer
    see it."""
    g = monitor_globals()
    with g.monitor_lock:
        if mon in g.mon_list:
            g.mon_list.remove(mon)
        if mon.id is not None and g.mon_ids.get(mon.id) is mon:
            del g.mon_ids[mon.id]


def monitor_cancel_out_watch(mon: MonitorQMP) -> None:
    """Remove a pending output watch; caller holds mon_lock and runs in the
    chardev's context (the watch's own)."""
    if mon.out_watch:
        qemu_chr_fe_remove_watch(mon.chr, mon.out_watch)
        mon.out_watch = 0


def monitor_qmp_drain_queue(mon: MonitorQMP) -> None:
    """Drop queued requests unanswered (a read in flight may have queued
    them after the unlink; no dispatcher will pop them)."""
    with mon.qmp_queue_lock:
        monitor_qmp_requests_clear(monitor_globals(), mon)


def monitor_chardev_context(mon: MonitorQMP) -> AioContext:
    g = monitor_globals()
    if mon.use_io_thread and g.mon_iothread is not None:
        return iothread_get_aio_context(g.mon_iothread)
    return iohandler_get_aio_context()


def monitor_qmp_remove(mon: MonitorQMP) -> None:
    """Seed 001's monitor-remove: take ``mon`` apart in the order that keeps
    every thread safe.

    1. Mark it dead (the dispatcher looks) and unlink it.
    2-4. In the chardev's own context (the I/O thread for sockets), so no
       read is in progress meanwhile: cancel a pending output watch while
       its context is still the right one, detach the chardev handlers, cut
       the client off, and drop requests a read already queued (no replies;
       no resume, it is going away).
    5. Destroy, unless the dispatcher is running this very monitor's
       request (a monitor removing itself): then the dispatcher destroys it
       once the reply is written.
    """
    g = monitor_globals()
    removing_itself = qatomic_read(g.dispatcher_servicing) is mon
    qatomic_set(mon.dead, True)
    monitor_qmp_unlink(mon)
    ctx = monitor_chardev_context(mon)
    run_in_context(ctx, _monitor_qmp_detach, (mon, removing_itself))
    if not removing_itself:
        monitor_data_destroy(mon)


def _monitor_qmp_detach(args: tuple[MonitorQMP, bool]) -> None:
    mon, removing_itself = args
    with mon.mon_lock:
        monitor_cancel_out_watch(mon)
        if not removing_itself:
            mon.outbuf.clear()  # output for a client being cut off is lost
    if removing_itself:
        # keep the context, so the reply still being written can arm a watch
        qemu_chr_fe_set_handlers(
            mon.chr, None, None, None, None, None, monitor_chardev_context(mon), False
        )
    else:
        qemu_chr_fe_set_handlers(mon.chr, None, None, None, None, None, None, True)
        qemu_chr_fe_disconnect(mon.chr)
        monitor_qmp_client_gone(mon)  # no CLOSED reaches a detached monitor
    monitor_qmp_drain_queue(mon)


def monitor_qmp_destroy_removed(mon: MonitorQMP) -> None:
    """After a self-removal's reply: flush, cut the client off, destroy."""
    run_in_context(monitor_chardev_context(mon), _monitor_qmp_teardown, mon)


def _monitor_qmp_teardown(mon: MonitorQMP) -> None:
    with mon.mon_lock:
        monitor_flush_locked(mon)
        monitor_cancel_out_watch(mon)
    qemu_chr_fe_disconnect(mon.chr)
    monitor_qmp_client_gone(mon)
    monitor_data_destroy(mon)


def monitor_qmp_prepare_delete(mon: MonitorQMP) -> None:
    """QEMU 11.1's object-del of a monitor-qmp (monitor_qmp_prepare_delete).

    Refuses the monitor whose request is running and one whose I/O-thread
    setup has not run; then unlinks, cancels the watch and detaches the
    handlers in the chardev's context (shared with monitor-remove), drains,
    marks the frontend closed and cancels again (a flush that raced can no
    longer arm a watch), waits for a no-op BH in the I/O thread so every
    callback in flight there has finished, and drains again.  The object is
    finalised when object-del unparents it.
    """
    g = monitor_globals()
    if qatomic_read(g.dispatcher_servicing) is mon:
        raise error_setg("Cannot delete the current QMP monitor")
    if qatomic_read(mon.setup_pending):
        raise error_setg("monitor is still initializing")
    monitor_qmp_unlink(mon)
    run_in_context(monitor_chardev_context(mon), _monitor_qmp_disconnect_handlers, mon)
    monitor_qmp_drain_queue(mon)
    with mon.mon_lock:
        # the chardev now lives in the main loop's context: this thread's
        qemu_chr_fe_set_open(mon.chr, False)
        monitor_cancel_out_watch(mon)
    if mon.use_io_thread and g.mon_iothread is not None:
        run_in_context(iothread_get_aio_context(g.mon_iothread), monitor_qmp_iothread_quiesce, None)
    monitor_qmp_drain_queue(mon)
    monitor_fdsets_cleanup()


def _monitor_qmp_disconnect_handlers(mon: MonitorQMP) -> None:
    with mon.mon_lock:
        monitor_cancel_out_watch(mon)
    qemu_chr_fe_set_handlers(mon.chr, None, None, None, None, None, None, True)
    monitor_qmp_client_gone(mon)  # no CLOSED reaches a detached monitor


def monitor_qmp_iothread_quiesce(opaque: None) -> None:
    """No-op: a barrier, run in the I/O thread after what was queued there."""


def monitor_qmp_self_delete_bh(mon: MonitorQMP) -> None:
    """close-action=delete, in the main loop: delete the object, then its
    chardev.  An object-del that ran first left it without a path: then
    only the reference taken at CLOSED is dropped."""
    from chardev.char_qmp import qmp_chardev_remove
    from qom.object_interfaces import user_creatable_del

    mon_id = object_get_canonical_path_component(mon)
    if mon_id is None:
        object_unref(mon)
        return
    chardev_id = mon.chardev_id
    try:
        user_creatable_del(mon_id)
    except QapiError as e:
        object_unref(mon)
        error_report(e.desc)
        return
    object_unref(mon)
    if chardev_id is not None:
        try:
            qmp_chardev_remove(chardev_id)
        except QapiError:
            pass  # QEMU ignores this error too
