"""The command registry: which commands a monitor can run, and how.

Mirrors ``qapi/qmp-registry.c`` and the declarations of
``include/qapi/qmp/dispatch.h``, plus ``qmp_command_available()`` from
``system/qdev-monitor.c`` (taking the machine phase as an argument, because
qapi/ must not import system/).

Threads: a command list is filled in the main thread before any monitor
exists.  Afterwards it is read by the main loop (in-band dispatch) and by the
monitor I/O thread (OOB dispatch); only ``enabled``/``disable_reason`` change,
from the main loop, as single attribute stores.
"""

from __future__ import annotations

import enum
from typing import Any, Callable, Optional

from qapi.error import error_setg

#: A marshalled command: takes the request's ``arguments`` dict, returns the
#: value for ``return`` (``None`` when the schema declares no result) or raises
#: :class:`~qapi.error.QapiError`.
QmpCommandFunc = Callable[[dict[str, Any]], Any]


class QmpCommandOptions(enum.IntFlag):
    """How a command may be dispatched (QEMU's ``QmpCommandOptions``)."""

    QCO_NO_OPTIONS = 0
    QCO_NO_SUCCESS_RESP = 1 << 0
    QCO_ALLOW_OOB = 1 << 1
    QCO_ALLOW_PRECONFIG = 1 << 2
    QCO_COROUTINE = 1 << 3


QCO_NO_OPTIONS = QmpCommandOptions.QCO_NO_OPTIONS
QCO_NO_SUCCESS_RESP = QmpCommandOptions.QCO_NO_SUCCESS_RESP
QCO_ALLOW_OOB = QmpCommandOptions.QCO_ALLOW_OOB
QCO_ALLOW_PRECONFIG = QmpCommandOptions.QCO_ALLOW_PRECONFIG
QCO_COROUTINE = QmpCommandOptions.QCO_COROUTINE


class QapiSpecialFeature(enum.IntFlag):
    """Schema features the dispatcher acts on (``-compat`` policies)."""

    NONE = 0
    QAPI_DEPRECATED = 1 << 0
    QAPI_UNSTABLE = 1 << 1


class QmpCommand:
    """One registered command (QEMU's ``QmpCommand``).

    A plain class rather than a dataclass: importing ``dataclasses`` (and
    with it ``inspect``) would be paid at every start-up.
    """

    __slots__ = (
        "allow_oob",
        "allow_preconfig",
        "coroutine",
        "disable_reason",
        "enabled",
        "fn",
        "name",
        "options",
        "special_features",
        "success_response",
    )

    name: str
    fn: QmpCommandFunc
    options: QmpCommandOptions
    special_features: QapiSpecialFeature
    enabled: bool
    disable_reason: Optional[str]
    #: ``options`` as plain bools for the per-request path, where a Flag
    #: ``&`` would cost half a microsecond each time.
    allow_oob: bool
    allow_preconfig: bool
    coroutine: bool
    success_response: bool

    def __init__(
        self,
        name: str,
        fn: QmpCommandFunc,
        options: QmpCommandOptions,
        special_features: QapiSpecialFeature = QapiSpecialFeature.NONE,
        enabled: bool = True,
        disable_reason: Optional[str] = None,
    ) -> None:
        self.name = name
        self.fn = fn
        self.options = options
        self.special_features = special_features
        self.enabled = enabled
        self.disable_reason = disable_reason
        self.allow_oob = bool(self.options & QCO_ALLOW_OOB)
        self.allow_preconfig = bool(self.options & QCO_ALLOW_PRECONFIG)
        self.coroutine = bool(self.options & QCO_COROUTINE)
        self.success_response = not self.options & QCO_NO_SUCCESS_RESP


class QmpCommandList:
    """An ordered command table (QEMU's ``QTAILQ_HEAD(QmpCommandList, ...)``).

    Order matters: ``query-commands`` reports it reversed.  ``by_name``
    indexes the same commands, so a lookup per request is not a walk of the
    list (names are unique, so the answer is the same).
    """

    def __init__(self) -> None:
        self.commands: list[QmpCommand] = []
        self.by_name: dict[str, QmpCommand] = {}


def qmp_register_command(
    cmds: QmpCommandList,
    name: str,
    fn: QmpCommandFunc,
    options: QmpCommandOptions = QCO_NO_OPTIONS,
    special_features: QapiSpecialFeature = QapiSpecialFeature.NONE,
) -> None:
    """Append a command.  OOB and coroutine commands cannot be combined:
    an OOB command runs outside coroutine context, in the I/O thread."""
    assert not (options & QCO_COROUTINE and options & QCO_ALLOW_OOB), name
    assert qmp_find_command(cmds, name) is None, f"command {name} registered twice"
    cmd = QmpCommand(name, fn, options, special_features)
    cmds.commands.append(cmd)
    cmds.by_name[name] = cmd


def qmp_find_command(cmds: QmpCommandList, name: str) -> Optional[QmpCommand]:
    return cmds.by_name.get(name)


def _toggle_command(
    cmds: QmpCommandList, name: str, enabled: bool, disable_reason: Optional[str]
) -> None:
    cmd = qmp_find_command(cmds, name)
    if cmd is not None:
        cmd.enabled = enabled
        cmd.disable_reason = disable_reason


def qmp_disable_command(
    cmds: QmpCommandList, name: str, disable_reason: Optional[str] = None
) -> None:
    """Make ``name`` fail with CommandNotFound; the reason is appended to the
    message.  Unknown names are ignored, as in QEMU."""
    _toggle_command(cmds, name, False, disable_reason)


def qmp_enable_command(cmds: QmpCommandList, name: str) -> None:
    _toggle_command(cmds, name, True, None)


def qmp_command_is_enabled(cmd: QmpCommand) -> bool:
    return cmd.enabled


def qmp_has_success_response(cmd: QmpCommand) -> bool:
    return cmd.success_response


def qmp_command_available(cmd: QmpCommand, machine_ready: bool) -> bool:
    """Refuse commands that need a finished machine while ``--preconfig`` holds.

    Returns True, or raises the GenericError QEMU 7.2 sends (QEMU returns
    false with the error set; raising keeps the caller's flow the same).
    """
    if not machine_ready and not cmd.allow_preconfig:
        raise error_setg(
            "The command '%s' is permitted only after machine initialization has completed",
            cmd.name,
        )
    return True


def qmp_for_each_command(cmds: QmpCommandList, fn: Callable[[QmpCommand], None]) -> None:
    for cmd in list(cmds.commands):
        fn(cmd)
