"""Human monitors (monitor/hmp.c); ``human-monitor-command`` runs its
lines through :func:`handle_hmp_command` from monitor/qmp_cmds.py.

Threads: everything here runs in the main loop thread with the BQL.  An
HMP monitor's chardev handlers are installed with no context (the main
loop), never in the monitor I/O thread, and ``human-monitor-command`` runs
from the QMP dispatcher's bottom half in the main loop.

Input: with readline, each byte goes through the line editor, which echoes
it; a complete line suspends the monitor, runs the command and resumes; the
prompt comes back when the monitor accepts input again
(``monitor_accept_input``).  QEMU reads one byte at a time, so the bytes
after a line stay unread until then; ``monitor_read`` gets the same effect
by consuming a chunk only up to the first line end.
"""

from __future__ import annotations

import re
import sys
from typing import Any, Optional

from chardev.char import Chardev
from chardev.char_fe import (
    CHR_EVENT_CLOSED,
    CHR_EVENT_MUX_IN,
    CHR_EVENT_MUX_OUT,
    CHR_EVENT_OPENED,
    qemu_chr_fe_init,
    qemu_chr_fe_set_handlers,
)
from monitor.eras import current_era
from monitor.fds import monitor_fdsets_cleanup
from monitor.hmp_cmds import HMPCommand, hmp_cmds
from monitor.monitor import (
    monitor_can_read,
    monitor_data_init,
    monitor_flush,
    monitor_globals,
    monitor_list_append,
    monitor_printf,
    monitor_register_id,
    monitor_resume,
    monitor_set_cur,
    monitor_suspend,
)
from monitor.monitor_internal import Monitor, MonitorHMP
from monitor.trace import trace_handle_hmp_command
from util.atomic import qatomic_inc, qatomic_read, qatomic_set
from util.coroutine import qemu_coroutine_self
from util.markers import main_loop_only, requires_bql
from util.readline import (
    readline_add_completion,
    readline_handle_bytes,
    readline_init,
    readline_restart,
    readline_set_completion_index,
    readline_show_prompt,
    readline_start,
)

#: at most this many words in a line parsed for help or completion
MAX_ARGS = 16
#: get_str() keeps at most this many characters of a word (buf[1024])
_STR_MAX = 1023
_ISSPACE = frozenset(" \t\n\v\f\r")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+")


def qemu_version_string() -> str:
    major, minor, micro = current_era().version
    return f"{major}.{minor}.{micro}"


# ---------------------------------------------------------------- reading lines


def monitor_command_cb(opaque: MonitorHMP, cmdline: str, readline_opaque: Any) -> None:
    """A line was entered: run it with input suspended.

    Resuming schedules ``monitor_accept_input``, which shows the prompt
    again and lets the chardev deliver the bytes typed meanwhile.
    """
    mon = opaque
    monitor_suspend(mon)
    handle_hmp_command(mon, cmdline)
    monitor_resume(mon)


def monitor_read_command(mon: MonitorHMP, show_prompt: bool) -> None:
    if mon.rs is None:
        return
    readline_start(mon.rs, "(qemu) ", False, monitor_command_cb, None)
    if show_prompt:
        readline_show_prompt(mon.rs)


# ---------------------------------------------------------------- words


