"""Dual-stack TCP listening (io/net-listener.c): ``host=`` listens on 0.0.0.0 and [::].

QEMU resolves the listen address and opens a socket per result, so a
``tcp::PORT`` monitor answers IPv4 and IPv6 clients; ``ipv4=on`` or
``ipv6=on`` keep one family, as ``inet_listen`` does.
"""

from __future__ import annotations

import socket

import pytest

from chardev.char import CHR_EVENT_CLOSED, CHR_EVENT_OPENED, qemu_chr_delete, qemu_chr_find
from chardev.char_opts import qemu_chardev_opts, qemu_chr_new_from_opts
from chardev.char_socket import SocketChardev
from tests.chardev.conftest import Frontend, run_until
from util.qemu_option import qemu_opts_parse


def free_port() -> int:
    """A port free on both families (a dual-stack probe socket got it)."""
    probe = socket.socket(socket.AF_INET6)
    probe.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    probe.bind(("::", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def listen(optarg: str) -> SocketChardev:
    chr = qemu_chr_new_from_opts(qemu_opts_parse(qemu_chardev_opts(), optarg, True))
    assert isinstance(chr, SocketChardev)
    return chr


def families(chr: SocketChardev) -> list[tuple[socket.AddressFamily, int]]:
    assert chr.listener is not None
    out = []
    for s in chr.listener.sioc:
        v6only = (
            s.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
            if s.family == socket.AF_INET6
            else -1
        )
        out.append((s.family, v6only))
    return out


def serves(chr: SocketChardev, host: str, port: int) -> None:
    fe = Frontend().attach(chr)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    c = socket.socket(family)
    c.connect((host, port))
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    c.close()
    run_until(lambda: fe.events == [CHR_EVENT_OPENED, CHR_EVENT_CLOSED])
    fe.detach()


@pytest.mark.parametrize("client", ["127.0.0.1", "::1"])
def test_empty_host_listens_on_both_families(chr_state, client):
    port = free_port()
    chr = listen(f"socket,id=ds,host=,port={port},server=on,wait=off")
    assert families(chr) == [(socket.AF_INET, -1), (socket.AF_INET6, 1)]
    assert chr.filename == f"disconnected:tcp:0.0.0.0:{port},server=on"
    serves(chr, client, port)
    qemu_chr_delete(chr)
    assert qemu_chr_find("ds") is None


@pytest.mark.parametrize(
    ("flag", "expected"),
    [("ipv4=on", [(socket.AF_INET, -1)]), ("ipv6=on", [(socket.AF_INET6, 1)])],
)
def test_ipv4_or_ipv6_keeps_one_family(chr_state, flag, expected):
    port = free_port()
    chr = listen(f"socket,id=one,host=,port={port},server=on,wait=off,{flag}")
    assert families(chr) == expected
    serves(chr, "127.0.0.1" if expected[0][0] == socket.AF_INET else "::1", port)
    qemu_chr_delete(chr)


def test_listener_sockets_close_with_the_chardev(chr_state):
    port = free_port()
    chr = listen(f"socket,id=gone,host=,port={port},server=on,wait=off")
    qemu_chr_delete(chr)
    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        with socket.socket(family) as c, pytest.raises(ConnectionRefusedError):
            c.connect((host, port))
