"""HMP commands: the command tables and their handlers (hmp-commands.hx,
hmp-commands-info.hx, monitor/hmp-cmds.c, monitor/misc.c).

Threads: every handler runs in the main loop thread with the BQL held, from
``handle_hmp_command`` (an interactive monitor's chardev handler, or the
``human-monitor-command`` QMP handler), with ``monitor_cur()`` set to the
HMP monitor.

As QEMU's ``hmp_stop`` calls ``qmp_stop``, the handlers here run the QMP
command's handler, found by name in the QMP registry held in the monitor
globals; monitor/ never imports system/.  Only the commands a ``-machine
none`` emulator can serve are listed; ``help`` and ``info`` therefore list
fewer commands than QEMU 7.2, in the same format.  ``info monitors`` is an
emulator addition.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

from monitor.monitor import error_printf, monitor_globals, monitor_printf, monitor_suspend
from monitor.monitor_internal import Monitor, MonitorHMP
from qapi.error import QapiError
from qapi.qmp_registry import qmp_find_command
from util.readline import readline_get_history

#: a handler gets its monitor and the parsed arguments, by args_type key
HMPHandler = Callable[[Monitor, dict[str, Any]], None]


@dataclass(frozen=True)
class HMPCommand:
    """One table entry (HMPCommand in monitor-internal.h).

    ``name`` lists the aliases separated by ``|``; ``args_type`` is QEMU's
    mini-language (``key:type`` items separated by commas, ``?`` after the
    type for optional arguments); ``params`` and ``help`` are what ``help``
    prints; ``p`` in ``flags`` allows the command before the machine is
    ready (``--preconfig``).
    """

    name: str
    args_type: str
    params: str
    help: str
    cmd: HMPHandler
    sub_table: Optional[tuple[HMPCommand, ...]] = None
    flags: str = ""


# ---------------------------------------------------------------- calling QMP


def qmp_call(name: str) -> Any:
    """Run QMP command ``name`` (none here takes arguments) and return its
    result; raises :class:`QapiError` as the command does."""
    cmd = qmp_find_command(monitor_globals().qmp_commands, name)
    assert cmd is not None, f"QMP command {name} is not registered"
    return cmd.fn({})


def qmp_call_errp_null(name: str) -> None:
    """Run a QMP command whose error QEMU's HMP handler throws away (it
    passes a NULL ``errp``)."""
    try:
        qmp_call(name)
    except QapiError:
        pass


def hmp_handle_error(err: QapiError) -> None:
    """Print ``err`` as ``error_reportf_err(err, "Error: ")`` does when the
    current monitor is an HMP one: no program name, no location."""
    error_printf(f"Error: {err.desc}\n")


# ---------------------------------------------------------------- commands


def do_help_cmd(mon: Monitor, qdict: dict[str, Any]) -> None:
    from monitor.hmp import help_cmd

    help_cmd(mon, qdict.get("name"))


def hmp_info_help(mon: Monitor, qdict: dict[str, Any]) -> None:
    """``info`` without a subcommand lists the subcommands."""
    from monitor.hmp import help_cmd

    help_cmd(mon, "info")


def hmp_stop(mon: Monitor, qdict: dict[str, Any]) -> None:
    qmp_call_errp_null("stop")


def hmp_cont(mon: Monitor, qdict: dict[str, Any]) -> None:
    try:
        qmp_call("cont")
    except QapiError as err:
        hmp_handle_error(err)


def hmp_quit(mon: Monitor, qdict: dict[str, Any]) -> None:
    """Stop reading this monitor for good (no prompt comes back), then quit."""
    monitor_suspend(mon)
    qmp_call_errp_null("quit")


def hmp_exit_preconfig(mon: Monitor, qdict: dict[str, Any]) -> None:
    try:
        qmp_call("x-exit-preconfig")
    except QapiError as err:
        hmp_handle_error(err)


def hmp_system_reset(mon: Monitor, qdict: dict[str, Any]) -> None:
    qmp_call_errp_null("system_reset")


def hmp_system_powerdown(mon: Monitor, qdict: dict[str, Any]) -> None:
    qmp_call_errp_null("system_powerdown")


def hmp_device_add(mon: Monitor, qdict: dict[str, Any]) -> None:
    """``device_add driver[,prop=value][,...]``: the QMP command on the
    options as a dictionary (QEMU parses them with QemuOpts, ``driver``
    implied)."""
    args: dict[str, Any] = {}
    for i, item in enumerate(filter(None, qdict.get("device", "").split(","))):
        key, eq, value = item.partition("=")
        if not eq and i == 0:
            key, value = "driver", item
        args[key] = value
    cmd = qmp_find_command(monitor_globals().qmp_commands, "device_add")
    assert cmd is not None
    try:
        cmd.fn(args)
    except QapiError as err:
        hmp_handle_error(err)


def hmp_info_status(mon: Monitor, qdict: dict[str, Any]) -> None:
    """``VM status: running`` or ``paused``, naming any other paused state."""
    info = qmp_call("query-status")
    text = "VM status: " + ("running" if info["running"] else "paused")
    if info.get("singlestep"):
        text += " (single step mode)"
    if not info["running"] and info["status"] != "paused":
        text += f" ({info['status']})"
    monitor_printf(mon, text + "\n")


def hmp_info_version(mon: Monitor, qdict: dict[str, Any]) -> None:
    info = qmp_call("query-version")
    qemu = info["qemu"]
    monitor_printf(mon, f"{qemu['major']}.{qemu['minor']}.{qemu['micro']}{info['package']}\n")


def hmp_info_name(mon: Monitor, qdict: dict[str, Any]) -> None:
    """The ``-name`` value; nothing at all when there is none."""
    info = qmp_call("query-name")
    if "name" in info:
        monitor_printf(mon, f"{info['name']}\n")


def hmp_info_chardev(mon: Monitor, qdict: dict[str, Any]) -> None:
    lines = [f"{c['label']}: filename={c['filename']}\n" for c in qmp_call("query-chardev")]
    monitor_printf(mon, "".join(lines))


def hmp_info_history(mon: Monitor, qdict: dict[str, Any]) -> None:
    """The readline history, oldest first; empty without readline
    (``human-monitor-command``)."""
    rs = mon.rs if isinstance(mon, MonitorHMP) else None
    if rs is None:
        return
    lines = []
    index = 0
    entry = readline_get_history(rs, index)
    while entry is not None:
        lines.append(f"{index}: '{entry}'\n")
        index += 1
        entry = readline_get_history(rs, index)
    monitor_printf(mon, "".join(lines))


def hmp_info_monitors(mon: Monitor, qdict: dict[str, Any]) -> None:
    """Emulator addition: ``query-monitors`` as one line per monitor."""
    lines = [
        f"{m.get('id', '(no id)')}: mode={m['mode']} chardev={m['chardev']} "
        f"dynamic={'on' if m['dynamic'] else 'off'}\n"
        for m in qmp_call("query-monitors")
    ]
    monitor_printf(mon, "".join(lines))


def monitor_set_cpu(mon: Monitor, cpu_index: int) -> bool:
    """Make CPU ``cpu_index`` the monitor's current one; False if none has it.

    CPUs are found through ``query-cpus-fast``, as ``info cpus`` finds them:
    monitor/ does not reach into system/.
    """
    for cpu in qmp_call("query-cpus-fast"):
        if cpu["cpu-index"] == cpu_index:
            mon.mon_cpu_path = cpu["qom-path"]
            return True
    return False


def monitor_get_cpu_index(mon: Monitor) -> Optional[int]:
    """The current CPU's index; the first CPU when none is set or it is gone."""
    cpus = qmp_call("query-cpus-fast")
    for cpu in cpus:
        if cpu["qom-path"] == mon.mon_cpu_path:
            return int(cpu["cpu-index"])
    if not cpus:
        return None
    mon.mon_cpu_path = cpus[0]["qom-path"]
    return int(cpus[0]["cpu-index"])


