"""Machine-level queries for ``-machine none`` (hw/core/machine-qmp-cmds.c,
system/vl.c, accel, iothread.c).

There is no guest: the answers are those of a QEMU started with
``-machine none`` and no accelerator beyond TCG.
"""

from __future__ import annotations

from typing import Any, Optional

#: QEMU_UUID: all zeros until -uuid sets one.
DEFAULT_UUID = "00000000-0000-0000-0000-000000000000"


class MachineGlobals:
    """What the command line set: ``-name`` and the machine type.

    A plain class: a dataclass would compile its methods at every start-up.
    """

    def __init__(self, name: Optional[str] = None) -> None:
        self.name = name
        self.uuid = DEFAULT_UUID


class _Current:
    machine: MachineGlobals = MachineGlobals()


_current = _Current()


def machine_init(name: Optional[str]) -> MachineGlobals:
    _current.machine = MachineGlobals(name=name)
    return _current.machine


def qmp_query_name() -> dict[str, Any]:
    name = _current.machine.name
    return {} if name is None else {"name": name}


def qmp_query_uuid() -> dict[str, Any]:
    return {"UUID": _current.machine.uuid}


def qmp_query_kvm() -> dict[str, Any]:
    """KVM support is built into QEMU's x86 binaries but not in use here."""
    return {"enabled": False, "present": True}


def qmp_query_cpus_fast() -> list[dict[str, Any]]:
    """The vCPUs (none without -accel x-model); system/cpus.py is loaded on
    first use, so a start-up without vCPUs does not pay for it."""
    from system.cpus import query_cpus_fast

    return query_cpus_fast()


def qmp_query_iothreads() -> list[dict[str, Any]]:
    """User-created IOThreads only; the monitor's own is internal."""
    return []
