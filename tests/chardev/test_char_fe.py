"""The frontend API: attachment, handlers and their context, input flow
control with partial consumption, output watches, passed fds and events.

Most tests use the in-memory pair chardev and step the main loop."""

from __future__ import annotations

import errno
import os

import pytest

from chardev.char import CHR_EVENT_CLOSED, CHR_EVENT_OPENED, qemu_chardev_new, qemu_chr_find
from chardev.char_fe import (
    G_IO_HUP,
    G_IO_OUT,
    CharBackend,
    qemu_chr_fe_accept_input,
    qemu_chr_fe_add_watch,
    qemu_chr_fe_backend_connected,
    qemu_chr_fe_backend_open,
    qemu_chr_fe_disconnect,
    qemu_chr_fe_get_msgfd,
    qemu_chr_fe_get_msgfds,
    qemu_chr_fe_init,
    qemu_chr_fe_remove_watch,
    qemu_chr_fe_set_handlers,
    qemu_chr_fe_write,
    qemu_chr_fe_write_all,
)
from chardev.char_io import CHR_READ_BUF_LEN
from chardev.char_null import NullChardev
from chardev.char_pair import qemu_chr_new_pair
from chardev.char_qmp import qmp_query_chardev
from qapi.error import QapiError
from tests.chardev.conftest import Frontend, in_thread, run_iterations, run_until
from util.aio import aio_poll
from util.iothread import iothread_get_aio_context
from util.main_loop import qemu_get_aio_context
from util.thread import QemuEvent, qemu_thread_create, qemu_thread_get_name


def test_second_frontend_is_refused(chr_state):
    chr = qemu_chardev_new("c0", NullChardev, {"type": "null", "data": {}}, None)
    first = Frontend().attach(chr)
    with pytest.raises(QapiError, match=r"^Device 'c0' is in use$"):
        qemu_chr_fe_init(CharBackend(), chr)
    first.detach()
    assert not qemu_chr_fe_backend_connected(first.be)
    Frontend().attach(chr).detach()


def test_opened_at_set_handlers_only_when_open(chr_state):
    null = qemu_chardev_new("n", NullChardev, {"type": "null", "data": {}}, None)
    pair, _ = qemu_chr_new_pair("p")
    on_null, on_pair = Frontend().attach(null), Frontend().attach(pair)
    assert on_null.events == [] and not qemu_chr_fe_backend_open(on_null.be)
    assert on_pair.events == [CHR_EVENT_OPENED]  # synchronously, in set_handlers
    assert {c["label"]: c["frontend-open"] for c in qmp_query_chardev()} == {"n": True, "p": True}
    on_pair.detach()
    on_null.detach()


def test_handlers_run_in_the_main_loop_not_in_nested_loops(chr_state):
    """context=None is iohandler_ctx: aio_poll(qemu_aio_context) never reads."""
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend().attach(chr)
    client.send(b"hi")
    for _ in range(5):
        aio_poll(qemu_get_aio_context(), False)
    assert fe.data == b""
    run_until(lambda: fe.data == b"hi")
    assert fe.threads == {"MainThread"}
    fe.detach()


def test_handlers_run_in_an_iothread(iothread):
    """Bound from a BH in the I/O thread, as monitors do: everything runs there."""
    ctx = iothread_get_aio_context(iothread)
    chr, client = qemu_chr_new_pair("p")
    got = QemuEvent()
    fe = Frontend()

    def read(opaque, data):
        fe.read(opaque, data)
        got.set()

    def setup():
        qemu_chr_fe_init(fe.be, chr)
        qemu_chr_fe_set_handlers(fe.be, fe.can_read, read, fe.event, None, fe, ctx, True)

    in_thread(iothread, setup)
    client.send(b"in the I/O thread")
    assert got.wait(10)
    assert fe.data == b"in the I/O thread"
    assert fe.events == [CHR_EVENT_OPENED]
    assert fe.threads == {"IO chr_test"}
    assert chr.sources.context() is ctx
    in_thread(iothread, fe.detach)


