"""The monitor QOM types of QEMU 11.1: ``monitor``, ``monitor-qmp``, ``monitor-hmp``.

Mirrors the QOM halves of 11.1's monitor/monitor.c (the abstract type, its
``chardev`` property, monitor_complete, monitor_finalize), monitor/qmp.c
(``pretty``, ``close-action``, monitor_qmp_complete; its prepare_delete is
``monitor_qmp_prepare_delete`` in monitor/qmp.py, beside the seed design's
removal it shares steps with) and monitor/hmp.c (``readline``; deletion
refused).

Threads: complete, prepare_delete and finalize run in the main loop under
the BQL (object-add, object-del, -object, cleanup, the close-action BH).
"""

from __future__ import annotations

from typing import Any

from chardev.char import QEMU_CHAR_FEATURE_GCONTEXT, qemu_chr_find, qemu_chr_has_feature
from monitor.monitor import (
    monitor_accept_input,
    monitor_context,
    monitor_data_destroy,
    monitor_data_init,
    monitor_globals,
)
from monitor.monitor_internal import Monitor, MonitorHMP, MonitorQMP
from monitor.qmp import monitor_qmp_prepare_delete, monitor_qmp_setup
from qapi.error import error_setg
from qom.object import (
    TYPE_OBJECT,
    ObjectClass,
    TypeInfo,
    object_class_property_add_bool,
    object_class_property_add_enum,
    object_class_property_add_str,
    object_get_canonical_path_component,
    type_register_instance_class,
    type_register_static,
)
from qom.object_interfaces import TYPE_USER_CREATABLE
from util.aio import aio_bh_new, qemu_bh_delete

TYPE_MONITOR = "monitor"
TYPE_MONITOR_QMP = "monitor-qmp"
TYPE_MONITOR_HMP = "monitor-hmp"


def _set_chardev(obj: Any, value: str) -> None:
    obj.chardev_id = value


def _get_chardev(obj: Any) -> Any:
    return obj.chardev_id


def monitor_complete_chardev(mon: Monitor) -> Any:
    """monitor_complete's lookup: the chardev named by ``chardev``."""
    chr = qemu_chr_find(mon.chardev_id or "")
    if chr is None:
        raise error_setg('chardev "%s" not found', mon.chardev_id)
    return chr


def monitor_take_object_id(mon: Monitor) -> None:
    """The object's id becomes the monitor id (one namespace with
    monitor-add's ids, so query-monitors lists QOM monitors too)."""
    mon_id = object_get_canonical_path_component(mon)
    g = monitor_globals()
    with g.monitor_lock:
        taken = mon_id in g.mon_ids
    if taken:
        raise error_setg("monitor '%s' already exists", mon_id)
    mon.id = mon_id


def monitor_init_accept_input_bh(mon: Monitor) -> None:
    """The persistent accept-input BH in the monitor's context (11.1)."""
    monitor_data_init(mon)
    mon.accept_input_bh = aio_bh_new(
        monitor_context(mon), monitor_accept_input, mon, f"monitor_accept_input:{mon.id}"
    )


def monitor_finalize(obj: Any) -> None:
    """Free what the monitor holds: the BH first, so nothing schedules it
    again, then the frontend and the protocol state."""
    mon: Monitor = obj
    if mon.accept_input_bh is not None:
        # kept (deleted): a monitor_resume after finalize is the use after
        # free QEMU's one-shot BH allowed, and here it fails loudly
        qemu_bh_delete(mon.accept_input_bh)
    monitor_data_destroy(mon)


def _monitor_class_init(klass: ObjectClass) -> None:
    object_class_property_add_str(klass, "chardev", _get_chardev, _set_chardev)


# ---------------------------------------------------------------- monitor-qmp


def _get_pretty(obj: Any) -> Any:
    return obj.pretty


def _set_pretty(obj: Any, value: bool) -> None:
    obj.pretty = value


def _get_close_action(obj: Any) -> Any:
    return obj.close_action


def _set_close_action(obj: Any, value: str) -> None:
    obj.close_action = value


def monitor_qmp_complete(obj: Any) -> None:
    """Attach to the chardev and serve it (as -mon does); the object id is
    the monitor's id, so query-monitors lists it too."""
    mon: MonitorQMP = obj
    chr = monitor_complete_chardev(mon)
    monitor_take_object_id(mon)
    mon.use_io_thread = qemu_chr_has_feature(chr, QEMU_CHAR_FEATURE_GCONTEXT)
    monitor_init_accept_input_bh(mon)
    monitor_qmp_setup(mon, chr)


def _monitor_qmp_prepare_delete(obj: Any) -> None:
    monitor_qmp_prepare_delete(obj)


def _monitor_qmp_class_init(klass: ObjectClass) -> None:
    object_class_property_add_bool(klass, "pretty", _get_pretty, _set_pretty)
    object_class_property_add_enum(
        klass, "close-action", "MonitorQMPCloseAction", _get_close_action, _set_close_action
    )
    klass.complete = monitor_qmp_complete
    klass.prepare_delete = _monitor_qmp_prepare_delete


# ---------------------------------------------------------------- monitor-hmp


def _get_readline(obj: Any) -> Any:
    return obj.use_readline


def _set_readline(obj: Any, value: bool) -> None:
    obj.use_readline = value


def monitor_hmp_complete(obj: Any) -> None:
    from monitor.hmp import monitor_hmp_setup

    mon: MonitorHMP = obj
    chr = monitor_complete_chardev(mon)
    monitor_take_object_id(mon)
    monitor_init_accept_input_bh(mon)
    monitor_hmp_setup(mon, chr)


def monitor_hmp_prepare_delete(obj: Any) -> None:
    raise error_setg("Deleting HMP monitors is not supported")


def _monitor_hmp_class_init(klass: ObjectClass) -> None:
    object_class_property_add_bool(klass, "readline", _get_readline, _set_readline)
    klass.complete = monitor_hmp_complete
    klass.prepare_delete = monitor_hmp_prepare_delete


type_register_static(
    TypeInfo(
        TYPE_MONITOR,
        TYPE_OBJECT,
        abstract=True,
        interfaces=(TYPE_USER_CREATABLE,),
        class_init=_monitor_class_init,
        instance_finalize=monitor_finalize,
    )
)
type_register_static(TypeInfo(TYPE_MONITOR_HMP, TYPE_MONITOR, class_init=_monitor_hmp_class_init))
type_register_static(TypeInfo(TYPE_MONITOR_QMP, TYPE_MONITOR, class_init=_monitor_qmp_class_init))
type_register_instance_class(MonitorHMP)
type_register_instance_class(MonitorQMP)
