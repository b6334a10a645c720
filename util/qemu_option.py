"""QemuOpts: QEMU's ``key=value,...`` option syntax (util/qemu-option.c).

Used by the command line (``-chardev``, ``-mon``, ``-qmp``...) and by the
chardev compatibility syntax (``unix:PATH,server=on``).  Runs in the main
thread while the command line is processed; nothing here is shared between
threads.

The rules follow QEMU 7.2:

* ``,,`` stands for a literal comma inside a value;
* the first element may omit its name when the list has an *implied* option
  (``-chardev socket,...`` means ``backend=socket``);
* a bare ``name`` means ``name=on`` and ``noname`` means ``name=off`` (a
  deprecated short form that prints a warning); ``help`` or ``?`` asks for the
  option list;
* ``id=`` is taken out before the other options are checked, must be an
  identifier, and may appear only once per list;
* booleans accept on/yes/true/y and off/no/false/n; numbers are parsed as C's
  ``strtoull`` with base 0; sizes take an optional fraction and a suffix.

An option list (:class:`QemuOptsList`) is the description *and* the set of
option groups created from it, as in QEMU; the caller owns it (``system/``
keeps its lists in its own state), so a test builds fresh ones.  Errors are
raised as :class:`QemuOptsError` carrying QEMU's message and hint.
"""

from __future__ import annotations

import enum
import errno
import math
import re
import sys
from typing import Callable, Optional, Union

from util.error_report import warn_report

_U64_MAX = (1 << 64) - 1


class QemuOptType(enum.Enum):
    """The value types an option can have (QemuOptType), with their help names."""

    QEMU_OPT_STRING = "str"
    QEMU_OPT_BOOL = "bool (on/off)"
    QEMU_OPT_NUMBER = "num"
    QEMU_OPT_SIZE = "size"


QEMU_OPT_STRING = QemuOptType.QEMU_OPT_STRING
QEMU_OPT_BOOL = QemuOptType.QEMU_OPT_BOOL
QEMU_OPT_NUMBER = QemuOptType.QEMU_OPT_NUMBER
QEMU_OPT_SIZE = QemuOptType.QEMU_OPT_SIZE


class QemuOptsError(Exception):
    """A parse error: QEMU's message, plus the hint lines it prints after it."""

    def __init__(self, msg: str, hint: str = "") -> None:
        super().__init__(msg)
        self.msg = msg
        self.hint = hint


class QemuOptsHelpWanted(Exception):
    """The options contained ``help``: the caller prints ``help_text``."""

    def __init__(self, help_text: str) -> None:
        super().__init__(help_text)
        self.help_text = help_text


# Plain classes rather than dataclasses: a dataclass compiles its methods
# when its module is imported (about 0.2 ms each), which every start-up pays.


class QemuOptDesc:
    """One accepted option (QemuOptDesc); constant once built."""

    def __init__(
        self,
        name: str,
        type: QemuOptType,
        help: Optional[str] = None,
        def_value_str: Optional[str] = None,
    ) -> None:
        self.name = name
        self.type = type
        self.help = help
        self.def_value_str = def_value_str


OptValue = Union[str, bool, int]


class QemuOpt:
    """One ``name=value`` element: the text as given and its parsed value."""

    def __init__(self, name: str, str: str, desc: Optional[QemuOptDesc], value: OptValue) -> None:
        self.name = name
        self.str = str
        self.desc = desc
        self.value = value


class QemuOpts:
    """One option group, e.g. the options of one ``-chardev`` (QemuOpts)."""

    def __init__(self, id: Optional[str], opts_list: QemuOptsList) -> None:
        self.id = id
        self.opts_list = opts_list
        self.head: list[QemuOpt] = []


class QemuOptsList:
    """An option list: what it accepts, and the groups created from it."""

    def __init__(
        self,
        name: str,
        desc: tuple[QemuOptDesc, ...] = (),
        implied_opt_name: Optional[str] = None,
        merge_lists: bool = False,
    ) -> None:
        self.name = name
        self.desc = desc
        self.implied_opt_name = implied_opt_name
        self.merge_lists = merge_lists
        self.head: list[QemuOpts] = []


Warn = Callable[[str, str], None]


def _print_warning(msg: str, hint: str) -> None:
    """Default warning sink: QEMU's warn_report() and the hint line after it."""
    warn_report(msg)
    sys.stderr.write(hint)
    sys.stderr.flush()


def is_help_option(s: str) -> bool:
    return s in ("help", "?")


_ID_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-")


