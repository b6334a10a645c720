"""Code common to QMP and HMP monitors (monitor/monitor.c).

Threads: output (``monitor_puts``) runs wherever a reply or event is produced
(main loop, or the I/O thread for OOB replies and events raised there);
``monitor_can_read`` runs in the monitor's chardev context; suspend/resume run
anywhere; ``monitor_init_globals`` and ``monitor_cleanup`` run in the main
loop thread with the BQL.
"""

from __future__ import annotations

import sys
from typing import Any, Callable, Optional

from chardev.char import qemu_chr_find
from chardev.char_fe import (
    G_IO_HUP,
    G_IO_OUT,
    qemu_chr_fe_accept_input,
    qemu_chr_fe_add_watch,
    qemu_chr_fe_deinit,
    qemu_chr_fe_write,
)
from monitor.monitor_internal import (
    Monitor,
    MonitorGlobals,
    MonitorHMP,
    MonitorQAPIEventState,
    MonitorQMP,
)
from monitor.trace import (
    trace_monitor_protocol_event_emit,
    trace_monitor_protocol_event_handler,
    trace_monitor_protocol_event_queue,
    trace_monitor_suspend,
)
from qapi.error import error_setg
from qapi.json_writer import to_json
from qapi.qmp_dispatch import QmpDispatchEnv
from qapi.qmp_event import qapi_event_build
from qapi.schema import Schema
from qom.object import object_children, object_get_objects_root, object_unparent
from util.aio import (
    AIO_WAIT_WHILE,
    AioContext,
    aio_bh_schedule_oneshot,
    aio_co_schedule,
    aio_co_wake,
    aio_notify,
    aio_poll,
    aio_timer_new,
    qemu_bh_schedule,
)
from util.atomic import (
    qatomic_dec_fetch,
    qatomic_inc,
    qatomic_read,
    qatomic_set,
    qatomic_xchg,
)
from util.bugs import BUG
from util.coroutine import (
    Coroutine,
    qemu_coroutine_create,
    qemu_coroutine_leader,
    qemu_coroutine_self,
)
from util.iothread import (
    iothread_create,
    iothread_destroy,
    iothread_get_aio_context,
    iothread_stop,
)
from util.main_loop import iohandler_get_aio_context, qemu_get_aio_context
from util.markers import main_loop_only
from util.osdep import qemu_close_fds
from util.qemu_option import QemuOpts, qemu_opt_get, qemu_opt_get_bool, qemu_opts_id
from util.thread import QemuThreadLocal
from util.timer import SCALE_MS, SCALE_NS, qemu_clock_get_ns, timer_del, timer_mod_ns

# ---------------------------------------------------------------- the globals


class _Current:
    globals: Optional[MonitorGlobals] = None


_current = _Current()


def monitor_globals() -> MonitorGlobals:
    g = _current.globals
    if g is None:
        raise AssertionError("monitor_init_globals() has not run")
    return g


@main_loop_only
def monitor_init_globals(
    schema: Schema, machine_ready: Callable[[], bool] = lambda: True
) -> MonitorGlobals:
    """Create the globals and start the dispatcher coroutine in iohandler_ctx.

    The dispatcher must live in the main loop thread: in-band commands
    assume that context.  ``machine_ready`` is false while ``--preconfig``
    holds the machine back (system/ knows; monitor/ must not import it).
    The era (monitor/eras.py) was chosen before: QEMU 2.12's gets the
    bottom-half dispatcher of monitor/qmp_bh.py instead, and its monitors
    that module's input and event handlers.
    """
    from monitor.eras import current_era
    from monitor.qmp import monitor_qmp_dispatcher_co

    if _current.globals is not None:
        raise AssertionError("monitor globals already initialised")
    g = _current.globals = MonitorGlobals(schema=schema)
    g.dispatch_env = QmpDispatchEnv(monitor_cur, monitor_set_cur, machine_ready)
    if current_era().bh_dispatcher:
        from monitor.qmp_bh import monitor_qmp_bh_init

        monitor_qmp_bh_init(g)
        return g
    co = qemu_coroutine_create(monitor_qmp_dispatcher_co, g, "qmp_dispatcher_co")
    qatomic_set(g.qmp_dispatcher_co, co)
    qatomic_set(g.qmp_dispatcher_co_busy, True)
    aio_co_schedule(iohandler_get_aio_context(), co)
    return g


def monitor_globals_initialised() -> bool:
    return _current.globals is not None


# ---------------------------------------------------------------- current monitor


