"""The multiplexer (chardev/char-mux.c, QEMU 7.2): up to four frontends share
one base chardev; ``C-a c`` moves the input focus to the next one.

The mux is the frontend of its base chardev (``chr_be``).  Input from the
base is scanned for the escape character (``C-a`` unless -echr says
otherwise): ``C-a c`` switches focus (MUX_OUT to the old frontend, MUX_IN to
the new), ``C-a b`` sends a break, ``C-a h`` prints help, ``C-a t`` toggles
output timestamps, ``C-a x`` quits, ``C-a C-a`` sends one ``C-a``.  Other
bytes go to the focused frontend; when it cannot take them they wait in a
32-byte buffer per frontend, and when that is full the mux takes no more
from the base, which keeps the rest (and stops reading) until the frontend
accepts input again.

QEMU 7.2 details kept: frontend slots are never reused (``mux_cnt`` only
grows), so four attachments in total is the limit and the error is
``Device 'x' is in use``; a mux is always busy for chardev-remove; OPENED
from the base goes to every frontend, other events only to the focused one.

Input callbacks run in the mux's context (the base is bound to the same
one); writes from any thread go to the base with the mux's own write lock
held, a lock class of its own so the nesting is visible to lockdep.
"""

from __future__ import annotations

from typing import Any, Optional

from chardev.char import (
    CHR_EVENT_BREAK,
    CHR_EVENT_MUX_IN,
    CHR_EVENT_MUX_OUT,
    CHR_EVENT_OPENED,
    Chardev,
    QEMUChrEvent,
    qemu_chr_be_event,
    qemu_chr_find,
    qemu_chr_list,
    qemu_chr_state,
    qemu_chr_write_all,
    type_register,
)
from chardev.char_fe import (
    CharBackend,
    qemu_chr_fe_accept_input,
    qemu_chr_fe_deinit,
    qemu_chr_fe_init,
    qemu_chr_fe_set_handlers_full,
    qemu_chr_fe_write,
    qemu_chr_fe_write_all,
)
from chardev.char_io import WatchFunc
from qapi.error import error_setg
from util.qemu_option import QemuOpts, qemu_opt_get
from util.timer import QEMU_CLOCK_REALTIME, qemu_clock_get_ms

MAX_MUX = 4
MUX_BUFFER_SIZE = 32

_MUX_HELP = (
    "% h    print this help\n\r",
    "% x    exit emulator\n\r",
    "% s    save disk data back to file (if -snapshot)\n\r",
    "% t    toggle console timestamps\n\r",
    "% b    send break (magic sysrq)\n\r",
    "% c    switch between console and monitor\n\r",
    "% %  sends %\n\r",
)


