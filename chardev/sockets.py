"""Listening and connecting sockets with QEMU's rules and error texts
(util/qemu-sockets.c, io/channel-socket.c).

It lives next to the socket chardev, its only user, because its errors are
protocol errors (``Failed to add chardev 'x': Failed to bind socket to
PATH: ...``) and util/ must not depend on qapi/.  Addresses are the QAPI
``SocketAddress`` dicts flattened: ``{"type": "unix", "path": ...}`` or
``{"type": "inet", "host": ..., "port": ...}``.  Runs in the thread that
creates or connects the chardev (main loop, or the chardev's context).
"""

from __future__ import annotations

import errno
import os
import socket
from typing import Any, Union

from qapi.error import error_setg

SocketAddress = dict[str, Any]
#: What ``socket.connect`` takes: a path (unix) or a host/port tuple (inet).
SockAddr = Union[str, bytes, tuple[Any, ...]]

_SUN_PATH_LEN = 108


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def socket_address_flatten(legacy: dict[str, Any]) -> SocketAddress:
    """SocketAddressLegacy ``{"type", "data"}`` to a flat SocketAddress."""
    return {"type": legacy["type"], **legacy["data"]}


# ---------------------------------------------------------------- unix


def _unix_sockaddr(addr: SocketAddress) -> SockAddr:
    """The address to bind or connect: a path, or an abstract name."""
    path = addr["path"]
    abstract = bool(addr.get("abstract", False))
    limit = _SUN_PATH_LEN - 1 if abstract else _SUN_PATH_LEN
    if len(path.encode()) > limit:
        raise error_setg("UNIX socket path '%s' is too long", path)
    if not abstract:
        return str(path)
    name = b"\0" + path.encode()
    if addr.get("tight", True):
        return name
    return name.ljust(_SUN_PATH_LEN, b"\0")


def unix_listen_saddr(addr: SocketAddress, num: int) -> socket.socket:
    """Bind and listen; an existing socket file at the path is replaced.

    ``tempfile`` (slow to import) is loaded only for an unnamed socket.
    """
    if not addr["path"] and not addr.get("abstract"):
        import tempfile

        fd, path = tempfile.mkstemp(prefix="qemu-socket-")
        os.close(fd)
        addr = {**addr, "path": path}
    sa = _unix_sockaddr(addr)
    if isinstance(sa, str):
        try:
            os.unlink(sa)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise error_setg("Failed to unlink socket %s: %s", sa, _strerror(e)) from None
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        _bind_listen(sock, sa, num, f"Failed to bind socket to {addr['path']}")
    except BaseException:
        sock.close()
        raise
    return sock


def unix_connect_saddr(addr: SocketAddress) -> socket.socket:
    sa = _unix_sockaddr(addr)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(sa)
    except OSError as e:
        sock.close()
        raise error_setg("Failed to connect to '%s': %s", addr["path"], _strerror(e)) from None
    return sock


def _bind_listen(sock: socket.socket, sa: SockAddr, num: int, bind_msg: str) -> None:
    try:
        sock.bind(sa)
    except OSError as e:
        raise error_setg("%s: %s", bind_msg, _strerror(e)) from None
    try:
        sock.listen(num)
    except OSError as e:
        raise error_setg("Failed to listen on socket: %s", _strerror(e)) from None


# ---------------------------------------------------------------- inet


def inet_ai_family_from_address(addr: SocketAddress) -> int:
    """The getaddrinfo family the ipv4/ipv6 flags ask for."""
    ipv4, ipv6 = addr.get("ipv4"), addr.get("ipv6")
    if ipv4 is False and ipv6 is False:
        raise error_setg("Cannot disable IPv4 and IPv6 at same time")
    if ipv4 and ipv6:
        return socket.AF_INET6 if not addr.get("host") else socket.AF_UNSPEC
    if ipv6 or ipv4 is False:
        return socket.AF_INET6
    if ipv4 or ipv6 is False:
        return socket.AF_INET
    return socket.AF_UNSPEC


def _getaddrinfo(addr: SocketAddress, flags: int) -> list[tuple[Any, ...]]:
    family = inet_ai_family_from_address(addr)
    host, port = addr["host"], addr["port"]
    try:
        return socket.getaddrinfo(host or None, port or None, family, socket.SOCK_STREAM, 0, flags)
    except socket.gaierror as e:
        raise error_setg(
            "address resolution failed for %s:%s: %s", host, port, e.strerror
        ) from None


def _try_bind(sock: socket.socket, addr: SocketAddress, family: int, sa: SockAddr) -> None:
    """Bind; an IPv6 socket takes IPv4 too unless one family was chosen."""
    ipv4, ipv6 = addr.get("ipv4"), addr.get("ipv6")
    v6only = 0 if (ipv4 is None and ipv6 is None) or (ipv4 and ipv6) else 1
    while True:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, v6only)
        try:
            sock.bind(sa)
            return
        except OSError as e:
            if family == socket.AF_INET6 and e.errno == errno.EADDRINUSE and not v6only:
                v6only = 1
                continue
            raise


