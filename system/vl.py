"""The command line and the process's life (system/vl.c, system/runstate.c).

``qemu_parse_args`` accepts QEMU's syntax for what the emulator implements and
fails on anything else with QEMU's style of message (``prog: -opt arg: msg``,
exit 1).  ``qemu_init`` creates chardevs, then monitors, in command-line order,
as ``qemu_create_early_backends`` does; ``qemu_main_loop`` runs until a
shutdown request; ``qemu_cleanup`` tears down in QEMU's order.  All of it runs
in the main thread.
"""

from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Callable, Optional

from chardev.char import Chardev, qemu_chr_cleanup, qemu_chr_state
from chardev.char_mux import resume_mux_open, suspend_mux_open
from chardev.char_opts import qemu_chardev_opts, qemu_chr_new_from_opts, qemu_chr_parse_compat
from monitor.eras import era_select
from monitor.monitor import (
    monitor_cleanup,
    monitor_init_globals,
    monitor_init_opts,
)
from qapi.error import QapiError
from qapi.schema import qapi_schema
from system import runstate as rs
from system.commands import qmp_init_commands
from system.machine import machine_init
from util.error_report import error_report, warn_report
from util.main_loop import (
    main_loop_wait,
    qemu_init_main_loop,
    qemu_main_loop_cleanup,
)
from util.qemu_option import (
    QemuOptDesc,
    QemuOpts,
    QemuOptsError,
    QemuOptsHelpWanted,
    QemuOptsList,
    QemuOptType,
    qemu_opt_get,
    qemu_opt_set,
    qemu_opts_create,
    qemu_opts_parse,
)
from util.trace import trace_enable_events, trace_list_events

if TYPE_CHECKING:
    from system.accel_model import GuestModel

#: option name -> takes an argument (the subset of qemu-options.hx emulated)
QEMU_OPTIONS: dict[str, bool] = {
    "chardev": True,
    "mon": True,
    "object": True,
    "qmp": True,
    "qmp-pretty": True,
    "monitor": True,
    "nodefaults": False,
    "machine": True,
    "M": True,
    "smp": True,
    "accel": True,
    "display": True,
    "name": True,
    "S": False,
    "pidfile": True,
    "daemonize": False,
    "trace": True,
    "preconfig": False,
    "version": False,
    "h": False,
    "help": False,
    "x-era": True,
}

USAGE = """\
usage: qemu-monitor-emu [options]
QEMU's monitors (QMP and HMP) without a machine: an emulation of QEMU 7.2's
monitor threading model. Options take QEMU's syntax:

-chardev backend,id=id[,...]  create a character device (socket, stdio,
                              file, pipe, ringbuf, memory, null, mux=on)
-mon [chardev=]name[,mode=readline|control][,pretty=on|off][,id=id]
    [,x-session-check=on|off] attach a monitor to a character device;
                              x-session-check=on (emulator only, mode=control):
                              a request whose client disconnects before it
                              completes has no effect on, and sends no reply
                              to, the next client (QEMU delivers it there)
-object monitor-qmp,id=id,chardev=name[,pretty=on|off][,close-action=none|delete]
-object monitor-hmp,id=id,chardev=name[,readline=on|off]
                              a monitor as a QOM object (QEMU 11.1); JSON
                              ({"qom-type": ...}) works too
-qmp dev / -qmp-pretty dev    a QMP monitor on dev (unix:PATH,server=on,wait=off,
                              tcp:HOST:PORT,server=on,wait=off, stdio, ...)
-monitor dev                  an HMP monitor on dev (stdio, mon:stdio, ...)
-nodefaults                   no default monitors
-machine none / -M none       the only machine emulated
-smp [cpus=]n                 the number of vCPUs (default 1); -machine none has
                              none unless -accel x-model gives it a guest
-accel tcg                    QEMU's default accelerator (no vCPUs here)
-accel x-model[,exit-rate=R][,exit-cost=C][,rcu-section=on|off]
                              emulator only: a guest model on -smp vCPU threads
                              ("CPU n/TCG"); each makes R I/O exits per second
                              of guest time (0, the default: an idle guest),
                              each holding the BQL for C microseconds; with
                              rcu-section=on the guest runs inside an RCU
                              read-side section, as TCG's cpu_exec does
-display none                 the only display emulated
-name string                  set the name reported by query-name
-S                            do not start the VM (query-status: prelaunch)
--preconfig                   stop before machine initialisation until
                              x-exit-preconfig
-pidfile file                 write the process id to file
-daemonize                    detach once the monitors are up
-trace [enable=]pattern[,events=file][,file=file]
                              enable trace events; file=NAME.json writes
                              Chrome/Perfetto trace-event JSON at exit,
                              file=NAME.jsonl a record file, any other name
                              (or none: stderr) the log backend
-version                      print the version and exit
-h                            print this help and exit
-x-era VERSION                run the monitor as QEMU VERSION built it (emulator
                              only): 2.12, 5.2, 7.2, 8.1 or current (the
                              default; also QEMU_MONITOR_EMU_ERA); 2.12 takes
                              -mon ...,x-oob=on to enable out-of-band

Without monitor options and without -nodefaults: an HMP monitor on stdio and
a QMP monitor on a UNIX socket whose path is printed on stderr.
"""


