"""``device_add`` (softmmu/qdev-monitor.c).

``-machine none`` here has no device models, so every ``device_add`` fails
as QEMU's does for a driver it does not know.  What matters for the
threading model is what QEMU does on the way: after trying to create the
device, ``qmp_device_add`` waits for every pending RCU callback
(``drain_call_rcu``, dropping the BQL) because a failed device may be
finalised from one (QEMU 7.2.11 and later drain only on this error path).
That wait is where bugs.md entry 24 hangs the monitor against a busy TCG
vCPU.

Threads: the main loop thread with the BQL (QMP dispatcher or HMP).
"""

from __future__ import annotations

from typing import Any

from qapi.error import QapiError, error_setg
from util.markers import requires_bql


def qdev_device_add(qdict: dict[str, Any]) -> QapiError:
    """The error creating the device (qdev_get_device_class's checks)."""
    driver = qdict.get("driver")
    if driver is None:
        return error_setg("Parameter '%s' is missing", "driver")
    if not isinstance(driver, str):
        return error_setg("Parameter '%s' expects %s", "driver", "a string")
    return error_setg("'%s' is not a valid device model name", driver)


@requires_bql
def qmp_device_add(qdict: dict[str, Any]) -> None:
    """Fail as an unknown device does, after draining the RCU callbacks."""
    from util.rcu import drain_call_rcu  # loaded on first use

    err = qdev_device_add(qdict)
    # bus operations may delay a failed device's removal to an RCU
    # callback; the command must not return before it has run
    drain_call_rcu()
    raise err