def inet_listen_saddr(addr: SocketAddress, num: int) -> socket.socket:
    """Listen on the first address and port (up to ``to``) that is free."""
    flags = socket.AI_PASSIVE
    if addr.get("numeric"):
        flags |= socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    created = False
    last: OSError = OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    for family, socktype, proto, _, sa in _getaddrinfo(addr, flags):
        port_min = sa[1]
        port_max = addr["to"] if "to" in addr else port_min
        for port in range(port_min, port_max + 1):
            sock = socket.socket(family, socktype, proto)
            created = True
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                _try_bind(sock, addr, family, (sa[0], port, *sa[2:]))
                sock.listen(num)
            except OSError as e:
                sock.close()
                last = e
                if e.errno == errno.EADDRINUSE:
                    continue
                raise error_setg("Failed to bind socket: %s", _strerror(e)) from None
            _set_keepalive(sock, addr)
            return sock
    what = "Failed to find an available port" if created else "Failed to create a socket"
    raise error_setg("%s: %s", what, _strerror(last))


def inet_resolve_listen(addr: SocketAddress) -> list[SocketAddress]:
    """qio_dns_resolver_lookup_sync: one numeric address per getaddrinfo result.

    An empty host asks for every passive address (``0.0.0.0`` and ``::``),
    which is how QEMU listens dual-stack: one socket for each.
    """
    flags = socket.AI_PASSIVE
    if addr.get("numeric"):
        flags |= socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    out: list[SocketAddress] = []
    for _, _, _, _, sa in _getaddrinfo(addr, flags):
        out.append({**addr, "host": sa[0], "port": str(sa[1]), "numeric": True})
    return out


def inet_connect_targets(addr: SocketAddress) -> list[tuple[int, SockAddr]]:
    """Where to connect, in getaddrinfo order: (family, sockaddr)."""
    flags = socket.AI_CANONNAME | socket.AI_ADDRCONFIG | socket.AI_V4MAPPED
    return [(family, sa) for family, _, _, _, sa in _getaddrinfo(addr, flags)]


def inet_connect_saddr(addr: SocketAddress) -> socket.socket:
    err: OSError = OSError(errno.EINVAL, os.strerror(errno.EINVAL))
    for family, sa in inet_connect_targets(addr):
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.connect(sa)
        except OSError as e:
            sock.close()
            err = e
            continue
        _set_keepalive(sock, addr)
        return sock
    raise error_setg("Failed to connect to '%s:%s': %s", addr["host"], addr["port"], _strerror(err))


def _set_keepalive(sock: socket.socket, addr: SocketAddress) -> None:
    if addr.get("keep-alive"):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)


# ---------------------------------------------------------------- either


def socket_listen(addr: SocketAddress, num: int) -> socket.socket:
    if addr["type"] == "unix":
        return unix_listen_saddr(addr, num)
    return inet_listen_saddr(addr, num)


def socket_resolve_listen(addr: SocketAddress) -> list[SocketAddress]:
    """The addresses a listener opens a socket for (one for UNIX)."""
    if addr["type"] == "unix":
        return [addr]
    return inet_resolve_listen(addr)


def socket_connect(addr: SocketAddress) -> socket.socket:
    if addr["type"] == "unix":
        return unix_connect_saddr(addr)
    return inet_connect_saddr(addr)


def socket_connect_targets(addr: SocketAddress) -> list[tuple[int, SockAddr]]:
    """Targets for a non-blocking connect; QapiError if the name does not resolve."""
    if addr["type"] == "unix":
        return [(socket.AF_UNIX, _unix_sockaddr(addr))]
    return inet_connect_targets(addr)


def socket_connect_error(addr: SocketAddress, e: OSError) -> str:
    """The message of a failed connect to ``addr``."""
    if addr["type"] == "unix":
        return f"Failed to connect to '{addr['path']}': {_strerror(e)}"
    return f"Failed to connect to '{addr['host']}:{addr['port']}': {_strerror(e)}"


def socket_local_address(sock: socket.socket, addr: SocketAddress) -> SocketAddress:
    """The address a listening socket really has (the port chosen for 0)."""
    name = sock.getsockname()
    if addr["type"] == "inet":
        return {"type": "inet", "host": name[0], "port": str(name[1])}
    if isinstance(name, bytes) or name.startswith("\0"):
        raw = name.encode() if isinstance(name, str) else name
        text = raw[1:].split(b"\0", 1)[0].decode(errors="replace")
        tight = len(raw) < _SUN_PATH_LEN
        return {"type": "unix", "path": text, "abstract": True, "tight": tight}
    return {"type": "unix", "path": name}


def socket_listen_cleanup(sock: socket.socket) -> None:
    """Remove the socket file of a listening unix socket before closing it."""
    if sock.family != socket.AF_UNIX:
        return
    name = sock.getsockname()
    if isinstance(name, str) and name and not name.startswith("\0"):
        try:
            os.unlink(name)
        except OSError:
            pass