def hmp_cpu(mon: Monitor, qdict: dict[str, Any]) -> None:
    if not monitor_set_cpu(mon, qdict["index"]):
        monitor_printf(mon, "invalid CPU index\n")


def hmp_info_cpus(mon: Monitor, qdict: dict[str, Any]) -> None:
    """One line per vCPU, ``*`` marking the monitor's current one."""
    cpus = qmp_call("query-cpus-fast")
    current = monitor_get_cpu_index(mon)
    lines = [
        f"{'*' if cpu['cpu-index'] == current else ' '} CPU #{cpu['cpu-index']}: "
        f"thread_id={cpu['thread-id']}\n"
        for cpu in cpus
    ]
    monitor_printf(mon, "".join(lines))


def _sorted(*cmds: HMPCommand) -> tuple[HMPCommand, ...]:
    """QEMU sorts both tables by name at start-up (sortcmdlist); ``help``
    and completion list them in that order."""
    return tuple(sorted(cmds, key=lambda cmd: cmd.name))


hmp_info_cmds = _sorted(
    HMPCommand("chardev", "", "", "show the character devices", hmp_info_chardev, flags="p"),
    HMPCommand("cpus", "", "", "show infos for each CPU", hmp_info_cpus),
    HMPCommand("history", "", "", "show the command line history", hmp_info_history, flags="p"),
    HMPCommand(
        "monitors",
        "",
        "",
        "show the monitors (emulator only: like query-monitors)",
        hmp_info_monitors,
        flags="p",
    ),
    HMPCommand("name", "", "", "show the current VM name", hmp_info_name, flags="p"),
    HMPCommand(
        "status",
        "",
        "",
        "show the current VM status (running|paused)",
        hmp_info_status,
        flags="p",
    ),
    HMPCommand("version", "", "", "show the version of QEMU", hmp_info_version, flags="p"),
)

hmp_cmds = _sorted(
    HMPCommand("help|?", "name:S?", "[cmd]", "show the help", do_help_cmd, flags="p"),
    HMPCommand("quit|q", "", "", "quit the emulator", hmp_quit, flags="p"),
    HMPCommand("exit_preconfig", "", "", "exit the preconfig state", hmp_exit_preconfig, flags="p"),
    HMPCommand("stop|s", "", "", "stop emulation", hmp_stop),
    HMPCommand("cont|c", "", "", "resume emulation", hmp_cont),
    HMPCommand("cpu", "index:i", "index", "set the default CPU", hmp_cpu),
    HMPCommand(
        "device_add",
        "device:S?",
        "driver[,prop=value][,...]",
        "add device, like -device on the command line",
        hmp_device_add,
    ),
    HMPCommand("system_reset", "", "", "reset the system", hmp_system_reset),
    HMPCommand("system_powerdown", "", "", "send system power down event", hmp_system_powerdown),
    HMPCommand(
        "info",
        "item:s?",
        "[subcommand]",
        "show various information about the system state",
        hmp_info_help,
        hmp_info_cmds,
        flags="p",
    ),
)