class VlError(Exception):
    """A command-line error: printed as ``prog: LOCATION: MSG``, exit 1."""

    def __init__(self, loc: str, msg: str) -> None:
        super().__init__(f"{loc}: {msg}" if loc else msg)


class VlExit(Exception):
    """Stop after printing something (-version, -h): exit with ``code``."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def qemu_mon_opts(x_oob: bool = False) -> QemuOptsList:
    """-mon's option list (monitor.c's qemu_mon_opts); ``x-oob`` only in
    the 2.12 era, whose out-of-band support it switched on."""
    desc = (
        QemuOptDesc("mode", QemuOptType.QEMU_OPT_STRING),
        QemuOptDesc("chardev", QemuOptType.QEMU_OPT_STRING),
        QemuOptDesc("pretty", QemuOptType.QEMU_OPT_BOOL),
        # emulator only: the fix of bugs.md entry 3, off by default as in QEMU
        QemuOptDesc("x-session-check", QemuOptType.QEMU_OPT_BOOL),
    ) + ((QemuOptDesc("x-oob", QemuOptType.QEMU_OPT_BOOL),) if x_oob else ())
    return QemuOptsList("mon", desc, implied_opt_name="chardev")


def qemu_trace_opts() -> QemuOptsList:
    desc = (
        QemuOptDesc("enable", QemuOptType.QEMU_OPT_STRING),
        QemuOptDesc("events", QemuOptType.QEMU_OPT_STRING),
        QemuOptDesc("file", QemuOptType.QEMU_OPT_STRING),
    )
    return QemuOptsList("trace", desc, implied_opt_name="enable", merge_lists=True)


class VlConfig:
    """What the command line asked for, in order.

    A plain class: a dataclass would compile its methods at every start-up.
    """

    def __init__(self, era: str = "current") -> None:
        #: -x-era, or QEMU_MONITOR_EMU_ERA (monitor/eras.py)
        self.era = era
        self.chardev_opts = qemu_chardev_opts()
        self.mon_opts = qemu_mon_opts(x_oob=era == "2.12")
        #: the command-line text that made each option group, for error locations
        self.locations: dict[int, str] = {}
        self.monitor_device_index = 0
        self.nodefaults = False
        self.name: Optional[str] = None
        self.autostart = True
        self.preconfig = False
        self.pidfile: Optional[str] = None
        self.daemonize = False
        self.traces: list[tuple[str, str]] = []
        self.default_qmp_path: Optional[str] = None
        #: -smp cpus (QEMU's default is 1)
        self.smp_cpus = 1
        #: -accel x-model's guest model; None: no vCPUs, as -machine none
        self.guest_model: Optional[GuestModel] = None
        #: -object arguments with their locations, created after the chardevs
        self.objects: list[tuple[str, str]] = []


def lookup_opt(argv: list[str], i: int) -> tuple[str, Optional[str], int]:
    """Return (option, argument, next index), QEMU's lookup_opt."""
    arg = argv[i]
    name = arg[2:] if arg.startswith("--") else arg[1:]
    if name not in QEMU_OPTIONS:
        raise VlError(arg, "invalid option")
    if not QEMU_OPTIONS[name]:
        return name, None, i + 1
    if i + 1 >= len(argv):
        raise VlError(arg, "requires an argument")
    return name, argv[i + 1], i + 2


