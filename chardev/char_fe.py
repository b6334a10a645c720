"""The frontend side of a chardev (chardev/char-fe.c, include/chardev/char-fe.h).

A frontend (a monitor) owns a :class:`CharBackend`, attaches it to a
chardev with :func:`qemu_chr_fe_init` and installs its handlers with
:func:`qemu_chr_fe_set_handlers`.  The handlers run in the context given
there: ``None`` is the default context (the main loop's ``iohandler_ctx``),
or an IOThread's AioContext for chardevs with QEMU_CHAR_FEATURE_GCONTEXT.

Handler contract (what a frontend implements):

* ``can_read(opaque) -> int``: 0 means "stop reading"; a positive number
  means "I want input now".  It is called in the chardev's context before
  every read.  The backend then offers a chunk of up to CHR_READ_BUF_LEN
  bytes, whatever the number was: a frontend that answers 1, as QEMU's
  monitors do, still gets a whole chunk and decides how much of it to take.
* ``read(opaque, data) -> Optional[int]``: consume a prefix of ``data`` and
  return its length (None: all of it).  The chardev keeps the rest, stops
  reading its source while it holds it, and offers it again (in its
  context) after the frontend calls :func:`qemu_chr_fe_accept_input` and
  ``can_read`` is positive.  A frontend whose ``can_read`` goes from 0 to
  positive must call ``qemu_chr_fe_accept_input``; nothing else restarts
  input.
* ``event(opaque, event)``: CHR_EVENT_OPENED when a client connects, and at
  once when the handlers are installed on a chardev that is already open;
  CHR_EVENT_CLOSED only after an OPENED, and only after the data that came
  before the hang-up was offered; CHR_EVENT_BREAK; CHR_EVENT_MUX_IN/OUT when a
  mux moves the focus.

Output: :func:`qemu_chr_fe_write` never blocks and returns how many bytes
the backend took (0: it would block), or a negative errno (the data is lost;
-EIO while a socket has no client).  :func:`qemu_chr_fe_add_watch` then arms
a watch whose ``func(opaque)`` runs in the chardev's context when the
backend can take more (or hung up); returning False removes it.

These functions run in the frontend's threads: init/deinit/set_handlers in
the main loop or in the context the handlers go to; writes from any thread.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from chardev.char import (
    CHR_EVENT_BREAK,
    CHR_EVENT_CLOSED,
    CHR_EVENT_MUX_IN,
    CHR_EVENT_MUX_OUT,
    CHR_EVENT_OPENED,
    Chardev,
    QEMUChrEvent,
    qemu_chr_be_event,
    qemu_chr_be_update_read_handlers,
    qemu_chr_delete,
    qemu_chr_write,
)
from chardev.char_io import (
    G_IO_ERR,
    G_IO_HUP,
    G_IO_IN,
    G_IO_NVAL,
    G_IO_OUT,
    G_IO_PRI,
    WatchFunc,
)
from util.aio import AioContext

__all__ = [
    "CHR_EVENT_BREAK",
    "CHR_EVENT_CLOSED",
    "CHR_EVENT_MUX_IN",
    "CHR_EVENT_MUX_OUT",
    "CHR_EVENT_OPENED",
    "G_IO_ERR",
    "G_IO_HUP",
    "G_IO_IN",
    "G_IO_NVAL",
    "G_IO_OUT",
    "G_IO_PRI",
    "BackendChangeHandler",
    "CharBackend",
    "IOCanReadHandler",
    "IOEventHandler",
    "IOReadHandler",
    "QEMUChrEvent",
    "WatchFunc",
    "qemu_chr_fe_accept_input",
    "qemu_chr_fe_add_watch",
    "qemu_chr_fe_backend_connected",
    "qemu_chr_fe_backend_open",
    "qemu_chr_fe_deinit",
    "qemu_chr_fe_disconnect",
    "qemu_chr_fe_get_driver",
    "qemu_chr_fe_get_msgfd",
    "qemu_chr_fe_get_msgfds",
    "qemu_chr_fe_init",
    "qemu_chr_fe_remove_watch",
    "qemu_chr_fe_set_echo",
    "qemu_chr_fe_set_handlers",
    "qemu_chr_fe_set_handlers_full",
    "qemu_chr_fe_set_open",
    "qemu_chr_fe_take_focus",
    "qemu_chr_fe_write",
    "qemu_chr_fe_write_all",
]

IOCanReadHandler = Callable[[Any], int]
IOReadHandler = Callable[[Any, bytes], Optional[int]]
IOEventHandler = Callable[[Any, QEMUChrEvent], None]
BackendChangeHandler = Callable[[Any], int]


class CharBackend:
    """A frontend's handle on its chardev (struct CharBackend).

    The handler fields are written by the frontend and read by the chardev
    in its context; each is replaced in one attribute store.
    """

    def __init__(self) -> None:
        self.chr: Optional[Chardev] = None
        self.chr_can_read: Optional[IOCanReadHandler] = None
        self.chr_read: Optional[IOReadHandler] = None
        self.chr_event: Optional[IOEventHandler] = None
        self.chr_be_change: Optional[BackendChangeHandler] = None
        self.opaque: Any = None
        #: the frontend's index in a mux
        self.tag = 0
        #: whether the frontend marked itself open (query-chardev frontend-open)
        self.fe_open = False

    def label(self) -> str:
        """The attached chardev's id, or "" when detached."""
        return self.chr.label if self.chr is not None else ""

    def __repr__(self) -> str:
        return f"<CharBackend on {self.label() or '-'}>"