def monitor_cur() -> Optional[Monitor]:
    """The monitor the running command belongs to, keyed by coroutine.

    Outside coroutine context the key is the thread's leader, so BH-run
    commands, OOB commands and coroutine commands each see their own.
    """
    g = monitor_globals()
    co = qemu_coroutine_self()
    if BUG.current_monitor_per_thread:
        # bugs.md 8, reverted: a thread property (2.12: cur_mon; 3.0: TLS),
        # so whatever a thread runs while a command is yielded sees it
        co = qemu_coroutine_leader()
    with g.monitor_lock:
        return g.coroutine_mon.get(co)


def monitor_set_cur(co: Coroutine, mon: Optional[Monitor]) -> Optional[Monitor]:
    """Make ``mon`` current for ``co``; returns the previous one (one lock, as QEMU)."""
    g = monitor_globals()
    if BUG.current_monitor_per_thread:
        co = qemu_coroutine_leader()  # bugs.md 8, reverted (see monitor_cur)
    with g.monitor_lock:
        old = g.coroutine_mon.get(co)
        if mon is not None:
            g.coroutine_mon[co] = mon
        else:
            g.coroutine_mon.pop(co, None)
    return old


def monitor_is_hmp_non_interactive(mon: Monitor) -> bool:
    return isinstance(mon, MonitorHMP) and not mon.use_readline


# ---------------------------------------------------------------- output


def monitor_unblocked(opaque: Monitor) -> bool:
    """The output watch fired: the chardev can take more (or hung up)."""
    mon = opaque
    with mon.mon_lock:
        mon.out_watch = 0
        monitor_flush_locked(mon)
    return False


def monitor_flush_locked(mon: Monitor) -> None:
    """Write what ``outbuf`` holds without blocking; caller holds mon_lock.

    A partial write keeps the rest and arms one watch in the chardev's
    context; an error other than "would block" discards the buffer.
    """
    if mon.skip_flush or not mon.outbuf or mon.mux_out:
        return
    if not mon.chr.fe_open:
        # QEMU 11.1: a frontend marked closed (a monitor being deleted)
        # writes nothing and arms no watch, so none can appear after the
        # teardown's last cancel
        return
    rc = qemu_chr_fe_write(mon.chr, bytes(mon.outbuf))
    if rc == len(mon.outbuf) or rc < 0:
        mon.outbuf.clear()
        return
    if rc > 0:
        del mon.outbuf[:rc]
    if mon.out_watch == 0:
        mon.out_watch = qemu_chr_fe_add_watch(mon.chr, G_IO_OUT | G_IO_HUP, monitor_unblocked, mon)


def monitor_flush(mon: Monitor) -> None:
    with mon.mon_lock:
        monitor_flush_locked(mon)


def monitor_puts_locked(mon: Monitor, text: str) -> int:
    """Append ``text`` with LF turned into CRLF, flushing after the last LF.

    HMP echoes input byte by byte, so ``text`` may hold half a UTF-8
    sequence as surrogate escapes; they go out as the original bytes.

    QEMU flushes at every newline; flushing once after the last one writes
    the same bytes, and text after the last newline waits, as in QEMU.
    """
    last = text.rfind("\n")
    if last < 0:
        mon.outbuf += text.encode("utf-8", "surrogateescape")
        return len(text)
    mon.outbuf += text[: last + 1].replace("\n", "\r\n").encode("utf-8", "surrogateescape")
    monitor_flush_locked(mon)
    if last + 1 < len(text):
        mon.outbuf += text[last + 1 :].encode("utf-8", "surrogateescape")
    return len(text)


def monitor_puts(mon: Monitor, text: str) -> int:
    with mon.mon_lock:
        return monitor_puts_locked(mon, text)


def monitor_printf(mon: Optional[Monitor], text: str) -> int:
    """Print on an HMP monitor; QMP monitors take no free text (-1)."""
    if mon is None or mon.is_qmp:
        return -1
    return monitor_puts(mon, text)


def error_printf(text: str) -> None:
    """Print to the current monitor if it is HMP, else stderr (error_vprintf)."""
    mon = monitor_cur() if monitor_globals_initialised() else None
    if mon is not None and not mon.is_qmp:
        monitor_printf(mon, text)
    else:
        sys.stderr.write(text)


# ---------------------------------------------------------------- events

#: Guest-triggerable events, limited to one per second; the value names the
#: data member that tells instances apart (None: one state per event).
MONITOR_QAPI_EVENT_CONF: dict[str, Optional[str]] = {
    "RTC_CHANGE": None,
    "WATCHDOG": None,
    "BALLOON_CHANGE": None,
    "QUORUM_REPORT_BAD": "node-name",
    "QUORUM_FAILURE": None,
    "VSERPORT_CHANGE": "id",
    "MEMORY_DEVICE_SIZE_CHANGE": "qom-path",
}
EVENT_RATE_NS = 1000 * SCALE_MS


