"""-chardev socket options and their checks (qemu_chr_parse_socket and
qmp_chardev_validate_socket of chardev/char-socket.c).

Why apart from the backend: the option syntax (path/host/port/fd, the
server, wait, telnet, reconnect and address flags) and its QEMU 7.2
defaults are text processing that runs once, at creation, while
chardev/char_socket.py is the connection state machine.

Runs in the main loop thread with the BQL.
"""

from __future__ import annotations

from typing import Any

from qapi.error import error_setg
from util.qemu_option import (
    QemuOpts,
    qemu_opt_find,
    qemu_opt_get,
    qemu_opt_get_bool,
    qemu_opt_get_number,
)


def qemu_chr_parse_socket(opts: QemuOpts, data: dict[str, Any]) -> None:
    """Fill a ChardevSocket dict from -chardev socket options."""
    path, host = qemu_opt_get(opts, "path"), qemu_opt_get(opts, "host")
    port, fd = qemu_opt_get(opts, "port"), qemu_opt_get(opts, "fd")
    if (path is not None) + (fd is not None) + (host is not None) > 1:
        raise error_setg("None or one of 'path', 'fd' or 'host' option required.")
    if host is not None and port is None:
        raise error_setg("chardev: socket: no port given")
    if path is None and host is None:
        raise error_setg("Unable to parse FD number %s", fd or "")
    _parse_flags(opts, data)
    if path is not None:
        data["addr"] = {"type": "unix", "data": _parse_unix(opts, path)}
    else:
        assert host is not None and port is not None
        data["addr"] = {"type": "inet", "data": _parse_inet(opts, host, port)}


def _parse_flags(opts: QemuOpts, data: dict[str, Any]) -> None:
    """The command-line flags of qemu_chr_parse_socket (QEMU 7.2 defaults)."""
    if qemu_opt_get(opts, "delay") is not None and qemu_opt_get(opts, "nodelay") is not None:
        raise error_setg("'delay' and 'nodelay' are mutually exclusive")
    if qemu_opt_get(opts, "delay") is not None or qemu_opt_get(opts, "nodelay") is not None:
        data["nodelay"] = not qemu_opt_get_bool(opts, "delay", True) or qemu_opt_get_bool(
            opts, "nodelay", False
        )
    data["server"] = qemu_opt_get_bool(opts, "server", False)
    for flag in ("telnet", "tn3270", "websocket"):
        if qemu_opt_get(opts, flag) is not None:
            data[flag] = qemu_opt_get_bool(opts, flag, False)
    if qemu_opt_find(opts, "wait") is not None or data["server"]:
        data["wait"] = qemu_opt_get_bool(opts, "wait", True)
    if qemu_opt_find(opts, "reconnect") is not None:
        data["reconnect"] = qemu_opt_get_number(opts, "reconnect", 0)
    for name in ("tls-creds", "tls-authz"):
        value = qemu_opt_get(opts, name)
        if value is not None:
            data[name] = value


def _parse_unix(opts: QemuOpts, path: str) -> dict[str, Any]:
    return {
        "path": path,
        "tight": qemu_opt_get_bool(opts, "tight", True),
        "abstract": qemu_opt_get_bool(opts, "abstract", False),
    }


def _parse_inet(opts: QemuOpts, host: str, port: str) -> dict[str, Any]:
    inet: dict[str, Any] = {"host": host, "port": port}
    if qemu_opt_get(opts, "to") is not None:
        inet["to"] = qemu_opt_get_number(opts, "to", 0)
    for flag in ("ipv4", "ipv6"):
        if qemu_opt_get(opts, flag) is not None:
            inet[flag] = qemu_opt_get_bool(opts, flag, False)
    return inet


def qmp_chardev_validate_socket(data: dict[str, Any], is_listen: bool) -> None:
    """qmp_chardev_validate_socket, and what the emulator does not implement."""
    if data["addr"]["type"] == "unix" and data.get("tls-creds") is not None:
        raise error_setg("'tls_creds' option is incompatible with 'unix' address type")
    if data.get("tls-authz") is not None and data.get("tls-creds") is None:
        raise error_setg("'tls_authz' option requires 'tls_creds' option")
    if is_listen:
        if "reconnect" in data:
            raise error_setg("'reconnect' option is incompatible with socket in server listen mode")
    else:
        if data.get("websocket"):
            raise error_setg("Websocket client is not implemented")
        if "wait" in data:
            raise error_setg("'wait' option is incompatible with socket in client connect mode")
    if data.get("websocket"):
        raise error_setg("the emulator does not implement the 'websocket' protocol")
