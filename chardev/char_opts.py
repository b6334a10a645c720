"""-chardev options and the legacy chardev syntax (the option half of chardev/char.c).

Why apart from chardev/char.py: QEMU keeps ``qemu_chr_new_from_opts``, the
``qemu_chardev_opts`` list and ``qemu_chr_parse_compat`` in char.c next to
the Chardev base class; here they are split along that seam so that the
base class and its registry read on their own.  Everything here turns text
(``-chardev``, ``-serial``/``-qmp``/``-monitor`` legacy strings, HMP
``chardev-add``) into a QAPI ChardevBackend dict and hands it to
:func:`chardev.char.qemu_chardev_new`.

Runs in the main loop thread with the BQL (command line, HMP, QMP).
"""

from __future__ import annotations

import sys
from typing import Any, Optional

from chardev.char import (
    Chardev,
    char_get_class,
    qemu_chardev_new,
    qemu_chr_delete,
    qemu_chr_find,
    qemu_chr_help_text,
    qemu_chr_state,
)
from qapi.error import QapiError, error_setg
from util.aio import AioContext
from util.qemu_option import (
    QEMU_OPT_BOOL,
    QEMU_OPT_NUMBER,
    QEMU_OPT_SIZE,
    QEMU_OPT_STRING,
    QemuOptDesc,
    QemuOpts,
    QemuOptsError,
    QemuOptsList,
    is_help_option,
    qemu_opt_get,
    qemu_opt_get_bool,
    qemu_opt_set,
    qemu_opts_create,
    qemu_opts_del,
    qemu_opts_do_parse,
    qemu_opts_id,
)


def _opt(name: str, typ: Any, default: Optional[str] = None) -> QemuOptDesc:
    return QemuOptDesc(name, typ, def_value_str=default)


#: The options -chardev accepts in QEMU 7.2 (qemu_chardev_opts).
QEMU_CHARDEV_OPT_DESC = (
    _opt("backend", QEMU_OPT_STRING), _opt("path", QEMU_OPT_STRING),
    _opt("host", QEMU_OPT_STRING), _opt("port", QEMU_OPT_STRING),
    _opt("fd", QEMU_OPT_STRING), _opt("localaddr", QEMU_OPT_STRING),
    _opt("localport", QEMU_OPT_STRING), _opt("to", QEMU_OPT_NUMBER),
    _opt("ipv4", QEMU_OPT_BOOL), _opt("ipv6", QEMU_OPT_BOOL),
    _opt("wait", QEMU_OPT_BOOL), _opt("server", QEMU_OPT_BOOL),
    _opt("delay", QEMU_OPT_BOOL), _opt("nodelay", QEMU_OPT_BOOL),
    _opt("reconnect", QEMU_OPT_NUMBER), _opt("telnet", QEMU_OPT_BOOL),
    _opt("tn3270", QEMU_OPT_BOOL), _opt("tls-creds", QEMU_OPT_STRING),
    _opt("tls-authz", QEMU_OPT_STRING), _opt("websocket", QEMU_OPT_BOOL),
    _opt("width", QEMU_OPT_NUMBER), _opt("height", QEMU_OPT_NUMBER),
    _opt("cols", QEMU_OPT_NUMBER), _opt("rows", QEMU_OPT_NUMBER),
    _opt("mux", QEMU_OPT_BOOL), _opt("signal", QEMU_OPT_BOOL),
    _opt("name", QEMU_OPT_STRING), _opt("debug", QEMU_OPT_NUMBER),
    _opt("size", QEMU_OPT_SIZE), _opt("chardev", QEMU_OPT_STRING),
    _opt("append", QEMU_OPT_BOOL), _opt("logfile", QEMU_OPT_STRING),
    _opt("logappend", QEMU_OPT_BOOL), _opt("mouse", QEMU_OPT_BOOL),
    _opt("clipboard", QEMU_OPT_BOOL), _opt("tight", QEMU_OPT_BOOL, "on"),
    _opt("abstract", QEMU_OPT_BOOL),
)  # fmt: skip


def qemu_chardev_opts() -> QemuOptsList:
    """A fresh ``chardev`` option list (its groups are the -chardev options)."""
    return QemuOptsList("chardev", QEMU_CHARDEV_OPT_DESC, implied_opt_name="backend")


def qemu_chr_parse_common(opts: QemuOpts, data: dict[str, Any]) -> None:
    """Options every backend takes: logfile and logappend."""
    logfile = qemu_opt_get(opts, "logfile")
    if logfile is not None:
        data["logfile"] = logfile
    data["logappend"] = qemu_opt_get_bool(opts, "logappend", False)


def _parse_opts(opts: QemuOpts) -> tuple[type[Chardev], dict[str, Any]]:
    name = qemu_opt_get(opts, "backend")
    if name is None:
        raise error_setg('chardev: "%s" missing backend', qemu_opts_id(opts))
    cls = char_get_class(name)
    data: dict[str, Any] = {}
    qemu_chr_parse_common(opts, data)
    cls.parse(opts, data)
    return cls, {"type": cls.kind, "data": data}


def qemu_chr_parse_opts(opts: QemuOpts) -> dict[str, Any]:
    """Turn -chardev options into a QAPI ChardevBackend dict."""
    return _parse_opts(opts)[1]