@type_register
class MuxChardev(Chardev):
    typename = "chardev-mux"
    kind = "mux"
    abstract = False
    write_lock_class = "mux_chr_write_lock"

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        #: written under the BQL (attach/detach); slots are never reused
        self.backends: list[Optional[CharBackend]] = [None] * MAX_MUX
        self.mux_cnt = 0
        #: the mux as the frontend of its base chardev (d->chr)
        self.chr_be = CharBackend()
        # context thread (input) state
        self.focus = -1
        self.term_got_escape = False
        self.buffers = [bytearray() for _ in range(MAX_MUX)]
        #: protected by the mux's write lock
        self.timestamps = False
        self.linestart = False
        self.timestamps_start = -1

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        chardev = qemu_opt_get(opts, "chardev")
        if chardev is None:
            raise error_setg("chardev: mux: no chardev given")
        data["chardev"] = chardev

    def open(self, data: dict[str, Any]) -> bool:
        drv = qemu_chr_find(data["chardev"])
        if drv is None:
            raise error_setg("mux: base chardev %s not found", data["chardev"])
        self.focus = -1
        qemu_chr_fe_init(self.chr_be, drv)
        return qemu_chr_state().muxes_opened

    # ------------------------------------------------------------ frontends

    def fe_attach(self, be: CharBackend) -> int:
        if self.mux_cnt >= MAX_MUX:
            raise error_setg("Device '%s' is in use", self.label)
        tag = self.mux_cnt
        self.backends[tag] = be
        self.mux_cnt += 1
        return tag

    def fe_detach(self, be: CharBackend) -> None:
        super().fe_detach(be)
        self.backends[be.tag] = None

    def fe_take_focus(self, be: CharBackend) -> None:
        mux_set_focus(self, be.tag)

    def is_busy(self) -> bool:
        return True

    def chr_update_read_handler(self) -> None:
        """Bind the base to the mux's context, with the mux's routines."""
        qemu_chr_fe_set_handlers_full(
            self.chr_be,
            mux_chr_can_read,
            mux_chr_read,
            mux_chr_event,
            None,
            self,
            self.gcontext,
            True,
            False,
        )

    def chr_be_event(self, event: QEMUChrEvent) -> None:
        """An event raised on the mux itself goes to the focused frontend."""
        if self.focus != -1:
            mux_chr_send_event(self, self.focus, event)

    def chr_accept_input(self) -> None:
        mux_chr_accept_input(self)
        qemu_chr_fe_accept_input(self.chr_be)

    # ------------------------------------------------------------ output

    def chr_write(self, buf: bytes) -> int:
        if not self.timestamps:
            return qemu_chr_fe_write(self.chr_be, buf)
        ret = 0
        for i in range(len(buf)):
            if self.linestart:
                qemu_chr_fe_write_all(self.chr_be, self._timestamp())
                self.linestart = False
            ret += qemu_chr_fe_write(self.chr_be, buf[i : i + 1])
            if buf[i] == ord("\n"):
                self.linestart = True
        return ret

    def _timestamp(self) -> bytes:
        ti = qemu_clock_get_ms(QEMU_CLOCK_REALTIME)
        if self.timestamps_start == -1:
            self.timestamps_start = ti
        ti -= self.timestamps_start
        secs = ti // 1000
        return (
            f"[{secs // 3600:02d}:{secs // 60 % 60:02d}:{secs % 60:02d}.{ti % 1000:03d}] ".encode()
        )

    def chr_wait_writable(self) -> None:
        base = self.chr_be.chr
        if base is not None:
            base.chr_wait_writable()

    def chr_add_watch(self, cond: int, func: WatchFunc, opaque: Any) -> int:
        base = self.chr_be.chr
        return base.chr_add_watch(cond, func, opaque) if base is not None else 0

    def chr_remove_watch(self, tag: int) -> bool:
        base = self.chr_be.chr
        return base.chr_remove_watch(tag) if base is not None else False

    def finalize(self) -> None:
        for be in self.backends:
            if be is not None:
                be.chr = None
        self.be = None
        qemu_chr_fe_deinit(self.chr_be, False)
        super().finalize()


# ---------------------------------------------------------------- events and focus


def mux_chr_send_event(d: MuxChardev, mux_nr: int, event: QEMUChrEvent) -> None:
    be = d.backends[mux_nr]
    if be is not None and be.chr_event is not None:
        be.chr_event(be.opaque, event)


def mux_chr_send_all_event(d: MuxChardev, event: QEMUChrEvent) -> None:
    """Send ``event`` to every frontend, once muxes are opened."""
    if not qemu_chr_state().muxes_opened:
        return
    for i in range(d.mux_cnt):
        mux_chr_send_event(d, i, event)


def mux_chr_event(opaque: MuxChardev, event: QEMUChrEvent) -> None:
    """An event from the base chardev."""
    mux_chr_send_all_event(opaque, event)


def mux_set_focus(d: MuxChardev, focus: int) -> None:
    """Move the input focus to frontend ``focus``."""
    assert 0 <= focus < d.mux_cnt, focus
    if d.focus != -1:
        mux_chr_send_event(d, d.focus, CHR_EVENT_MUX_OUT)
    d.focus = focus
    d.be = d.backends[focus]
    mux_chr_send_event(d, focus, CHR_EVENT_MUX_IN)


def suspend_mux_open() -> None:
    """Hold OPENED back while the command line is processed."""
    qemu_chr_state().muxes_opened = False


def resume_mux_open() -> None:
    """Deliver the held-back OPENED to every frontend of every mux."""
    qemu_chr_state().muxes_opened = True
    for chr in qemu_chr_list():
        if isinstance(chr, MuxChardev) and not chr.be_open:
            mux_chr_send_all_event(chr, CHR_EVENT_OPENED)
            chr.be_open = True


# ---------------------------------------------------------------- input