def monitor_qapi_event_emit(g: MonitorGlobals, event: str, qdict: dict[str, Any]) -> None:
    """Send to every QMP monitor past negotiation; caller holds monitor_lock."""
    from monitor.qmp import qmp_send_response_text

    trace_monitor_protocol_event_emit(event, qdict)
    texts: dict[bool, str] = {}  # serialised once per layout, not once per monitor
    for mon in g.mon_list:
        if isinstance(mon, MonitorQMP) and mon.commands is not g.qmp_cap_negotiation_commands:
            text = texts.get(mon.pretty)
            if text is None:
                text = texts[mon.pretty] = to_json(qdict, mon.pretty)
            qmp_send_response_text(mon, text)


def monitor_qapi_event_queue_no_reenter(event: str, qdict: dict[str, Any]) -> None:
    """Emit now, or hold back the latest one while the event is throttled."""
    g = monitor_globals()
    throttled = event in MONITOR_QAPI_EVENT_CONF
    trace_monitor_protocol_event_queue(event, qdict, EVENT_RATE_NS if throttled else 0)
    with g.monitor_lock:
        if not throttled:
            monitor_qapi_event_emit(g, event, qdict)
            return
        key_member = MONITOR_QAPI_EVENT_CONF[event]
        key = (event, qdict.get("data", {}).get(key_member) if key_member else None)
        evstate = g.monitor_qapi_event_state.get(key)
        if evstate is not None:
            # the timer is pending: keep only the newest for when it fires
            evstate.qdict = qdict
            return
        now = qemu_clock_get_ns(g.event_clock)
        monitor_qapi_event_emit(g, event, qdict)
        evstate = MonitorQAPIEventState(event, key[1])
        evstate.timer = aio_timer_new(
            qemu_get_aio_context(),
            g.event_clock,
            SCALE_NS,
            monitor_qapi_event_handler,
            evstate,
            f"event-throttle:{event}",
        )
        g.monitor_qapi_event_state[key] = evstate
        timer_mod_ns(evstate.timer, now + EVENT_RATE_NS)


def monitor_qapi_event_handler(evstate: MonitorQAPIEventState) -> None:
    """The throttle window ended: send the held-back event or forget the state."""
    g = monitor_globals()
    trace_monitor_protocol_event_handler(evstate.event, evstate.qdict)
    with g.monitor_lock:
        assert evstate.timer is not None
        if evstate.qdict is not None:
            now = qemu_clock_get_ns(g.event_clock)
            monitor_qapi_event_emit(g, evstate.event, evstate.qdict)
            evstate.qdict = None
            timer_mod_ns(evstate.timer, now + EVENT_RATE_NS)
        else:
            del g.monitor_qapi_event_state[(evstate.event, evstate.key)]


class _EventQueue(QemuThreadLocal):
    """Per thread: events raised while this thread is already emitting."""

    def __init__(self) -> None:
        self.reentered = False
        self.queue: list[tuple[str, dict[str, Any]]] = []


_event_queue = _EventQueue()


def qapi_event_emit(event: str, qdict: dict[str, Any]) -> None:
    """Emit ``qdict``; re-entry from the same thread is queued, keeping order.

    Emission holds monitor_lock, which is not recursive: an event raised
    while emitting (e.g. from a chardev callback) would deadlock.
    """
    q = _event_queue
    q.queue.append((event, qdict))
    if q.reentered:
        return
    q.reentered = True
    try:
        while q.queue:
            ev, data = q.queue.pop(0)
            monitor_qapi_event_queue_no_reenter(ev, data)
    finally:
        q.reentered = False


def qapi_event_send(event: str, data: Optional[dict[str, Any]] = None) -> None:
    """Build ``event`` from the schema (with its timestamp) and emit it."""
    schema = monitor_globals().schema
    assert schema is not None
    qapi_event_emit(event, qapi_event_build(schema, event, data))


def monitor_qapi_event_state_clear(g: MonitorGlobals) -> None:
    """Drop throttle timers (cleanup): pending held-back events are lost."""
    with g.monitor_lock:
        states = list(g.monitor_qapi_event_state.values())
        g.monitor_qapi_event_state.clear()
    for evstate in states:
        if evstate.timer is not None:
            timer_del(evstate.timer)


# ---------------------------------------------------------------- suspend / resume


