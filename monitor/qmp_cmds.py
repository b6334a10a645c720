"""Monitor-level QMP commands (monitor/qmp-cmds.c, util/yank.c) and the
emulator-only test commands.

``x-oob-test``, ``x-debug-emit-event`` and ``x-debug-co-sleep`` do not exist
in QEMU; the schema marks them unstable.  They make the threading model
observable: a main loop stuck on purpose, guest-side events on demand, and a
coroutine command that yields while the main loop keeps running.
"""

from __future__ import annotations

from typing import Any, Optional

from monitor.monitor import (
    monitor_data_destroy,
    monitor_data_init,
    monitor_globals,
    qapi_event_send,
)
from monitor.monitor_internal import MonitorHMP
from qapi.error import ErrorClass, error_set, error_setg
from qapi.qmp_event import qapi_event_input_data
from util.aio import AIO_WAIT_WHILE, aio_co_wake, aio_timer_new
from util.coroutine import qemu_coroutine_self, qemu_coroutine_yield, qemu_in_coroutine
from util.main_loop import qemu_get_aio_context, qemu_in_main_thread
from util.markers import coroutine_fn, requires_bql
from util.timer import QEMU_CLOCK_REALTIME, SCALE_MS, qemu_clock_get_ms, timer_mod
from util.yank import yank_find_missing, yank_instances, yank_run


def qmp_x_oob_test(lock: bool) -> None:
    """``lock: true`` in-band blocks the main loop (BQL held) until a
    ``lock: false`` (normally out-of-band) releases it.

    A release that arrives before the lock is kept, so a client may send
    both back to back without a race.  Locking out-of-band would block the
    I/O thread, which serves every QMP monitor, so it is refused.
    """
    release = monitor_globals().x_oob_test_release
    if not lock:
        release.set()
        return
    if not qemu_in_main_thread():
        raise error_setg("x-oob-test: 'lock': true must be executed in-band")
    release.wait()
    release.reset()


def qmp_x_debug_emit_event(event: str, data: Optional[Any]) -> None:
    """Raise ``event`` as if the guest had caused it (throttling applies)."""
    schema = monitor_globals().schema
    assert schema is not None
    qapi_event_send(event, qapi_event_input_data(schema, event, data) or None)


@coroutine_fn
def qmp_x_debug_co_sleep(ms: int) -> None:
    """Yield in the dispatcher coroutine for ``ms`` milliseconds.

    The main loop keeps running meanwhile (other monitors' OOB commands,
    HMP, timers); in-band commands of every QMP monitor wait, since they
    share the one dispatcher.
    """
    if ms < 0:
        raise error_setg("Parameter 'ms' expects a non-negative value")
    if not qemu_in_coroutine():
        _sleep_in_nested_loop(ms)
        return
    co = qemu_coroutine_self()
    timer = aio_timer_new(
        qemu_get_aio_context(), QEMU_CLOCK_REALTIME, SCALE_MS, aio_co_wake, co, "x-debug-co-sleep"
    )
    timer_mod(timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + ms)
    qemu_coroutine_yield()


def _sleep_in_nested_loop(ms: int) -> None:
    """The bottom-half dispatcher's eras have no coroutine commands: wait
    in a nested loop of qemu_aio_context, as their synchronous commands
    did, with the BQL held (HMP and the dispatcher wait too)."""
    expired: list[bool] = []
    timer = aio_timer_new(
        qemu_get_aio_context(),
        QEMU_CLOCK_REALTIME,
        SCALE_MS,
        expired.append,
        True,
        "x-debug-co-sleep",
    )
    timer_mod(timer, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + ms)
    AIO_WAIT_WHILE(qemu_get_aio_context(), lambda: not expired)


def qmp_yank(instances: list[dict[str, Any]]) -> None:
    """Cut the connections of every instance, checking all exist first."""
    if yank_find_missing(instances):
        raise error_set(ErrorClass.DEVICE_NOT_FOUND, "Instance not found")
    yank_run(instances)


def qmp_query_yank() -> list[dict[str, Any]]:
    return yank_instances()


@requires_bql
def qmp_human_monitor_command(command_line: str, cpu_index: Optional[int]) -> str:
    """Run one HMP command line in a scratch monitor and return its output.

    The scratch monitor has no chardev and never flushes, so the output
    collects in its buffer, line ends already CRLF; a command that prints
    nothing gives "".  A ``cpu-index`` no vCPU has is refused (``-machine
    none`` has none without ``-accel x-model``).  HMP's parser and command
    table are imported here, on first use: a start-up without human monitors
    does not load them.
    """
    from monitor.hmp import handle_hmp_command
    from monitor.hmp_cmds import monitor_set_cpu

    hmp = MonitorHMP(use_readline=False, skip_flush=True)
    monitor_data_init(hmp)
    try:
        if cpu_index is not None and not monitor_set_cpu(hmp, cpu_index):
            raise error_setg("Parameter '%s' expects %s", "cpu-index", "a CPU number")
        handle_hmp_command(hmp, command_line)
        with hmp.mon_lock:
            return hmp.outbuf.decode("utf-8", "replace")
    finally:
        monitor_data_destroy(hmp)