def _skip_spaces(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _ISSPACE:
        pos += 1
    return pos


_ESCAPES = {"n": "\n", "r": "\r", "\\": "\\", "'": "'", '"': '"'}


def get_str(text: str, pos: int) -> tuple[Optional[str], int]:
    """Read one word at ``pos``: blank-separated, or in double quotes with
    ``\\n \\r \\\\ \\' \\"`` escapes.  Returns (word, position after it), or
    (None, where it failed).

    QEMU reports a bad quoted word with ``printf``, so on the process's
    standard output, not on the monitor.
    """
    pos = _skip_spaces(text, pos)
    if pos == len(text):
        return None, pos
    chars: list[str] = []
    if text[pos] == '"':
        pos += 1
        while pos < len(text) and text[pos] != '"':
            c = text[pos]
            pos += 1
            if c == "\\":
                c = text[pos] if pos < len(text) else "\0"
                pos += 1
                if c not in _ESCAPES:
                    sys.stdout.write(f"unsupported escape code: '\\{c}'\n")
                    return None, pos
                c = _ESCAPES[c]
            chars.append(c)
        if pos >= len(text):
            sys.stdout.write("unterminated string\n")
            return None, pos
        pos += 1
    else:
        start = pos
        while pos < len(text) and text[pos] not in _ISSPACE:
            pos += 1
        chars.append(text[start:pos])
    return "".join(chars)[:_STR_MAX], pos


def parse_cmdline(cmdline: str) -> Optional[list[str]]:
    """Split a line into words for help and completion (QEMU's rough
    approximation of the real parser); None if a word is malformed or
    there are more than MAX_ARGS."""
    args: list[str] = []
    pos = _skip_spaces(cmdline, 0)
    while pos < len(cmdline):
        if len(args) >= MAX_ARGS:
            return None
        word, pos = get_str(cmdline, pos)
        if word is None:
            return None
        args.append(word)
        pos = _skip_spaces(cmdline, pos)
    return args


def hmp_compare_cmd(name: str, cmd_list: str) -> bool:
    """Is ``name`` one of the ``|``-separated aliases in ``cmd_list``?"""
    return name in cmd_list.split("|")


def cmd_available(cmd: HMPCommand) -> bool:
    """Before the machine is ready (``--preconfig``) only commands flagged
    ``p`` exist, for help and completion as well."""
    env = monitor_globals().dispatch_env
    return (env is None or env.machine_ready()) or "p" in cmd.flags


# ---------------------------------------------------------------- help


def help_cmd_dump_one(mon: Monitor, cmd: HMPCommand, prefix_args: list[str]) -> None:
    if not cmd_available(cmd):
        return
    prefix = "".join(f"{arg} " for arg in prefix_args)
    monitor_printf(mon, f"{prefix}{cmd.name} {cmd.params} -- {cmd.help}\n")


def help_cmd_dump(
    mon: Monitor, cmds: tuple[HMPCommand, ...], args: list[str], arg_index: int
) -> None:
    """Help for ``args[arg_index]`` in ``cmds`` (descending into sub-tables),
    or for every command in ``cmds`` when the words are used up."""
    if arg_index >= len(args):
        for cmd in cmds:
            help_cmd_dump_one(mon, cmd, args[:arg_index])
        return
    for cmd in cmds:
        if hmp_compare_cmd(args[arg_index], cmd.name) and cmd_available(cmd):
            if cmd.sub_table is not None:
                help_cmd_dump(mon, cmd.sub_table, args, arg_index + 1)
            else:
                help_cmd_dump_one(mon, cmd, args[:arg_index])
            return
    monitor_printf(mon, "unknown command: '" + " ".join(args[: arg_index + 1]) + "'\n")


def help_cmd(mon: Monitor, name: Optional[str]) -> None:
    args: list[str] = []
    if name is not None:
        parsed = parse_cmdline(name)
        if parsed is None:
            return
        args = parsed
    help_cmd_dump(mon, hmp_cmds, args, 0)


# ---------------------------------------------------------------- parsing commands


def get_command_name(cmdline: str, pos: int) -> tuple[Optional[str], int]:
    """The command word at ``pos`` (it ends at a blank or ``/``), and the
    position after it; None for a blank line."""
    pos = _skip_spaces(cmdline, pos)
    if pos == len(cmdline):
        return None, pos
    start = pos
    while pos < len(cmdline) and cmdline[pos] != "/" and cmdline[pos] not in _ISSPACE:
        pos += 1
    return cmdline[start:pos], pos


def search_dispatch_table(table: tuple[HMPCommand, ...], cmdname: str) -> Optional[HMPCommand]:
    return next((cmd for cmd in table if hmp_compare_cmd(cmdname, cmd.name)), None)


def monitor_parse_command(
    mon: Monitor, cmdline: str, pos: int, table: tuple[HMPCommand, ...]
) -> tuple[Optional[HMPCommand], int]:
    """Find the command at ``pos``, following sub-tables while words remain.

    Returns the entry and the position of its arguments.  An unknown name
    is reported with the whole line up to the end of that name, leading
    blanks included, as QEMU does.
    """
    cmdname, end = get_command_name(cmdline, pos)
    if cmdname is None:
        return None, pos
    cmd = search_dispatch_table(table, cmdname)
    if cmd is None:
        monitor_printf(mon, f"unknown command: '{cmdline[:end]}'\n")
        return None, pos
    if not cmd_available(cmd):
        monitor_printf(
            mon,
            f"Command '{cmdline[:end]}' not available until machine initialization"
            " has completed.\n",
        )
        return None, pos
    pos = _skip_spaces(cmdline, end)
    if cmd.sub_table is not None and pos < len(cmdline):
        return monitor_parse_command(mon, cmdline, pos, cmd.sub_table)
    return cmd, pos


def _key_get_info(typestr: str, tpos: int) -> tuple[Optional[str], int]:
    """The next ``key:`` of an args_type string, and where its type is."""
    if typestr.startswith(",", tpos):
        tpos += 1
    colon = typestr.find(":", tpos)
    if colon < 0:
        return None, tpos
    return typestr[tpos:colon], colon + 1


_STRING_EXPECTED = {"F": "filename expected", "B": "block device name expected"}


def _expr_unary(text: str, pos: int) -> tuple[int, int]:
    """A number (C's strtoull base 0), a signed term or a parenthesised sum."""
    pos = _skip_spaces(text, pos)
    if pos == len(text):
        raise ValueError("unexpected end of expression")
    c = text[pos]
    if c in "+-":
        val, pos = _expr_unary(text, pos + 1)
        return (-val if c == "-" else val) & (2**64 - 1), pos
    if c == "(":
        val, pos = _expr_sum(text, pos + 1)
        pos = _skip_spaces(text, pos)
        if text[pos : pos + 1] != ")":
            raise ValueError("')' expected")
        return val, pos + 1
    m = _NUMBER.match(text, pos)
    if m is None:
        raise ValueError(f"invalid char '{c}' in expression")
    digits = m.group(0)
    if digits.lower().startswith("0x"):
        return int(digits, 16), m.end()
    return int(digits, 8 if digits.startswith("0") and len(digits) > 1 else 10), m.end()


def _expr_sum(text: str, pos: int) -> tuple[int, int]:
    val, pos = _expr_unary(text, pos)
    while True:
        pos = _skip_spaces(text, pos)
        op = text[pos : pos + 1]
        if op not in ("+", "-") or not op:
            return val, pos
        rhs, pos = _expr_unary(text, pos + 1)
        val = (val + rhs if op == "+" else val - rhs) & (2**64 - 1)


def get_expr(text: str, pos: int) -> tuple[int, int, Optional[str]]:
    """An integer expression at ``pos`` (monitor/hmp.c's get_expr, sums only):
    (value as an unsigned 64-bit number, end, error message or None)."""
    try:
        val, end = _expr_sum(text, pos)
    except ValueError as e:
        return 0, pos, str(e)
    return val, end, None


def monitor_parse_arguments(
    mon: Monitor, cmdline: str, pos: int, cmd: HMPCommand
) -> Optional[dict[str, Any]]:
    """Parse the arguments after the command name by ``cmd.args_type``.

    Types: ``s``/``F``/``B`` one word, ``S`` the rest of the line, ``i`` a
    32-bit integer expression; a
    trailing ``?`` makes the argument optional (absent from the result when
    missing).  Errors are printed and give None.
    """
    typestr = cmd.args_type
    tpos = 0
    qdict: dict[str, Any] = {}
    while True:
        key, tpos = _key_get_info(typestr, tpos)
        if key is None:
            break
        c = typestr[tpos : tpos + 1]
        tpos += 1
        optional = typestr.startswith("?", tpos)
        if optional:
            tpos += 1
        pos = _skip_spaces(cmdline, pos)
        if c in ("s", "F", "B"):
            if optional and pos == len(cmdline):
                continue
            word, pos = get_str(cmdline, pos)
            if word is None:
                expected = _STRING_EXPECTED.get(c, "string expected")
                monitor_printf(mon, f"{cmd.name}: {expected}\n")
                return None
            qdict[key] = word
        elif c == "i":
            if optional and pos == len(cmdline):
                continue
            val, pos, err = get_expr(cmdline, pos)
            if err is None and val >> 32:
                err = f"'{cmd.name}' has failed: integer is for 32-bit values"
            if err is not None:
                monitor_printf(mon, err + "\n")
                return None
            qdict[key] = val
        elif c == "S":
            if optional and pos == len(cmdline):
                continue
            if pos == len(cmdline):
                monitor_printf(mon, f"{cmd.name}: string expected\n")
                return None
            qdict[key] = cmdline[pos:]
            pos = len(cmdline)
        else:
            monitor_printf(mon, f"{cmd.name}: unknown type '{c}'\n")
            return None
    pos = _skip_spaces(cmdline, pos)
    if pos < len(cmdline):
        monitor_printf(mon, f"{cmd.name}: extraneous characters at the end of line\n")
        return None
    return qdict


@requires_bql
def handle_hmp_command(mon: MonitorHMP, cmdline: str) -> None:
    """Parse and run one command line, printing what it prints.

    The monitor is made current for the handler and the previous one put
    back afterwards: under ``human-monitor-command`` that is the QMP
    monitor the request came from.
    """
    trace_handle_hmp_command(mon.name, cmdline)
    cmd, pos = monitor_parse_command(mon, cmdline, 0, hmp_cmds)
    if cmd is None:
        return
    qdict = monitor_parse_arguments(mon, cmdline, pos, cmd)
    if qdict is None:
        while pos > 0 and cmdline[pos - 1] in _ISSPACE:
            pos -= 1
        monitor_printf(mon, f'Try "help {cmdline[:pos]}" for more information\n')
        return
    co = qemu_coroutine_self()
    old_mon = monitor_set_cur(co, mon)
    try:
        cmd.cmd(mon, qdict)
    finally:
        monitor_set_cur(co, old_mon)


# ---------------------------------------------------------------- completion


def _byte_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def cmd_completion(mon: MonitorHMP, name: str, cmd_list: str) -> None:
    assert mon.rs is not None
    for alias in cmd_list.split("|"):
        if alias.startswith(name):
            readline_add_completion(mon.rs, alias)


def monitor_find_completion_by_table(
    mon: MonitorHMP, cmd_table: tuple[HMPCommand, ...], args: list[str]
) -> None:
    """Offer command names for the first word, sub-table names after a
    command that has one, and command names again after ``help``."""
    assert mon.rs is not None
    if len(args) <= 1:
        cmdname = args[0] if args else ""
        readline_set_completion_index(mon.rs, _byte_len(cmdname))
        for cmd in cmd_table:
            if cmd_available(cmd):
                cmd_completion(mon, cmdname, cmd.name)
        return
    found = [c for c in cmd_table if hmp_compare_cmd(args[0], c.name) and cmd_available(c)]
    if not found:
        return
    cmd = found[0]
    if cmd.sub_table is not None:
        monitor_find_completion_by_table(mon, cmd.sub_table, args[1:])
        return
    ptype = _next_arg_type(cmd.args_type)
    for _ in range(len(args) - 2):
        if ptype:
            ptype = _next_arg_type(ptype)
            while ptype.startswith("?"):
                ptype = _next_arg_type(ptype)
    if ptype[:1] in ("s", "S") and cmd.name == "help|?":
        monitor_find_completion_by_table(mon, cmd_table, args[1:])


def _next_arg_type(typestr: str) -> str:
    colon = typestr.find(":")
    return typestr[colon + 1 :] if colon >= 0 else typestr


def monitor_find_completion(opaque: MonitorHMP, cmdline: str) -> None:
    """readline's completion finder: ``cmdline`` is the text before the
    cursor; a trailing blank means the next word is being completed."""
    args = parse_cmdline(cmdline)
    if args is None:
        return
    if cmdline and cmdline[-1] in _ISSPACE:
        if len(args) >= MAX_ARGS:
            return
        args.append("")
    monitor_find_completion_by_table(opaque, hmp_cmds, args)


# ---------------------------------------------------------------- chardev handlers


@main_loop_only
def monitor_read(opaque: MonitorHMP, data: bytes) -> int:
    """Chardev input; returns how many bytes were taken.

    With readline, take bytes up to the first line end only.  The line ran
    with the monitor suspended; resuming scheduled ``monitor_accept_input``,
    which prints the prompt and has the chardev offer the rest.  QEMU reads
    one byte per main loop iteration, and that bottom half runs before the
    next byte, so the next line's echo follows the prompt; after ``quit``
    the monitor stays suspended and the rest is never read.  Without
    readline a whole NUL-terminated command arrives at once.
    """
    mon = opaque
    if mon.rs is not None:
        return readline_handle_bytes(mon.rs, data)
    if not data or data[-1] != 0:
        monitor_printf(mon, "corrupted command\n")
    else:
        line = data[: data.index(0)]
        handle_hmp_command(mon, line.decode("utf-8", "surrogateescape"))
    return len(data)


@main_loop_only
@requires_bql
def monitor_event(opaque: MonitorHMP, event: int) -> None:
    """Chardev events.

    OPENED prints the banner and, unless a mux has the focus elsewhere, a
    fresh prompt.  MUX_OUT/MUX_IN suspend and resume the monitor while
    another frontend of a mux has the focus; ``mux_out`` stops output from
    being flushed meanwhile.  Before the first OPENED they only move the
    suspend count.
    """
    mon = opaque
    g = monitor_globals()
    if event == CHR_EVENT_MUX_IN:
        with mon.mon_lock:
            mon.mux_out = False
        if mon.reset_seen:
            if mon.rs is not None:
                readline_restart(mon.rs)
            monitor_resume(mon)
            monitor_flush(mon)
        else:
            qatomic_set(mon.suspend_cnt, 0)
    elif event == CHR_EVENT_MUX_OUT:
        if mon.reset_seen:
            if qatomic_read(mon.suspend_cnt) == 0:
                monitor_printf(mon, "\n")
            monitor_flush(mon)
            monitor_suspend(mon)
        else:
            qatomic_inc(mon.suspend_cnt)
        with mon.mon_lock:
            mon.mux_out = True
    elif event == CHR_EVENT_OPENED:
        monitor_printf(
            mon, f"QEMU {qemu_version_string()} monitor - type 'help' for more information\n"
        )
        if not mon.mux_out and mon.rs is not None:
            readline_restart(mon.rs)
            readline_show_prompt(mon.rs)
        mon.reset_seen = True
        with g.mon_fdsets_lock:
            g.mon_refcount += 1
    elif event == CHR_EVENT_CLOSED:
        with g.mon_fdsets_lock:
            g.mon_refcount -= 1
        monitor_fdsets_cleanup()


def monitor_readline_printf(opaque: MonitorHMP, text: str) -> None:
    monitor_printf(opaque, text)


def monitor_readline_flush(opaque: MonitorHMP) -> None:
    monitor_flush(opaque)


@main_loop_only
def monitor_init_hmp(chr: Chardev, use_readline: bool, mon_id: Optional[str] = None) -> MonitorHMP:
    """Create a human monitor on ``chr``, served by the main loop.

    Raises the chardev's error when it already has a frontend.
    """
    mon = MonitorHMP(use_readline)
    mon.id = mon_id
    monitor_hmp_setup(mon, chr)
    return mon


def monitor_hmp_setup(mon: MonitorHMP, chr: Chardev) -> None:
    """Attach ``mon`` to ``chr`` and serve it from the main loop (-mon and
    the monitor-hmp object alike)."""
    use_readline = mon.use_readline
    qemu_chr_fe_init(mon.chr, chr)
    mon.label_locks()
    monitor_register_id(mon)
    monitor_data_init(mon)
    if use_readline:
        mon.rs = readline_init(
            monitor_readline_printf, monitor_readline_flush, mon, monitor_find_completion
        )
        monitor_read_command(mon, False)
    qemu_chr_fe_set_handlers(
        mon.chr, monitor_can_read, monitor_read, monitor_event, None, mon, None, True
    )
    monitor_list_append(mon)