def monitor_suspend(mon: Monitor) -> int:
    """Stop reading input (counted); kicks the I/O thread so it takes effect."""
    if monitor_is_hmp_non_interactive(mon):
        return -1
    qatomic_inc(mon.suspend_cnt)
    g = monitor_globals()
    if mon.use_io_thread and g.mon_iothread is not None:
        aio_notify(iothread_get_aio_context(g.mon_iothread))
    if trace_monitor_suspend.state:
        trace_monitor_suspend(mon.name, 1)
    return 0


def monitor_accept_input(opaque: Monitor) -> None:
    """One-shot BH in the monitor's context: restart reading.

    An HMP monitor whose chardev was reset meanwhile starts a fresh line.
    """
    mon = opaque
    if isinstance(mon, MonitorHMP) and mon.reset_seen and mon.rs is not None:
        from util.readline import readline_restart, readline_show_prompt

        with mon.mon_lock:
            readline_restart(mon.rs)
        readline_show_prompt(mon.rs)
    qemu_chr_fe_accept_input(mon.chr)


def monitor_resume(mon: Monitor) -> None:
    """Undo one suspend; at zero, accept input again from the monitor's context."""
    if monitor_is_hmp_non_interactive(mon):
        return
    if qatomic_dec_fetch(mon.suspend_cnt) == 0:
        if mon.accept_input_bh is not None:
            # QOM monitors (11.1): the persistent BH, deleted at finalize, so
            # a resume can never schedule work for a freed monitor
            qemu_bh_schedule(mon.accept_input_bh)
        else:
            aio_bh_schedule_oneshot(
                monitor_context(mon), monitor_accept_input, mon, "monitor_accept_input"
            )
    if trace_monitor_suspend.state:
        trace_monitor_suspend(mon.name, -1)


def monitor_context(mon: Monitor) -> AioContext:
    """Where the monitor's input is accepted: the I/O thread or the main loop."""
    g = monitor_globals()
    if mon.use_io_thread and g.mon_iothread is not None:
        return iothread_get_aio_context(g.mon_iothread)
    return qemu_get_aio_context()


def monitor_can_read(opaque: Monitor) -> int:
    """0 while suspended, else 1: QEMU's monitors take input a byte at a time."""
    return 0 if qatomic_read(opaque.suspend_cnt) else 1


# ---------------------------------------------------------------- lifecycle


def monitor_register_id(mon: Monitor) -> None:
    """Reserve the monitor's id (if any) so no other monitor can take it."""
    if mon.id is None:
        return
    g = monitor_globals()
    with g.monitor_lock:
        assert mon.id not in g.mon_ids, f"monitor id {mon.id} reused"
        g.mon_ids[mon.id] = mon


def monitor_list_append(mon: Monitor) -> None:
    """Join mon_list, unless cleanup already ran (then the monitor is destroyed)."""
    g = monitor_globals()
    with g.monitor_lock:
        if not g.monitor_destroyed:
            g.mon_list.insert(0, mon)
            return
    monitor_data_destroy(mon)


def monitor_data_init(mon: Monitor) -> None:
    """Create the shared I/O thread with the first monitor that needs it."""
    g = monitor_globals()
    if mon.use_io_thread and g.mon_iothread is None:
        g.mon_iothread = iothread_create("mon_iothread")
        if BUG.queue_replies_for_iothread:
            from monitor.qmp_bh import monitor_qmp_responder_init

            monitor_qmp_responder_init(g)


def monitor_data_destroy(mon: Monitor) -> None:
    """Release the frontend and the protocol state."""
    from monitor.qmp import monitor_data_destroy_qmp

    qemu_chr_fe_deinit(mon.chr, False)
    if isinstance(mon, MonitorQMP):
        monitor_data_destroy_qmp(mon)
    with mon.mon_lock:
        mon.outbuf.clear()
        fds = list(mon.fds.values())
        mon.fds.clear()
    qemu_close_fds(fds)