def monitor_parse(config: VlConfig, optarg: str, mode: str, pretty: bool, loc: str) -> None:
    """-qmp/-monitor: a compat chardev ``compat_monitorN`` plus a -mon group."""
    if optarg.startswith("chardev:"):
        label = optarg[len("chardev:") :]
    else:
        label = f"compat_monitor{config.monitor_device_index}"
        try:
            opts = qemu_chr_parse_compat(config.chardev_opts, label, optarg, True)
        except QapiError as e:
            error_report(f"{loc}: {e.desc}")
            opts = None
        if opts is None:
            raise VlError(loc, f"parse error: {optarg}")
        config.locations[id(opts)] = loc
    try:
        mon = qemu_opts_create(config.mon_opts, label, True)
    except QemuOptsError as e:
        raise VlError(loc, e.msg) from None
    qemu_opt_set(mon, "mode", mode)
    qemu_opt_set(mon, "chardev", label)
    if mode == "control":
        qemu_opt_set(mon, "pretty", "on" if pretty else "off")
    config.locations[id(mon)] = loc
    config.monitor_device_index += 1


def _parse_group(config: VlConfig, lst: QemuOptsList, optarg: str, loc: str) -> QemuOpts:
    try:
        opts = qemu_opts_parse(lst, optarg, True, _warn_at(loc))
    except QemuOptsHelpWanted as h:
        sys.stdout.write(h.help_text)
        raise VlExit(0) from None
    except QemuOptsError as e:
        raise VlError(loc, e.msg) from None
    config.locations[id(opts)] = loc
    return opts


def _warn_at(loc: str) -> Callable[[str, str], None]:
    def warn(msg: str, hint: str) -> None:
        warn_report(f"{loc}: {msg}" if not hint else f"{loc}: {msg}\n{hint}")

    return warn


def _check_machine(optarg: str, loc: str) -> None:
    machine = optarg.split(",", 1)[0]
    if machine.startswith("type="):
        machine = machine[len("type=") :]
    if machine != "none":
        raise VlError(loc, f"machine '{machine}' is not emulated: only -machine none is")


#: SMPConfiguration members the emulator does not model
_SMP_TOPOLOGY = ("sockets", "dies", "clusters", "cores", "threads", "maxcpus")


def smp_parse(optarg: str, loc: str) -> int:
    """-smp [cpus=]N: the number of vCPUs (machine_parse_smp_config)."""
    cpus = 1
    for i, item in enumerate(optarg.split(",")):
        key, eq, value = item.partition("=")
        if not eq and i == 0:
            key, value = "cpus", item
        if key in _SMP_TOPOLOGY:
            raise VlError(loc, f"Parameter 'smp.{key}' is not emulated: only cpus is")
        if key != "cpus":
            raise VlError("", f"Parameter 'smp.{key}' is unexpected")
        if not value.isdigit():
            raise VlError("", "Parameter 'smp.cpus' expects integer")
        cpus = int(value)
    if cpus == 0:
        warn_report(
            "Deprecated CPU topology (considered invalid): "
            "CPU topology parameters must be greater than zero"
        )
        cpus = 1
    return cpus


def _check_smp(config: VlConfig) -> None:
    """-machine none has at most one CPU; the guest model lifts the limit."""
    max_cpus = 1
    if config.guest_model is not None:
        from system.accel_model import X_MODEL_MAX_CPUS

        max_cpus = X_MODEL_MAX_CPUS
    if config.smp_cpus > max_cpus:
        raise VlError(
            "",
            f"Invalid SMP CPUs {config.smp_cpus}. "
            f"The max CPUs supported by machine 'none' is {max_cpus}",
        )


def qemu_parse_args(argv: list[str]) -> VlConfig:
    """Parse ``argv`` (without the program name) as QEMU does.

    A first pass finds the era (the last -x-era wins), since it decides
    which -mon options exist, as QEMU's first pass does for a few options.
    """
    config = VlConfig(_find_era(argv))
    i = 0
    while i < len(argv):
        if not argv[i].startswith("-"):
            raise VlError(argv[i], "disk images are not emulated (-machine none has no drives)")
        name, optarg, i = lookup_opt(argv, i)
        loc = argv[i - 1] if optarg is None else f"{argv[i - 2]} {optarg}"
        if config.era != "current" and not _era_has_option(config.era, name):
            raise VlError(argv[i - 1 if optarg is None else i - 2], "invalid option")
        _apply_option(config, name, optarg, loc)
    return config


def _era_has_option(era: str, name: str) -> bool:
    from monitor.eras import ERAS

    return ERAS[era].has_option(name)


def _find_era(argv: list[str]) -> str:
    from monitor.eras import DEFAULT_ERA, UnknownEraError, era_from_env, era_lookup

    era: Optional[str] = None
    for i, arg in enumerate(argv[:-1]):
        if arg in ("-x-era", "--x-era"):
            era = argv[i + 1]
            try:
                era_lookup(era)
            except UnknownEraError as e:
                raise VlError(f"{arg} {era}", str(e)) from None
    if era is not None:
        return era
    try:
        return era_from_env() or DEFAULT_ERA
    except UnknownEraError as e:
        raise VlError("QEMU_MONITOR_EMU_ERA", str(e)) from None