def qemu_chr_fe_init(be: CharBackend, s: Chardev) -> None:
    """Attach ``be`` to ``s``; QapiError ``Device 'x' is in use`` if taken (7.2 text)."""
    tag = s.fe_attach(be)
    be.fe_open = False
    be.tag = tag
    be.chr = s


def qemu_chr_fe_deinit(be: CharBackend, delete: bool) -> None:
    """Detach: drop the handlers, then the chardev too if ``delete``."""
    s = be.chr
    if s is None:
        return
    qemu_chr_fe_set_handlers(be, None, None, None, None, None, None, True)
    s.fe_detach(be)
    if delete:
        qemu_chr_delete(s)
    be.chr = None


def qemu_chr_fe_set_handlers(
    be: CharBackend,
    fd_can_read: Optional[IOCanReadHandler],
    fd_read: Optional[IOReadHandler],
    fd_event: Optional[IOEventHandler],
    be_change: Optional[BackendChangeHandler],
    opaque: Any,
    context: Optional[AioContext] = None,
    set_open: bool = True,
) -> None:
    """Install handlers to run in ``context``; OPENED at once if already open."""
    qemu_chr_fe_set_handlers_full(
        be, fd_can_read, fd_read, fd_event, be_change, opaque, context, set_open, True
    )


def qemu_chr_fe_set_handlers_full(
    be: CharBackend,
    fd_can_read: Optional[IOCanReadHandler],
    fd_read: Optional[IOReadHandler],
    fd_event: Optional[IOEventHandler],
    be_change: Optional[BackendChangeHandler],
    opaque: Any,
    context: Optional[AioContext],
    set_open: bool,
    sync_state: bool,
) -> None:
    """As qemu_chr_fe_set_handlers; ``sync_state`` False skips the OPENED replay."""
    s = be.chr
    if s is None:
        return
    fe_open = not (opaque is None and fd_can_read is None and fd_read is None and fd_event is None)
    be.chr_can_read = fd_can_read
    be.chr_read = fd_read
    be.chr_event = fd_event
    be.chr_be_change = be_change
    be.opaque = opaque
    qemu_chr_be_update_read_handlers(s, context)
    if set_open:
        qemu_chr_fe_set_open(be, fe_open)
    if fe_open:
        qemu_chr_fe_take_focus(be)
        if sync_state and s.be_open:
            qemu_chr_be_event(s, CHR_EVENT_OPENED)


