"""QMP commands about QMP itself (monitor/qmp-cmds-control.c).

They run in the main loop under the BQL, on behalf of ``monitor_cur()``.
"""

from __future__ import annotations

from typing import Any, Optional

from monitor.eras import current_era
from monitor.monitor import monitor_cur, monitor_globals
from monitor.monitor_internal import MonitorQMP
from qapi.error import ErrorClass, error_set, error_setg
from qapi.introspect import qmp_schema_info, query_commands_list

#: The "package" string QEMU builds fill in; distributions put theirs here.
QEMU_PKGVERSION = "qemu-monitor-emu"


def _cur_qmp() -> MonitorQMP:
    mon = monitor_cur()
    assert isinstance(mon, MonitorQMP), "a QMP command runs on behalf of a QMP monitor"
    return mon


def qmp_qmp_capabilities(enable: Optional[list[str]]) -> None:
    """Leave negotiation mode, enabling the capabilities asked for.

    Once negotiated, the command is still found but refuses, with class
    CommandNotFound, as QEMU does.
    """
    mon = _cur_qmp()
    g = monitor_globals()
    if mon.session_generation_check and mon.dispatch_session != mon.session:
        # bugs.md 3, fixed: the client that asked has gone; the negotiation
        # state is the next client's now (its reply is dropped too)
        return
    if mon.commands is g.qmp_commands:
        raise error_set(
            ErrorClass.COMMAND_NOT_FOUND,
            "Capabilities negotiation is already complete, command ignored",
        )
    for cap in enable or []:
        if cap not in mon.capab_offered:
            raise error_setg("Capability %s not available", cap)
    mon.capab = set(enable or [])
    mon.commands = g.qmp_commands


def qmp_query_version() -> dict[str, Any]:
    """The era's release (monitor/eras.py; by default QEMU_VERSION)."""
    major, minor, micro = current_era().version
    return {
        "qemu": {"major": major, "minor": minor, "micro": micro},
        "package": QEMU_PKGVERSION,
    }


def qmp_query_commands() -> list[dict[str, str]]:
    """The enabled commands of the asking monitor's current list."""
    mon = _cur_qmp()
    assert mon.commands is not None
    return query_commands_list(mon.commands)


def qmp_query_qmp_schema() -> list[dict[str, Any]]:
    g = monitor_globals()
    assert g.schema is not None
    if g.schema_info is None:
        g.schema_info = qmp_schema_info(g.schema)
    return g.schema_info
