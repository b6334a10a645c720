"""One sink for errors raised where nobody can catch them (util/error-report.c).

Bottom halves, timers and fd handlers are called by ``aio_poll``; an exception
escaping one of them has no caller to return to.  QEMU would abort or print
with ``error_report``; here every such exception goes to one sink so that a
test can fail loudly instead of a thread dying quietly.  Runs in any thread.
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Callable, Optional

if TYPE_CHECKING:
    import logging

#: Signature of a sink: (where it happened, the exception).
ErrorSink = Callable[[str, BaseException], None]

_progname = "qemu-monitor-emu"
_sink: Optional[ErrorSink] = None
_sink_lock = threading.Lock()
#: the stderr format main() asked for, applied by the first log (_logger)
_log_format: Optional[str] = None


def error_set_progname(name: str) -> None:
    """Set the prefix QEMU puts before every error line (argv[0])."""
    global _progname
    _progname = name


def error_report(msg: str) -> None:
    """Print ``msg`` on stderr the way QEMU does: ``progname: msg``."""
    sys.stderr.write(f"{_progname}: {msg}\n")
    sys.stderr.flush()


def warn_report(msg: str) -> None:
    """Print a warning line on stderr as QEMU's ``warn_report``."""
    error_report(f"warning: {msg}")


def error_log_init(fmt: str) -> None:
    """Log callback exceptions on stderr as ``fmt`` (the process's basicConfig).

    Only recorded here: ``logging`` takes milliseconds to import, which a
    start-up that never logs should not pay, so the first log configures it.
    """
    global _log_format
    _log_format = fmt


def _logger() -> logging.Logger:
    import logging

    if _log_format is not None:
        logging.basicConfig(level=logging.WARNING, format=_log_format)
    return logging.getLogger("qemu_monitor_emu")


def error_sink_set(sink: Optional[ErrorSink]) -> Optional[ErrorSink]:
    """Install ``sink`` (None restores logging) and return the previous one."""
    global _sink
    with _sink_lock:
        old, _sink = _sink, sink
    return old


def report_callback_exception(where: str, exc: BaseException) -> None:
    """Hand an exception escaping a callback to the sink.

    Without a sink installed it is logged as qemu.qmp does: one line at
    ERROR, the traceback at DEBUG.
    """
    sink = _sink
    if sink is not None:
        sink(where, exc)
        return
    logger = _logger()
    logger.error("%s: unhandled %s: %s", where, type(exc).__name__, exc)
    logger.debug("%s: traceback", where, exc_info=exc)