def qemu_chr_fe_take_focus(be: CharBackend) -> None:
    if be.chr is not None:
        be.chr.fe_take_focus(be)


def qemu_chr_fe_write(be: CharBackend, buf: bytes) -> int:
    """Write without blocking: bytes taken (0: would block), or -errno."""
    s = be.chr
    if s is None:
        return 0
    return qemu_chr_write(s, buf, False)


def qemu_chr_fe_write_all(be: CharBackend, buf: bytes) -> int:
    """Write everything, blocking the calling thread as long as it takes."""
    s = be.chr
    if s is None:
        return 0
    return qemu_chr_write(s, buf, True)


def qemu_chr_fe_add_watch(be: CharBackend, cond: int, func: WatchFunc, opaque: Any) -> int:
    """Run ``func(opaque)`` in the chardev's context when ``cond`` holds.

    Returns a tag for :func:`qemu_chr_fe_remove_watch`, or 0 when the
    backend cannot watch (no client, or a backend that never blocks).  A
    watch whose channel goes away fires once more and is dropped.
    """
    s = be.chr
    if s is None:
        return 0
    return s.chr_add_watch(cond, func, opaque)


def qemu_chr_fe_remove_watch(be: CharBackend, tag: int) -> bool:
    """Remove a watch (g_source_remove); only from the chardev's context."""
    s = be.chr
    if s is None or tag == 0:
        return False
    assert s.sources.in_context_thread(), "a watch is removed from its own context"
    return s.chr_remove_watch(tag)


def qemu_chr_fe_accept_input(be: CharBackend) -> None:
    """The frontend can take input again: re-offer what is pending, resume reading.

    In the chardev's context thread this runs at once, as QEMU calls
    chr_accept_input directly; from another thread, or from inside the
    frontend's own read callback (the offer in progress must finish first),
    it runs in a BH of that context.
    """
    s = be.chr
    if s is None:
        return
    if not s.offering and s.sources.in_context_thread():
        s.chr_input_bh()
    else:
        s.sources.bh_schedule("chr_input")


def qemu_chr_fe_get_msgfds(be: CharBackend, num: int) -> list[int]:
    """Take up to ``num`` fds that came with the input (SCM_RIGHTS).

    The caller owns the fds returned; any others received are closed.
    Empty when there are none or the backend cannot pass fds.
    """
    s = be.chr
    if s is None:
        return []
    return s.get_msgfds(num) or []


def qemu_chr_fe_get_msgfd(be: CharBackend) -> int:
    """One passed fd, or -1."""
    fds = qemu_chr_fe_get_msgfds(be, 1)
    return fds[0] if fds else -1


def qemu_chr_fe_set_open(be: CharBackend, fe_open: bool) -> None:
    s = be.chr
    if s is None or be.fe_open == fe_open:
        return
    be.fe_open = fe_open
    s.chr_set_fe_open(fe_open)


def qemu_chr_fe_disconnect(be: CharBackend) -> None:
    """Cut the client off (socket, pair); a server then accepts the next one.

    CLOSED is raised before this returns when called in the chardev's
    context, else from a bottom half there.
    """
    if be.chr is not None:
        be.chr.chr_disconnect()


def qemu_chr_fe_set_echo(be: CharBackend, echo: bool) -> None:
    if be.chr is not None:
        be.chr.chr_set_echo(echo)


def qemu_chr_fe_backend_connected(be: CharBackend) -> bool:
    """True while a chardev is attached."""
    return be.chr is not None


def qemu_chr_fe_backend_open(be: CharBackend) -> bool:
    """True while the attached chardev is open (a client is connected)."""
    return be.chr is not None and be.chr.be_open


def qemu_chr_fe_get_driver(be: CharBackend) -> Optional[Chardev]:
    return be.chr