def monitor_cleanup() -> None:
    """Tear the monitors down in QEMU's order (invariant 4 of DESIGN.md).

    1. stop the dispatcher, polling both main contexts until it has
       finished (a request in progress completes and its reply is sent;
       queued ones are never started);
    2. stop the I/O thread (not destroy: chardev teardown is not
       thread-safe);
    3. destroy every monitor, dropping monitor_lock around each so events
       raised meanwhile can still be emitted;
    4. destroy the I/O thread.
    """
    g = monitor_globals()
    with g.monitor_lock:
        g.qmp_dispatcher_co_shutdown = True
    co = qatomic_read(g.qmp_dispatcher_co)
    if not qatomic_xchg(g.qmp_dispatcher_co_busy, True) and co is not None:
        aio_co_wake(co)

    def dispatcher_alive() -> bool:
        aio_poll(iohandler_get_aio_context(), False)
        return qatomic_read(g.qmp_dispatcher_co) is not None

    AIO_WAIT_WHILE(qemu_get_aio_context(), dispatcher_alive)
    # The dispatcher's last request may have resumed a monitor the main loop
    # serves, scheduling monitor_accept_input in qemu_aio_context after the
    # wait's last poll of that context.  QEMU never polls it again and never
    # frees it; the emulator finalises it (qemu_main_loop_cleanup), which
    # refuses a pending BH.  Run it now, while its monitor still exists
    # (accept_input BHs in the I/O thread run before iothread_stop's BH).
    aio_poll(qemu_get_aio_context(), False)

    if g.qmp_dispatcher_bh is not None:
        from monitor.qmp_bh import monitor_qmp_bh_cleanup

        monitor_qmp_bh_cleanup(g)

    if g.mon_iothread is not None:
        iothread_stop(g.mon_iothread)
    if g.qmp_respond_bh is not None:
        from monitor.qmp_bh import monitor_qmp_responder_cleanup

        monitor_qmp_responder_cleanup(g)  # bugs.md 18: flush, unless no_flush_at_cleanup

    with g.monitor_lock:
        g.monitor_destroyed = True
    while True:
        with g.monitor_lock:
            if not g.mon_list:
                break
            mon = g.mon_list.pop(0)
            if mon.id is not None:
                g.mon_ids.pop(mon.id, None)
        monitor_flush(mon)
        monitor_data_destroy(mon)
        if mon.parent is not None:
            object_unparent(mon)  # a QOM monitor: its finalize runs now
    for obj in object_children(object_get_objects_root()):
        if isinstance(obj, Monitor):  # a QOM monitor whose setup BH never ran
            monitor_data_destroy(obj)
            object_unparent(obj)
    monitor_qapi_event_state_clear(g)
    if g.mon_iothread is not None:
        iothread_destroy(g.mon_iothread)
        g.mon_iothread = None
    _current.globals = None


def monitor_init_opts(opts: QemuOpts) -> Monitor:
    """Create a monitor from a -mon option group (MonitorOptions' checks)."""
    mode = qemu_opt_get(opts, "mode")
    if mode is not None and mode not in ("readline", "control"):
        raise error_setg("Parameter 'mode' does not accept value '%s'", mode)
    chardev = qemu_opt_get(opts, "chardev")
    if chardev is None:
        raise error_setg("Parameter 'chardev' is missing")
    pretty = qemu_opt_get_bool(opts, "pretty", False)
    session_check = qemu_opt_get_bool(opts, "x-session-check", False)
    # x-oob exists only in the 2.12 era's option list (system/vl.py)
    x_oob = qemu_opt_get_bool(opts, "x-oob", False)
    return monitor_init(
        chardev,
        mode,
        pretty,
        True,
        mon_id=qemu_opts_id(opts),
        session_check=session_check,
        x_oob=x_oob,
    )


def monitor_init(
    chardev: str,
    mode: Optional[str],
    pretty: bool,
    allow_hmp: bool,
    mon_id: Optional[str] = None,
    dynamic: bool = False,
    session_check: bool = False,
    x_oob: bool = False,
) -> Monitor:
    """Create a monitor on chardev ``chardev`` (monitor_init).

    Raises the protocol error QEMU reports for an unknown chardev, HMP where
    only QMP is allowed, or ``pretty`` on HMP.  ``session_check`` is the
    emulator-only fix of bugs.md entry 3 (``-mon ...,x-session-check=on``),
    QMP only.
    """
    from monitor.qmp import monitor_init_qmp

    chr = qemu_chr_find(chardev)
    if chr is None:
        raise error_setg('chardev "%s" not found', chardev)
    if mode is None:
        mode = "readline" if allow_hmp else "control"
    if mode == "control":
        return monitor_init_qmp(
            chr, pretty, mon_id=mon_id, dynamic=dynamic, session_check=session_check, x_oob=x_oob
        )
    if not allow_hmp:
        raise error_setg("Only QMP is supported")
    if pretty:
        raise error_setg("'pretty' is not compatible with HMP monitors")
    if session_check:
        raise error_setg("'x-session-check' is not compatible with HMP monitors")
    if x_oob:
        raise error_setg("Monitor out-of-band is only supported by QMP")  # 2.12's text
    from monitor.hmp import monitor_init_hmp

    return monitor_init_hmp(chr, True, mon_id=mon_id)
