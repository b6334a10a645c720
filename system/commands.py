"""Binding every schema command to its handler (monitor_init_qmp_commands).

The handlers live in the layer that owns their state: monitor/ (QMP itself,
fds, hotplug, HMP passthrough, emulator test commands), chardev/ and system/.
This is the only place that knows all of them, so it sits at the top.  A
declared command without a handler, or a handler without a command, stops
start-up.
"""

from __future__ import annotations

import chardev.char_qmp
import monitor.fds
import monitor.hotplug
import monitor.monitor_qom
import monitor.qmp_cmds
import monitor.qmp_cmds_control
import qom.qom_qmp_cmds
import system.machine
import system.migration
import system.qdev_monitor
import system.runstate
from monitor.eras import current_era, era_init_commands
from monitor.monitor_internal import MonitorGlobals
from qapi.qmp_marshal import qmp_collect_handlers, qmp_init_marshal
from qapi.qmp_registry import qmp_find_command, qmp_register_command

HANDLER_PROVIDERS = (
    monitor.qmp_cmds_control,
    monitor.qmp_cmds,
    monitor.fds,
    monitor.hotplug,
    qom.qom_qmp_cmds,
    chardev.char_qmp,
    system.runstate,
    system.machine,
    system.migration,
    system.qdev_monitor,
)


def qmp_init_commands(g: MonitorGlobals) -> None:
    """Fill the full command list, then the negotiation list (qmp_capabilities only)."""
    assert g.schema is not None
    handlers = qmp_collect_handlers(g.schema, *HANDLER_PROVIDERS)
    qmp_init_marshal(g.qmp_commands, g.schema, handlers)
    cap = qmp_find_command(g.qmp_commands, "qmp_capabilities")
    assert cap is not None
    qmp_register_command(g.qmp_cap_negotiation_commands, cap.name, cap.fn, cap.options)
    era_init_commands(g.qmp_commands, current_era())
    g.query_version = monitor.qmp_cmds_control.qmp_query_version