def _apply_option(config: VlConfig, name: str, optarg: Optional[str], loc: str) -> None:
    if name in ("h", "help"):
        sys.stdout.write(USAGE)
        raise VlExit(0)
    if name == "version":
        from monitor.eras import ERAS

        sys.stdout.write(
            "QEMU emulator version {}.{}.{} (qemu-monitor-emu)\n".format(*ERAS[config.era].version)
            + "Copyright (c) 2003-2022 Fabrice Bellard and the QEMU Project developers\n"
        )
        raise VlExit(0)
    if name == "nodefaults":
        config.nodefaults = True
    elif name == "S":
        config.autostart = False
    elif name == "preconfig":
        config.preconfig = True
    elif name == "daemonize":
        config.daemonize = True
    else:
        assert optarg is not None
        _apply_option_arg(config, name, optarg, loc)


def _apply_option_arg(config: VlConfig, name: str, optarg: str, loc: str) -> None:
    if name == "chardev":
        _parse_group(config, config.chardev_opts, optarg, loc)
    elif name == "mon":
        _parse_group(config, config.mon_opts, optarg, loc)
    elif name == "object":
        config.objects.append((loc, optarg))
    elif name in ("qmp", "qmp-pretty"):
        monitor_parse(config, optarg, "control", name == "qmp-pretty", loc)
    elif name == "monitor":
        monitor_parse(config, optarg, "readline", False, loc)
    elif name in ("machine", "M"):
        _check_machine(optarg, loc)
    elif name == "smp":
        config.smp_cpus = smp_parse(optarg, loc)
    elif name == "accel":
        # the guest model is loaded only when asked for
        from system.accel_model import guest_model_from_opts, qemu_accel_opts

        opts = _parse_group(config, qemu_accel_opts(), optarg, loc)
        try:
            config.guest_model = guest_model_from_opts(opts)
        except ValueError as e:
            raise VlError(loc, str(e)) from None
    elif name == "display":
        if optarg.split(",", 1)[0] != "none":
            raise VlError("", f"Display '{optarg.split(',', 1)[0]}' is not available.")
    elif name == "name":
        config.name = optarg.split(",", 1)[0].removeprefix("guest=")
    elif name == "pidfile":
        config.pidfile = optarg
    elif name == "trace":
        config.traces.append((loc, optarg))
    # x-era: taken by the first pass (_find_era)


# ---------------------------------------------------------------- qemu_init


def add_default_monitors(config: VlConfig) -> None:
    """Without -nodefaults or monitor options: HMP on stdio, QMP on a socket.

    ``tempfile`` (slow to import) is loaded only when this socket is made.
    """
    if config.nodefaults or config.mon_opts.head:
        return
    import tempfile

    path = os.path.join(tempfile.mkdtemp(prefix="qemu-monitor-emu-"), "qmp.sock")
    config.default_qmp_path = path
    monitor_parse(config, "stdio", "readline", False, "-monitor stdio")
    monitor_parse(config, f"unix:{path},server=on,wait=off", "control", False, "-qmp")


def configure_traces(config: VlConfig) -> None:
    """-trace enable=PATTERN,events=FILE,file=FILE.

    The backend follows the file name: ``.json`` Chrome/Perfetto JSON,
    ``.jsonl`` the record file, anything else the log backend
    (util/trace_output.py's trace_init_output, imported only here: a run
    without -trace never loads the file backends).
    """
    if not config.traces:
        return
    from util.trace_output import trace_init_output

    lst = qemu_trace_opts()
    for loc, optarg in config.traces:
        opts = _parse_group(config, lst, optarg, loc)
        patterns = []
        if qemu_opt_get(opts, "enable"):
            patterns.append(qemu_opt_get(opts, "enable") or "")
        events = qemu_opt_get(opts, "events")
        if events:
            with open(events, encoding="utf-8") as f:
                patterns += [ln.strip() for ln in f if ln.strip() and not ln.startswith("#")]
        for pattern in patterns:
            if not trace_enable_events(pattern) and "*" not in pattern:
                warn_report(f"{loc}: trace event '{pattern.lstrip('-')}' does not exist")
        try:
            trace_init_output(qemu_opt_get(opts, "file"))
        except OSError as e:
            raise VlError(loc, f"cannot open trace file: {e.strerror}") from None
    if not trace_list_events():
        raise VlError("-trace", "no trace events are declared")