def qemu_chr_new_from_opts(
    opts: QemuOpts, context: Optional[AioContext] = None
) -> Optional[Chardev]:
    """Create the chardev a -chardev option describes; QapiError on failure.

    ``backend=help`` prints the driver list and returns None.  With
    ``mux=on`` the backend is created as ``ID-base`` and a mux named ``ID``
    on top of it.
    """
    name = qemu_opt_get(opts, "backend")
    if name is not None and is_help_option(name):
        sys.stdout.write(qemu_chr_help_text())
        return None
    label = qemu_opts_id(opts)
    if label is None:
        raise error_setg("chardev: no id specified")
    cls, backend = _parse_opts(opts)
    if not qemu_opt_get_bool(opts, "mux", False):
        return qemu_chardev_new(label, cls, backend, context)
    base = qemu_chardev_new(f"{label}-base", cls, backend, context)
    try:
        mux_backend = {"type": "mux", "data": {"chardev": base.label}}
        return qemu_chardev_new(label, char_get_class("mux"), mux_backend, context)
    except QapiError:
        qemu_chr_delete(base)
        raise


# ---------------------------------------------------------------- legacy syntax


def _split_host_port(text: str) -> Optional[tuple[str, str, int]]:
    """``%64[^:]:%32[^,]`` or ``:%32[^,]``: (host, port, characters used)."""
    colon = text.find(":")
    if colon == 0:
        host = ""
    elif 0 < colon <= 64:
        host = text[:colon]
    else:
        return None
    end = colon + 1
    while end < len(text) and text[end] != "," and end - colon - 1 < 32:
        end += 1
    if end == colon + 1:
        return None
    return host, text[colon + 1 : end], end


_SIMPLE_COMPAT = ("null", "pty", "msmouse", "wctablet", "braille", "testdev", "stdio")
_PATH_COMPAT = {"file:": "file", "pipe:": "pipe", "pty:": "pty"}


def qemu_chr_parse_compat(
    opts_list: QemuOptsList, label: str, filename: str, permit_mux_mon: bool
) -> Optional[QemuOpts]:
    """Turn the legacy ``-serial``/``-qmp`` syntax into -chardev options.

    Raises QapiError for the failures QEMU reports; returns None for the
    ones it does not (the caller then prints ``parse error: FILENAME``).
    """
    try:
        opts = qemu_opts_create(opts_list, label, True)
    except QemuOptsError as e:
        raise error_setg("%s", e.msg) from None
    try:
        if _parse_compat_into(opts, filename, permit_mux_mon):
            return opts
    except QemuOptsError as e:
        qemu_opts_del(opts)
        raise error_setg("%s", e.msg) from None
    except QapiError:
        qemu_opts_del(opts)
        raise
    qemu_opts_del(opts)
    return None


def _parse_compat_into(opts: QemuOpts, filename: str, permit_mux_mon: bool) -> bool:
    if filename.startswith("mon:"):
        if not permit_mux_mon:
            raise error_setg("mon: isn't supported in this context")
        filename = filename[4:]
        qemu_opt_set(opts, "mux", "on")
        if filename == "stdio":
            qemu_opt_set(opts, "signal", "off")
    if filename in _SIMPLE_COMPAT:
        qemu_opt_set(opts, "backend", filename)
        return True
    for prefix, driver in _PATH_COMPAT.items():
        if filename.startswith(prefix):
            qemu_opt_set(opts, "backend", driver)
            qemu_opt_set(opts, "path", filename[len(prefix) :])
            return True
    for prefix in ("tcp:", "telnet:", "tn3270:", "websocket:"):
        if filename.startswith(prefix):
            return _parse_compat_tcp(opts, prefix, filename[len(prefix) :])
    if filename.startswith("unix:"):
        qemu_opt_set(opts, "backend", "socket")
        qemu_opts_do_parse(opts, filename[5:], "path")
        return True
    raise error_setg("'%s' is not a valid char driver", filename)


def _parse_compat_tcp(opts: QemuOpts, prefix: str, rest: str) -> bool:
    parsed = _split_host_port(rest)
    if parsed is None:
        return False
    host, port, pos = parsed
    qemu_opt_set(opts, "backend", "socket")
    qemu_opt_set(opts, "host", host)
    qemu_opt_set(opts, "port", port)
    if rest[pos : pos + 1] == ",":
        qemu_opts_do_parse(opts, rest[pos + 1 :], None)
    if prefix != "tcp:":
        qemu_opt_set(opts, prefix[:-1], "on")
    return True


def qemu_chr_new(
    label: str,
    filename: str,
    context: Optional[AioContext] = None,
    permit_mux_mon: bool = False,
    opts_list: Optional[QemuOptsList] = None,
) -> Optional[Chardev]:
    """Create a chardev from the legacy syntax (qemu_chr_new, _mux_mon).

    ``chardev:NAME`` returns the existing chardev NAME (None if absent).  A
    ``mon:`` prefix (only with ``permit_mux_mon``) creates a mux and attaches
    an HMP monitor to it through ``monitor_init_hmp`` of the state.  Errors
    raise QapiError; None without an error means QEMU's silent parse failure.
    """
    if filename.startswith("chardev:"):
        return qemu_chr_find(filename[len("chardev:") :])
    lst = opts_list if opts_list is not None else qemu_chardev_opts()
    opts = qemu_chr_parse_compat(lst, label, filename, permit_mux_mon)
    if opts is None:
        return None
    try:
        chr = qemu_chr_new_from_opts(opts, context)
        if chr is not None and qemu_opt_get_bool(opts, "mux", False):
            _attach_mux_monitor(chr)
        return chr
    finally:
        qemu_opts_del(opts)


def _attach_mux_monitor(chr: Chardev) -> None:
    hook = qemu_chr_state().monitor_init_hmp
    assert hook is not None, "mon: needs ChardevState.monitor_init_hmp"
    try:
        hook(chr)
    except QapiError:
        qemu_chr_delete(chr)
        raise
