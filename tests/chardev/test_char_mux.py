"""The mux: focus switching with C-a c, MUX_IN/MUX_OUT, per-frontend
buffering, held-back OPENED, escapes and the QEMU 7.2 limits."""

from __future__ import annotations

import pytest

from chardev.char import (
    CHR_EVENT_BREAK,
    CHR_EVENT_CLOSED,
    CHR_EVENT_MUX_IN,
    CHR_EVENT_MUX_OUT,
    CHR_EVENT_OPENED,
    qemu_chardev_new,
    qemu_chr_find,
)
from chardev.char_fe import (
    CharBackend,
    qemu_chr_fe_accept_input,
    qemu_chr_fe_init,
    qemu_chr_fe_write,
)
from chardev.char_mux import MUX_BUFFER_SIZE, MuxChardev, resume_mux_open, suspend_mux_open
from chardev.char_pair import qemu_chr_new_pair
from chardev.char_qmp import qmp_chardev_remove, qmp_query_chardev
from qapi.error import QapiError
from tests.chardev.conftest import Frontend, run_iterations, run_until

C_A = b"\x01"


def new_mux(label: str = "m", **pair_args):
    base, client = qemu_chr_new_pair(f"{label}-base", **pair_args)
    mux = qemu_chardev_new(
        label, MuxChardev, {"type": "mux", "data": {"chardev": base.label}}, None
    )
    assert isinstance(mux, MuxChardev)
    return mux, client


def test_focus_follows_attachment_and_c_a_c(chr_state):
    mux, client = new_mux()
    a = Frontend().attach(mux)
    b = Frontend().attach(mux)
    assert a.events == [CHR_EVENT_MUX_IN, CHR_EVENT_OPENED, CHR_EVENT_MUX_OUT]
    assert b.events == [CHR_EVENT_MUX_IN, CHR_EVENT_OPENED]
    client.send(b"to b" + C_A + b"cto a" + C_A + b"cb again")
    run_until(lambda: b.data == b"to bb again")
    assert a.data == b"to a"
    assert a.events[-2:] == [CHR_EVENT_MUX_IN, CHR_EVENT_MUX_OUT]
    assert b.events[-2:] == [CHR_EVENT_MUX_OUT, CHR_EVENT_MUX_IN]
    b.detach()
    a.detach()


def test_escape_escape_sends_the_escape_and_break_goes_to_the_focus(chr_state):
    mux, client = new_mux()
    a = Frontend().attach(mux)
    client.send(C_A + C_A + b"x" + C_A + b"b")
    run_until(lambda: CHR_EVENT_BREAK in a.events)
    assert a.data == C_A + b"x"
    a.detach()


def test_help_and_timestamps_are_written_to_the_base(chr_state):
    mux, client = new_mux()
    a = Frontend().attach(mux)
    client.send(C_A + b"h")
    run_until(lambda: b"switch between console" in client.chr.output)
    help_text = client.recv().decode()
    assert help_text.startswith("\n\rC-a h    print this help\n\r")
    assert "C-a C-a  sends C-a\n\r" in help_text
    client.send(C_A + b"t")
    run_until(lambda: mux.timestamps)
    qemu_chr_fe_write(a.be, b"one\ntwo")
    out = client.recv()
    assert out.startswith(b"one\n[00:00:00.") and out.endswith(b"] two")
    a.detach()


def test_bytes_wait_for_a_busy_frontend_then_the_base_holds_back(chr_state):
    mux, client = new_mux()
    a = Frontend(want=0).attach(mux)
    data = bytes(range(32, 132))
    client.send(data)
    run_until(lambda: len(mux.buffers[0]) == MUX_BUFFER_SIZE)
    base = qemu_chr_find("m-base")
    assert len(base.pending) == 100 - MUX_BUFFER_SIZE and a.data == b""
    a.want = 1
    qemu_chr_fe_accept_input(a.be)
    run_until(lambda: a.data == data)
    a.detach()


def test_bytes_typed_before_a_switch_stay_with_their_frontend(chr_state):
    mux, client = new_mux()
    a = Frontend().attach(mux)
    b = Frontend(want=0).attach(mux)  # focused, busy
    client.send(b"for b" + C_A + b"cfor a")
    run_until(lambda: a.data == b"for a")
    assert b.data == b"" and bytes(mux.buffers[1]) == b"for b"
    client.send(C_A + b"c")
    run_until(lambda: mux.focus == 1)
    b.want = 1
    qemu_chr_fe_accept_input(b.be)
    run_until(lambda: b.data == b"for b")
    b.detach()
    a.detach()


def test_opened_is_held_back_until_resume(chr_state):
    suspend_mux_open()
    mux, client = new_mux()
    a = Frontend().attach(mux)
    b = Frontend().attach(mux)
    assert CHR_EVENT_OPENED not in a.events + b.events
    resume_mux_open()
    assert a.events[-1] == CHR_EVENT_OPENED and b.events[-1] == CHR_EVENT_OPENED
    client.hangup()
    run_until(lambda: CHR_EVENT_CLOSED in a.events and CHR_EVENT_CLOSED in b.events)
    b.detach()
    a.detach()


def test_four_attachments_in_total(chr_state):
    mux, _ = new_mux()
    fes = [Frontend().attach(mux) for _ in range(4)]
    with pytest.raises(QapiError, match=r"^Device 'm' is in use$"):
        qemu_chr_fe_init(CharBackend(), mux)
    fes[0].detach()
    with pytest.raises(QapiError, match=r"^Device 'm' is in use$"):  # 7.2 never reuses a slot
        qemu_chr_fe_init(CharBackend(), mux)
    for fe in fes[1:]:
        fe.detach()


def test_a_mux_is_always_busy_and_so_is_its_base(chr_state):
    new_mux()
    for label in ("m", "m-base"):
        with pytest.raises(QapiError, match=f"^Chardev '{label}' is busy$"):
            qmp_chardev_remove(label)
    labels = sorted(c["label"] for c in qmp_query_chardev())
    assert labels == ["m", "m-base"]


def test_output_goes_to_the_base(chr_state):
    mux, client = new_mux()
    a = Frontend().attach(mux)
    assert qemu_chr_fe_write(a.be, b"hello") == 5
    assert client.recv() == b"hello"
    run_iterations(1)
    a.detach()