def id_wellformed(ident: str) -> bool:
    """Letters, digits, '-', '.', '_', starting with a letter (util/id.c).

    A set test, not a regular expression: every -chardev/-mon id= is checked
    at start-up, and compiling a pattern there costs more than the check.
    """
    return ident[:1].isascii() and ident[:1].isalpha() and _ID_CHARS.issuperset(ident)


# ---------------------------------------------------------------- values


def _c_isspace(ch: str) -> bool:
    return ch in " \t\n\v\f\r"


def _strtou64_prefix(text: str, base: int) -> tuple[int, int, bool]:
    """C's ``strtoull``: (value, characters used, overflowed).

    ``used`` is 0 when no digits were found.  A leading ``-`` negates modulo
    2**64, as C does.
    """
    i = 0
    while i < len(text) and _c_isspace(text[i]):
        i += 1
    neg = i < len(text) and text[i] == "-"
    if i < len(text) and text[i] in "+-":
        i += 1
    if base == 0:
        if text[i : i + 2].lower() == "0x" and _is_digit(text[i + 2 : i + 3], 16):
            base, i = 16, i + 2
        elif text[i : i + 1] == "0":
            base = 8
        else:
            base = 10
    elif base == 16 and text[i : i + 2].lower() == "0x" and _is_digit(text[i + 2 : i + 3], 16):
        i += 2
    start = i
    while i < len(text) and _is_digit(text[i], base):
        i += 1
    if i == start:
        return 0, 0, False
    value = int(text[start:i], base)
    if value > _U64_MAX:
        return _U64_MAX, i, True
    return ((-value) & _U64_MAX if neg else value), i, False


def _is_digit(ch: str, base: int) -> bool:
    return len(ch) == 1 and ch.isascii() and ch.isalnum() and int(ch, 36) < base


def parse_option_number(name: str, value: str) -> int:
    """A QEMU_OPT_NUMBER value (qemu_strtou64 with base 0)."""
    number, used, overflow = _strtou64_prefix(value, 0)
    if overflow and used == len(value):
        raise QemuOptsError(f"Value '{value}' is too large for parameter '{name}'")
    if used == 0 or used != len(value):
        raise QemuOptsError(f"Parameter '{name}' expects a number")
    return number