def _fe_can_read(be: Optional[CharBackend]) -> int:
    if be is None or be.chr_can_read is None:
        return 0
    return int(be.chr_can_read(be.opaque))


def _fe_read(be: CharBackend, data: bytes) -> int:
    assert be.chr_read is not None
    taken = be.chr_read(be.opaque, data)
    return len(data) if taken is None else taken


def mux_chr_can_read(opaque: MuxChardev) -> int:
    """Room in the focused frontend's buffer, or what the frontend says."""
    d = opaque
    if d.focus == -1:
        return 0
    if len(d.buffers[d.focus]) < MUX_BUFFER_SIZE:
        return 1
    return _fe_can_read(d.backends[d.focus])


def mux_chr_accept_input(d: MuxChardev) -> None:
    """Offer the focused frontend what waits in its buffer."""
    if d.focus == -1:
        return
    be, buf = d.backends[d.focus], d.buffers[d.focus]
    if be is not None and buf and be.chr_read is not None and _fe_can_read(be) > 0:
        del buf[: _fe_read(be, bytes(buf))]


def mux_chr_read(opaque: MuxChardev, data: bytes) -> int:
    """Input from the base: escapes, then the focused frontend; returns bytes taken."""
    d = opaque
    mux_chr_accept_input(d)
    esc = qemu_chr_state().term_escape_char
    i = 0
    while i < len(data):
        if d.term_got_escape or data[i] == esc:
            focus = d.focus
            if _mux_proc_byte(d, data[i], esc):
                _mux_feed(d, data[i : i + 1], force=True)
            i += 1
            if d.focus != focus:
                # QEMU reads a byte per pass: the new focus handles MUX_IN
                # (an HMP monitor prints its prompt) before it sees the next
                # byte.  Stop here; the base offers the rest again next pass.
                qemu_chr_fe_accept_input(d.chr_be)
                return i
            continue
        end = data.find(bytes([esc]), i)
        end = len(data) if end < 0 else end
        n = _mux_feed(d, data[i:end])
        i += n
        if i < end:
            break
    return i


def _mux_feed(d: MuxChardev, run: bytes, force: bool = False) -> int:
    """Deliver ``run`` to the focused frontend or its buffer; returns bytes taken."""
    m = d.focus
    if m == -1:
        return len(run)
    be, buf = d.backends[m], d.buffers[m]
    taken = 0
    if not buf and be is not None and be.chr_read is not None and _fe_can_read(be) > 0:
        taken = _fe_read(be, run)
    room = len(run) - taken if force else max(MUX_BUFFER_SIZE - len(buf), 0)
    extra = run[taken : taken + room]
    buf += extra
    return taken + len(extra)


def _mux_proc_byte(d: MuxChardev, ch: int, esc: int) -> bool:
    """Escape handling (mux_proc_byte); True if ``ch`` is data to deliver."""
    if not d.term_got_escape:
        d.term_got_escape = True
        return False
    d.term_got_escape = False
    if ch == esc:
        return True
    command = chr(ch)
    if command in "?h":
        mux_print_help(d, esc)
    elif command == "x":
        qemu_chr_write_all(d, b"QEMU: Terminated\n\r")
        exit_request = qemu_chr_state().exit_request
        if exit_request is not None:
            exit_request()
    elif command == "b":
        qemu_chr_be_event(d, CHR_EVENT_BREAK)
    elif command == "c":
        assert d.mux_cnt > 0, "the handler is registered with the first frontend"
        mux_set_focus(d, (d.focus + 1) % d.mux_cnt)
    elif command == "t":
        with d.chr_write_lock:
            d.timestamps = not d.timestamps
            d.timestamps_start = -1
            d.linestart = False
    return False


def mux_print_help(d: MuxChardev, esc: int) -> None:
    """``C-a h``: the escape commands, with the escape key's name."""
    if 0 < esc < 26:
        cbuf, ebuf = "\n\r", f"C-{chr(esc - 1 + ord('a'))}"
    else:
        cbuf, ebuf = f"\n\rEscape-Char set to Ascii: 0x{esc:02x}\n\r\n\r", "Escape-Char"
    text = cbuf + "".join(line.replace("%", ebuf) for line in _MUX_HELP)
    qemu_chr_write_all(d, text.encode())