def test_a_frontend_answering_one_gets_whole_chunks(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend(want=1).attach(chr)
    client.send(bytes(10000))
    run_until(lambda: len(fe.data) == 10000)
    assert [len(c) for c in fe.chunks] == [CHR_READ_BUF_LEN, CHR_READ_BUF_LEN, 10000 - 8192]
    fe.detach()


def test_partial_consumption_waits_for_accept_input(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend(want=1, take=3).attach(chr)
    client.send(b"abcdefgh")
    run_until(lambda: fe.data == b"abc")
    run_iterations(5)
    assert fe.data == b"abc" and chr.pending == b"defgh"
    client.send(b"ij")  # not read while the chardev holds input
    run_iterations(3)
    assert fe.chunks == [b"abcdefgh"]
    qemu_chr_fe_accept_input(fe.be)
    run_until(lambda: fe.data == b"abcdef")
    assert fe.chunks[-1] == b"defgh"
    fe.take = None
    qemu_chr_fe_accept_input(fe.be)
    run_until(lambda: fe.data == b"abcdefghij")
    fe.detach()


def test_can_read_zero_stops_reading_the_source(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend(want=0).attach(chr)
    client.send(b"xyz")
    run_iterations(5)
    assert fe.chunks == [] and chr.pending == b"" and chr.input
    fe.want = 1
    qemu_chr_fe_accept_input(fe.be)
    run_until(lambda: fe.data == b"xyz")
    fe.detach()


def test_lockstep_mode_reads_one_byte_per_pass(chr_state):
    chr, client = qemu_chr_new_pair("p", lockstep=True)
    fe = Frontend().attach(chr)
    client.send(b"abc")
    run_until(lambda: fe.data == b"a")
    assert fe.chunks == [b"a"]
    run_until(lambda: fe.data == b"abc")
    assert fe.chunks == [b"a", b"b", b"c"]
    fe.detach()


def test_hangup_after_data_delivers_the_data_first(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend().attach(chr)
    client.send(b"last words")
    client.hangup()
    run_until(lambda: CHR_EVENT_CLOSED in fe.events)
    assert fe.data == b"last words"
    assert fe.events == [CHR_EVENT_OPENED, CHR_EVENT_CLOSED]
    assert not chr.be_open
    fe.detach()


def test_hangup_while_not_reading_drops_unread_input(chr_state):
    """As a UNIX socket's HUP in QEMU: noticed even when no input is taken."""
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend(want=0).attach(chr)
    client.send(b"never read")
    client.hangup()
    run_until(lambda: CHR_EVENT_CLOSED in fe.events)
    assert fe.data == b""
    client.connect()
    run_until(lambda: fe.events.count(CHR_EVENT_OPENED) == 2)
    fe.want = 1
    qemu_chr_fe_accept_input(fe.be)
    run_iterations(3)
    assert fe.data == b""
    fe.detach()


def test_closed_only_after_opened(chr_state):
    chr, client = qemu_chr_new_pair("p", connected=False)
    fe = Frontend().attach(chr)
    client.hangup()
    run_iterations(3)
    assert fe.events == []
    client.connect()
    run_until(lambda: fe.events == [CHR_EVENT_OPENED])
    fe.detach()


def test_partial_write_then_watch_flushes_in_order(chr_state):
    chr, client = qemu_chr_new_pair("p", out_capacity=4)
    fe = Frontend().attach(chr)
    rest = bytearray(b"abcdefghij")
    rest = rest[qemu_chr_fe_write(fe.be, bytes(rest)) :]
    assert rest == b"efghij"
    fired = []

    def unblocked(opaque):
        fired.append(opaque)
        del rest[: qemu_chr_fe_write(fe.be, bytes(rest))]
        return bool(rest)

    assert qemu_chr_fe_add_watch(fe.be, G_IO_OUT | G_IO_HUP, unblocked, "w") > 0
    run_iterations(3)
    assert fired == []  # nothing was read: no room
    received = bytearray()
    while rest:
        received += client.recv()
        run_until(lambda: len(fired) > 0)
        fired.clear()
    received += client.recv()
    assert received == b"abcdefghij"
    fe.detach()


def test_write_all_blocks_until_the_client_reads(chr_state):
    chr, client = qemu_chr_new_pair("p", out_capacity=3)
    fe = Frontend().attach(chr)
    received = bytearray()

    def drain(opaque):
        while len(received) < 12 and client.wait_output(1, 10):
            received.extend(client.recv())

    thread = qemu_thread_create("drainer", drain, None)
    assert qemu_chr_fe_write_all(fe.be, b"0123456789AB") == 12
    thread.join(10)
    assert received == b"0123456789AB"
    fe.detach()


def test_writes_without_a_client_fail_and_cannot_be_watched(chr_state):
    chr, _ = qemu_chr_new_pair("p", connected=False)
    fe = Frontend().attach(chr)
    assert qemu_chr_fe_write(fe.be, b"lost") == -errno.EIO
    assert qemu_chr_fe_add_watch(fe.be, G_IO_OUT, lambda o: False, None) == 0
    fe.detach()
    assert qemu_chr_fe_write(fe.be, b"detached") == 0


def test_watch_removed_from_its_context_never_fires(chr_state):
    chr, client = qemu_chr_new_pair("p", out_capacity=1)
    fe = Frontend().attach(chr)
    qemu_chr_fe_write(fe.be, b"xy")
    fired = []
    tag = qemu_chr_fe_add_watch(fe.be, G_IO_OUT, fired.append, "w")
    assert qemu_chr_fe_remove_watch(fe.be, tag)
    assert not qemu_chr_fe_remove_watch(fe.be, tag)
    client.recv()
    run_iterations(3)
    assert fired == []
    fe.detach()


def test_watch_fires_once_when_the_client_hangs_up(chr_state):
    chr, client = qemu_chr_new_pair("p", out_capacity=1)
    fe = Frontend().attach(chr)
    qemu_chr_fe_write(fe.be, b"xy")
    fired = []
    qemu_chr_fe_add_watch(fe.be, G_IO_OUT | G_IO_HUP, lambda o: fired.append(o) or True, 1)
    client.hangup()
    run_until(lambda: fired == [1])
    assert fe.events[-1] == CHR_EVENT_CLOSED
    fe.detach()


def _pipe_inode(fd: int) -> int:
    return os.fstat(fd).st_ino


def test_passed_fds_keep_only_the_latest(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend().attach(chr)
    first, second = os.pipe(), os.pipe()
    try:
        client.send(b"{}", fds=(first[0],))
        client.send(b"{}", fds=(second[0], second[1]))
        run_until(lambda: fe.data == b"{}{}")
        assert fe.chunks == [b"{}", b"{}"]  # a read never glues data to a message with fds
        fds = qemu_chr_fe_get_msgfds(fe.be, 1)
        assert [_pipe_inode(fd) for fd in fds] == [_pipe_inode(second[0])]
        os.close(fds[0])
        assert qemu_chr_fe_get_msgfd(fe.be) == -1  # taken; the other one was closed
    finally:
        for fd in (*first, *second):
            os.close(fd)
    fe.detach()


def test_deinit_stops_delivery_and_frees_the_chardev(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend().attach(chr)
    fe.detach()
    client.send(b"for the next one")
    run_iterations(3)
    assert fe.data == b""
    assert not qemu_chr_find("p").is_busy()
    second = Frontend().attach(chr)
    run_until(lambda: second.data == b"for the next one")
    assert second.events == [CHR_EVENT_OPENED]
    second.detach()


def test_handlers_all_none_mark_the_frontend_closed(chr_state):
    chr, _ = qemu_chr_new_pair("p")
    fe = Frontend().attach(chr)
    qemu_chr_fe_set_handlers(fe.be, None, None, None, None, None, None, True)
    assert qmp_query_chardev() == [{"label": "p", "filename": "pair:p", "frontend-open": False}]
    fe.detach()


def test_a_pending_watch_moves_with_the_chardev(iothread):
    """Rebinding the chardev moves its watches; they fire in the new context."""
    chr, client = qemu_chr_new_pair("p", out_capacity=1)
    fe = Frontend()
    qemu_chr_fe_init(fe.be, chr)
    qemu_chr_fe_write(fe.be, b"xy")
    fired = QemuEvent()
    where = []

    def unblocked(opaque):
        where.append(qemu_thread_get_name())
        fired.set()
        return False

    qemu_chr_fe_add_watch(fe.be, G_IO_OUT, unblocked, None)
    ctx = iothread_get_aio_context(iothread)
    in_thread(
        iothread,
        lambda: qemu_chr_fe_set_handlers(
            fe.be, fe.can_read, fe.read, fe.event, None, fe, ctx, True
        ),
    )
    run_iterations(3)
    assert not fired.is_set()
    assert client.recv() == b"x"
    assert fired.wait(10)
    assert where == ["IO chr_test"]
    in_thread(iothread, fe.detach)


def test_disconnect_from_the_frontend_side(chr_state):
    chr, client = qemu_chr_new_pair("p")
    fe = Frontend().attach(chr)
    qemu_chr_fe_disconnect(fe.be)  # in the chardev's context: CLOSED at once
    assert fe.events == [CHR_EVENT_OPENED, CHR_EVENT_CLOSED]
    assert qemu_chr_fe_write(fe.be, b"x") == -errno.EIO
    client.connect()
    run_until(lambda: fe.events[-1] == CHR_EVENT_OPENED)
    fe.detach()