def qemu_init(config: VlConfig) -> None:
    """Everything before the main loop, in vl.c's order."""
    configure_traces(config)
    era_select(config.era)
    _check_smp(config)
    qemu_init_main_loop()
    state = rs.runstate_init(config.autostart)
    machine_init(config.name)
    if config.guest_model is not None:
        _init_guest_model(state, config.guest_model, config.smp_cpus)
    g = monitor_init_globals(qapi_schema(), lambda: rs.phase_check(rs.MachinePhase.MACHINE_READY))
    g.runstate_is_running = rs.runstate_is_running
    qmp_init_commands(g)
    qemu_chr_state().monitor_init_hmp = _mux_monitor_init_hmp
    add_default_monitors(config)
    # muxes hold OPENED back until every frontend on them exists, as vl.c does
    suspend_mux_open()
    _create_chardevs(config)
    _create_objects(config)
    _create_monitors(config)
    resume_mux_open()
    if config.default_qmp_path:
        error_report(f"QMP monitor listening on unix:{config.default_qmp_path}")
    rs.phase_advance(rs.MachinePhase.MACHINE_CREATED)
    rs.phase_advance(rs.MachinePhase.ACCEL_CREATED)
    if not config.preconfig:
        rs.qemu_machine_creation_done()
    assert state is rs.runstate()


def _init_guest_model(state: rs.RunStateGlobals, model: GuestModel, ncpus: int) -> None:
    """-accel x-model: vCPUs at board init, and the run-state handshakes."""
    from system.accel_model import x_model_init_vcpus
    from system.cpus import pause_all_vcpus, resume_all_vcpus

    state.board_init = lambda: x_model_init_vcpus(model, ncpus)
    state.pause_all_vcpus = pause_all_vcpus
    state.resume_all_vcpus = resume_all_vcpus


def _mux_monitor_init_hmp(chr: Chardev) -> object:
    """``mon:`` on a mux: an HMP monitor, imported only when one is made."""
    from monitor.hmp import monitor_init_hmp

    return monitor_init_hmp(chr, True)


def _create_chardevs(config: VlConfig) -> None:
    for opts in list(config.chardev_opts.head):
        try:
            qemu_chr_new_from_opts(opts)
        except QapiError as e:
            raise VlError(config.locations.get(id(opts), ""), e.desc) from None


def _create_objects(config: VlConfig) -> None:
    """-object, after the chardevs the monitor objects need."""
    from qom.object_interfaces import user_creatable_process_cmdline

    for loc, optarg in config.objects:
        try:
            user_creatable_process_cmdline(optarg)
        except QapiError as e:
            raise VlError(loc, e.desc) from None


def mon_option_deprecation_warning(loc: str) -> None:
    """QEMU 11.1 deprecates -mon in favour of -object monitor-qmp/monitor-hmp.

    Not called by default (the emulator's default is 7.2, which does not
    warn); the ``-x-era current`` work calls it for each -mon.  The text is
    the emulator's own: 11.1's exact wording was not available.
    """
    warn_report(f"{loc}: -mon is deprecated, use -object monitor-qmp or -object monitor-hmp")


def _create_monitors(config: VlConfig) -> None:
    for opts in list(config.mon_opts.head):
        try:
            monitor_init_opts(opts)
        except QapiError as e:
            raise VlError(config.locations.get(id(opts), ""), e.desc) from None


def qemu_main_loop() -> None:
    """Run until a shutdown request is acted on (main_loop_should_exit)."""
    while not rs.main_loop_should_exit():
        main_loop_wait(False)


def qemu_cleanup(config: VlConfig) -> None:
    """Stop the VM, the monitors, the chardevs, the main loop (runstate.c)."""
    if rs.runstate_is_running():
        rs.runstate_set(rs.RunState.SHUTDOWN)
    if config.guest_model is not None:
        from system.cpus import cpus_cleanup

        cpus_cleanup()  # vm_shutdown's pause, then the threads are joined
    monitor_cleanup()
    qemu_chr_cleanup()
    # the call_rcu thread exists only once something used RCU
    rcu = sys.modules.get("util.rcu")
    if rcu is not None:
        rcu.rcu_cleanup()
    qemu_main_loop_cleanup()
    if config.traces:
        from util.trace_output import trace_output_close

        trace_output_close()  # every thread has stopped: the Chrome JSON is complete
    if config.default_qmp_path:
        try:
            os.rmdir(os.path.dirname(config.default_qmp_path))
        except OSError:
            pass
