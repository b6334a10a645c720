"""Protocol errors: the one root type for errors a QMP client gets back.

Mirrors QEMU's ``include/qapi/error.h`` and ``util/error.c``, reduced to what
travels on the wire: an error class and a description.  Runs in whichever
thread raises it (main loop for in-band commands, the monitor I/O thread for
OOB ones).

Two families of errors never mix (STYLE.md "Errors"):

* :class:`QapiError` is *data*.  A handler or the dispatcher raises it; the
  dispatcher turns it into ``{"error": {"class": ..., "desc": ...}}``.
* A broken internal invariant is a plain Python exception or an
  ``AssertionError``.  The dispatcher never converts those into replies, so a
  bug fails loudly instead of looking like a client mistake.

QEMU's ``error_setg(errp, fmt, ...)`` stores into an out-parameter.  Python has
exceptions, so :func:`error_setg` *returns* the error and the caller writes
``raise error_setg("Chardev '%s' not found", label)``: the raise stays visible
at the call site, and the traceback points at it.
"""

from __future__ import annotations

import enum


class ErrorClass(str, enum.Enum):
    """QEMU's ``QapiErrorClass``: the ``class`` member of an error reply.

    Almost everything is GenericError; the others survive for compatibility
    with clients that matched on them before QEMU stopped adding classes.
    """

    GENERIC_ERROR = "GenericError"
    COMMAND_NOT_FOUND = "CommandNotFound"
    DEVICE_NOT_ACTIVE = "DeviceNotActive"
    DEVICE_NOT_FOUND = "DeviceNotFound"
    KVM_MISSING_CAP = "KVMMissingCap"


class QapiError(Exception):
    """An error reported to the QMP client, as QEMU's ``Error`` object.

    ``desc`` is exactly the text ``error_get_pretty()`` would give; hints are
    not part of it, because QEMU does not send them over QMP either.
    """

    def __init__(self, error_class: ErrorClass, desc: str) -> None:
        super().__init__(desc)
        self.error_class = error_class
        self.desc = desc

    def __repr__(self) -> str:
        return f"QapiError({self.error_class.value}, {self.desc!r})"


def _format(fmt: str, args: tuple[object, ...]) -> str:
    """printf-style formatting, as the C helpers do (``%s``, ``%d``, ``%u``)."""
    return fmt % args if args else fmt


def error_set(error_class: ErrorClass, fmt: str, *args: object) -> QapiError:
    """Build an error of a specific class (QEMU's ``error_set``)."""
    return QapiError(error_class, _format(fmt, args))


def error_setg(fmt: str, *args: object) -> QapiError:
    """Build a GenericError (QEMU's ``error_setg``), for the caller to raise."""
    return QapiError(ErrorClass.GENERIC_ERROR, _format(fmt, args))


def error_prepend(err: QapiError, fmt: str, *args: object) -> QapiError:
    """Put context in front of an error's description, keeping its class.

    QEMU uses this for messages such as ``Failed to add chardev 'x': ...``.
    The error is modified in place and returned, so ``raise error_prepend(e,
    ...) from e`` reads naturally.
    """
    err.desc = _format(fmt, args) + err.desc
    err.args = (err.desc,)
    return err