_SIZE_SUFFIX = {"b": 0, "k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
_SIZE_HINT = (
    "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
    "and exabytes, respectively.\n"
)
# What C's strtod() consumes after the integral part: a fraction, maybe an
# exponent.  Compiled (and cached by re) on first use: sizes are rare.
_FRACTION = r"\.([0-9]*)((?:[eE][+-]?[0-9]+)?)"


def _do_strtosz(text: str) -> tuple[int, int, int]:
    """QEMU 7.2's ``do_strtosz``: (errno or 0, end position, value)."""
    val, end, overflow = _strtou64_prefix(text, 10)
    if end == 0:
        return errno.EINVAL, 0, 0
    if overflow:
        return errno.ERANGE, end, 0
    if "-" in text[:end]:
        return errno.EINVAL, 0, 0
    valf = 0
    hexadecimal = val == 0 and text[end : end + 1] in ("x", "X")
    if hexadecimal:
        val, end, overflow = _strtou64_prefix(text, 16)
        if overflow:
            return errno.ERANGE, end, 0
        if text[end : end + 1] == ".":
            return errno.EINVAL, 0, 0
    elif text[end : end + 1] == ".":
        frac = re.compile(_FRACTION).match(text, end)
        assert frac is not None
        if not frac.group(1):
            end += 1  # strtod found no digits: skip the dot, as QEMU does ("1.k")
        elif frac.group(2):
            return errno.EINVAL, 0, 0
        else:
            valf = int(math.ldexp(float("0." + frac.group(1)), 64))
            end = frac.end()
    shift = _SIZE_SUFFIX.get(text[end : end + 1].lower()) if end < len(text) else None
    if shift is not None:
        if hexadecimal:
            warn_report(f"Using a multiplier suffix on hex numbers is deprecated: {text}")
        end += 1
    mul = 1 << (10 * (shift or 0))
    if mul == 1:
        return (errno.EINVAL, 0, 0) if valf else (0, end, val)
    total = val * mul + ((valf * mul) >> 64) + (((valf * mul) >> 63) & 1)
    if total > _U64_MAX:
        return errno.ERANGE, end, 0
    return 0, end, total


def qemu_strtosz(text: str) -> int:
    """Parse a byte size as QEMU 7.2's ``qemu_strtosz`` (unit 1024, default B).

    Raises ValueError for malformed text and OverflowError past 2**64 - 1.
    """
    err, end, value = _do_strtosz(text)
    if end < len(text):
        err = errno.EINVAL
    if err == errno.ERANGE:
        raise OverflowError(text)
    if err:
        raise ValueError(text)
    return value


def parse_option_size(name: str, value: str) -> int:
    """A QEMU_OPT_SIZE value, with QEMU's error texts."""
    try:
        return qemu_strtosz(value)
    except OverflowError:
        raise QemuOptsError(f"Value '{value}' is out of range for parameter '{name}'") from None
    except ValueError:
        raise QemuOptsError(
            f"Parameter '{name}' expects a non-negative number below 2^64", _SIZE_HINT
        ) from None


def parse_option_bool(name: str, value: str) -> bool:
    """A QEMU_OPT_BOOL value (qapi_bool_parse)."""
    if value in ("on", "yes", "true", "y"):
        return True
    if value in ("off", "no", "false", "n"):
        return False
    raise QemuOptsError(f"Parameter '{name}' expects 'on' or 'off'")


def _qemu_opt_parse(desc: Optional[QemuOptDesc], name: str, text: str) -> OptValue:
    if desc is None or desc.type is QEMU_OPT_STRING:
        return text
    if desc.type is QEMU_OPT_BOOL:
        return parse_option_bool(name, text)
    if desc.type is QEMU_OPT_NUMBER:
        return parse_option_number(name, text)
    return parse_option_size(name, text)


# ---------------------------------------------------------------- lookup


def opts_accepts_any(lst: QemuOptsList) -> bool:
    """A list without descriptions takes any option as a string."""
    return not lst.desc


def find_desc_by_name(lst: QemuOptsList, name: str) -> Optional[QemuOptDesc]:
    return next((d for d in lst.desc if d.name == name), None)


def qemu_opt_find(opts: QemuOpts, name: str) -> Optional[QemuOpt]:
    """The last ``name`` given: later options override earlier ones."""
    for opt in reversed(opts.head):
        if opt.name == name:
            return opt
    return None


def qemu_opt_get(opts: QemuOpts, name: str) -> Optional[str]:
    """The text of option ``name``, or its default text, or None."""
    opt = qemu_opt_find(opts, name)
    if opt is not None:
        return opt.str
    desc = find_desc_by_name(opts.opts_list, name)
    return desc.def_value_str if desc is not None else None


def _typed(opts: QemuOpts, name: str, typ: QemuOptType) -> Optional[OptValue]:
    opt = qemu_opt_find(opts, name)
    if opt is not None:
        assert opt.desc is not None and opt.desc.type is typ, f"{name} is not {typ}"
        return opt.value
    desc = find_desc_by_name(opts.opts_list, name)
    if desc is not None and desc.def_value_str is not None:
        return _qemu_opt_parse(desc, name, desc.def_value_str)
    return None


def qemu_opt_get_bool(opts: QemuOpts, name: str, defval: bool) -> bool:
    value = _typed(opts, name, QEMU_OPT_BOOL)
    return defval if value is None else bool(value)


def qemu_opt_get_number(opts: QemuOpts, name: str, defval: int) -> int:
    value = _typed(opts, name, QEMU_OPT_NUMBER)
    return defval if value is None else int(value)


def qemu_opt_get_size(opts: QemuOpts, name: str, defval: int) -> int:
    value = _typed(opts, name, QEMU_OPT_SIZE)
    return defval if value is None else int(value)


def qemu_opts_id(opts: QemuOpts) -> Optional[str]:
    return opts.id


def qemu_opts_find(lst: QemuOptsList, ident: Optional[str]) -> Optional[QemuOpts]:
    return next((o for o in lst.head if o.id == ident), None)


# ---------------------------------------------------------------- building


def qemu_opts_create(lst: QemuOptsList, ident: Optional[str], fail_if_exists: bool) -> QemuOpts:
    """Start a new option group named ``ident`` in ``lst``."""
    if lst.merge_lists:
        if ident is not None:
            raise QemuOptsError("Invalid parameter 'id'")
        merged = qemu_opts_find(lst, None)
        if merged is not None:
            return merged
    elif ident is not None:
        assert fail_if_exists
        if not id_wellformed(ident):
            raise QemuOptsError(
                "Parameter 'id' expects an identifier",
                "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n",
            )
        if qemu_opts_find(lst, ident) is not None:
            raise QemuOptsError(f"Duplicate ID '{ident}' for {lst.name}")
    opts = QemuOpts(ident, lst)
    lst.head.append(opts)
    return opts


def qemu_opts_del(opts: QemuOpts) -> None:
    if opts in opts.opts_list.head:
        opts.opts_list.head.remove(opts)


def qemu_opt_set(opts: QemuOpts, name: str, value: str) -> None:
    """Append ``name=value`` after checking it against the list."""
    desc = find_desc_by_name(opts.opts_list, name)
    if desc is None and not opts_accepts_any(opts.opts_list):
        raise QemuOptsError(f"Invalid parameter '{name}'")
    opts.head.append(QemuOpt(name, value, desc, _qemu_opt_parse(desc, name, value)))


def qemu_opts_print_help(lst: QemuOptsList) -> str:
    """The text ``-chardev help``-style requests print (qemu_opts_print_help)."""
    lines = []
    for desc in lst.desc:
        line = f"  {desc.name}=<{desc.type.value}>"
        if desc.help:
            line = f"{line:<24} - {desc.help}"
        lines.append(line)
    lines.sort()
    if not lines:
        return f"There are no options for {lst.name}.\n"
    return f"{lst.name} options:\n" + "".join(line + "\n" for line in lines)


# ---------------------------------------------------------------- parsing


def _get_opt_value(params: str, pos: int) -> tuple[str, int]:
    """Read a value up to a single comma; ``,,`` is a literal comma."""
    out = []
    while pos < len(params):
        if params[pos] == ",":
            if params[pos + 1 : pos + 2] != ",":
                break
            pos += 1
        out.append(params[pos])
        pos += 1
    return "".join(out), pos


def _get_opt_name_value(
    params: str, pos: int, firstname: Optional[str], warn: Optional[Warn]
) -> tuple[str, str, int, bool]:
    """One element at ``pos``: (name, value, next position, is a help request)."""
    end = pos
    while end < len(params) and params[end] not in "=,":
        end += 1
    is_help = False
    if end < len(params) and params[end] == "=":
        name = params[pos:end]
        value, pos = _get_opt_value(params, end + 1)
    elif firstname is not None:
        name = firstname
        value, pos = _get_opt_value(params, pos)
    else:
        name, pos = params[pos:end], end
        prefix = ""
        if name.startswith("no"):
            name, value, prefix = name[2:], "off", "no"
        else:
            value = "on"
            is_help = is_help_option(name)
        if not is_help and warn is not None:
            _warn_short_form(warn, prefix, name, value)
    if pos < len(params):
        pos += 1  # the comma
    return name, value, pos, is_help


def _warn_short_form(warn: Warn, prefix: str, name: str, value: str) -> None:
    msg = f"short-form boolean option '{prefix}{name}' deprecated"
    if name == "delay":
        hint = f"Please use nodelay={'on' if prefix else 'off'} instead\n"
    else:
        hint = f"Please use {name}={value} instead\n"
    warn(msg, hint)


def _opts_parse_id(params: str) -> Optional[str]:
    """The first ``id=`` of ``params``, found before anything is validated."""
    pos = 0
    while pos < len(params):
        name, value, pos, _ = _get_opt_name_value(params, pos, None, None)
        if name == "id":
            return value
    return None


def _opts_do_parse(
    opts: QemuOpts,
    params: str,
    firstname: Optional[str],
    warn: Optional[Warn],
    want_help: bool,
) -> None:
    pos = 0
    while pos < len(params):
        name, value, pos, is_help = _get_opt_name_value(params, pos, firstname, warn)
        firstname = None
        if is_help and want_help:
            raise QemuOptsHelpWanted(qemu_opts_print_help(opts.opts_list))
        if name != "id":
            qemu_opt_set(opts, name, value)


def qemu_opts_do_parse(opts: QemuOpts, params: str, firstname: Optional[str]) -> None:
    """Add ``params`` to an existing group, without short-form warnings."""
    _opts_do_parse(opts, params, firstname, None, False)


def qemu_opts_parse(
    lst: QemuOptsList,
    params: str,
    permit_abbrev: bool,
    warn: Optional[Warn] = _print_warning,
) -> QemuOpts:
    """Parse a command-line argument into a new group of ``lst``.

    Mirrors ``qemu_opts_parse_noisily``: short-form booleans are reported
    through ``warn`` (message, hint), errors raise :class:`QemuOptsError`,
    and ``help`` raises :class:`QemuOptsHelpWanted`.  Nothing is added to
    ``lst`` on failure.
    """
    assert not permit_abbrev or lst.implied_opt_name
    firstname = lst.implied_opt_name if permit_abbrev else None
    opts = qemu_opts_create(lst, _opts_parse_id(params), not lst.merge_lists)
    try:
        _opts_do_parse(opts, params, firstname, warn, not opts_accepts_any(lst))
    except (QemuOptsError, QemuOptsHelpWanted):
        qemu_opts_del(opts)
        raise
    return opts
