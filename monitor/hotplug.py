"""Monitor hotplug: monitor-add, monitor-remove, query-monitors.

Not in QEMU 7.2: this follows the proposed "dynamic QMP monitor lifecycle"
series (first version, with the ``dynamic`` flag; monitors created on the
command line cannot be removed).  The commands run in the main loop under the
BQL, in the dispatcher; the removal sequence itself is in monitor/qmp.py
(``monitor_qmp_remove``), next to the code whose state it takes apart.
"""

from __future__ import annotations

from typing import Any, Optional

from chardev.char import qemu_chr_find
from monitor.monitor import monitor_globals
from monitor.monitor_internal import MonitorQMP
from monitor.qmp import monitor_init_qmp, monitor_qmp_remove
from qapi.error import error_setg


def qmp_monitor_add(id: str, chardev: str, pretty: Optional[bool]) -> None:
    """Create a QMP monitor on an existing chardev that has no frontend.

    For a socket chardev the monitor joins mon_list from the I/O thread a
    moment later (its setup BH); its id is reserved at once.
    """
    g = monitor_globals()
    with g.monitor_lock:
        taken = id in g.mon_ids
    if taken:
        raise error_setg("monitor '%s' already exists", id)
    chr = qemu_chr_find(chardev)
    if chr is None:
        raise error_setg("chardev '%s' not found", chardev)
    monitor_init_qmp(chr, bool(pretty), mon_id=id, dynamic=True)


def qmp_monitor_remove(id: str) -> None:
    """Remove a monitor monitor-add created; its client is disconnected.

    Run by the monitor being removed, the reply still reaches the client
    before the connection drops: destruction waits for the dispatcher.
    """
    g = monitor_globals()
    with g.monitor_lock:
        mon = g.mon_ids.get(id)
    if mon is None:
        raise error_setg("monitor '%s' not found", id)
    if not mon.dynamic or not isinstance(mon, MonitorQMP):
        raise error_setg("monitor '%s' was not dynamically added", id)
    monitor_qmp_remove(mon)


def qmp_query_monitors() -> list[dict[str, Any]]:
    """Every monitor in mon_list, HMP included, in mon_list order."""
    g = monitor_globals()
    out = []
    with g.monitor_lock:
        for mon in g.mon_list:
            info: dict[str, Any] = {}
            if mon.id is not None:
                info["id"] = mon.id
            info["mode"] = "control" if mon.is_qmp else "readline"
            info["chardev"] = mon.chr.label()
            info["dynamic"] = mon.dynamic
            out.append(info)
    return out
