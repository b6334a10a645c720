"""Character devices: the base class, the registry and creation (chardev/char.c,
include/chardev/char.h).

A :class:`Chardev` is a backend (socket, stdio, ringbuf...); a frontend
(a monitor) attaches to it through a ``CharBackend`` (chardev/char_fe.py).
Backend classes register themselves by type name (``chardev-socket``) as
QOM types do; instances live in one :class:`ChardevState`, QEMU's
``/chardevs`` container plus the other file-scope globals of the chardev
code, which a test can build fresh (``qemu_chr_cleanup`` drops it).

Threads:

* creation, removal and lookup run in the main loop thread with the BQL
  (command line, QMP handlers);
* a chardev's I/O callbacks run in its context (``chr.gcontext``): by default
  the main loop's ``iohandler_ctx`` (the context only the real main loop
  polls, as QEMU's default GMainContext is never run by a nested
  ``aio_poll(qemu_aio_context)``), or the AioContext of an IOThread when a
  frontend binds it there (monitors on ``mon_iothread``);
* writes (``qemu_chr_write``) come from any thread and are serialised by the
  per-chardev ``chr_write_lock``.

Input path and partial consumption (DESIGN.md "Fidelity without a per-byte
loop"): a backend reads a chunk of up to ``CHR_READ_BUF_LEN`` bytes only while
the frontend's ``can_read`` returns a positive number, and offers it with
:func:`qemu_chr_be_write`.  The frontend's read callback returns how many
bytes it took (None: all).  The rest stays in ``chr.pending``; while it is
not empty the backend stops reading its source, and the chardev offers it
again when the frontend calls ``qemu_chr_fe_accept_input`` (from a bottom
half in the chardev's context).
"""

from __future__ import annotations

import enum
import importlib
import os
from typing import TYPE_CHECKING, Any, Callable, ClassVar, Optional

from chardev.char_io import ChrSources, WatchFunc
from qapi._ghash import GStrHashSet
from qapi.error import error_setg
from util.aio import AioContext
from util.error_report import error_report
from util.qemu_option import (
    QemuOpts,
)
from util.thread import QemuMutex
from util.timer import QEMU_CLOCK_REALTIME, QEMUClockType
from util.trace import trace_event

if TYPE_CHECKING:
    from chardev.char_fe import CharBackend

trace_chr_be_event = trace_event("chr_be_event", "label", "event")
trace_chr_be_write = trace_event("chr_be_write", "label", "offered", "taken")
trace_chr_write = trace_event("chr_write", "label", "len", "ret")


class QEMUChrEvent(enum.IntEnum):
    """Events a backend sends its frontend (QEMUChrEvent)."""

    CHR_EVENT_BREAK = 0  # serial break
    CHR_EVENT_OPENED = 1  # new connection established
    CHR_EVENT_MUX_IN = 2  # mux focus moved to this frontend
    CHR_EVENT_MUX_OUT = 3  # mux focus moved away from this frontend
    CHR_EVENT_CLOSED = 4  # connection closed


CHR_EVENT_BREAK = QEMUChrEvent.CHR_EVENT_BREAK
CHR_EVENT_OPENED = QEMUChrEvent.CHR_EVENT_OPENED
CHR_EVENT_MUX_IN = QEMUChrEvent.CHR_EVENT_MUX_IN
CHR_EVENT_MUX_OUT = QEMUChrEvent.CHR_EVENT_MUX_OUT
CHR_EVENT_CLOSED = QEMUChrEvent.CHR_EVENT_CLOSED


class ChardevFeature(enum.IntEnum):
    """What a chardev instance can do (ChardevFeature)."""

    QEMU_CHAR_FEATURE_RECONNECTABLE = 0  # a socket that may connect again
    QEMU_CHAR_FEATURE_FD_PASS = 1  # SCM_RIGHTS (unix sockets)
    QEMU_CHAR_FEATURE_REPLAY = 2  # record/replay (not emulated)
    QEMU_CHAR_FEATURE_GCONTEXT = 3  # its I/O can run in another context


QEMU_CHAR_FEATURE_RECONNECTABLE = ChardevFeature.QEMU_CHAR_FEATURE_RECONNECTABLE
QEMU_CHAR_FEATURE_FD_PASS = ChardevFeature.QEMU_CHAR_FEATURE_FD_PASS
QEMU_CHAR_FEATURE_GCONTEXT = ChardevFeature.QEMU_CHAR_FEATURE_GCONTEXT

#: The order QEMU 7.2 lists backend drivers in (its QOM type table), which
#: query-chardev-backends reverses and ``-chardev help`` keeps.
_QEMU_DRIVER_ORDER = (
    "stdio", "ringbuf", "mux", "pipe", "qemu-vdagent", "null", "msmouse", "socket", "vc",
    "parallel", "udp", "memory", "file", "serial", "wctablet", "pty", "testdev",
)  # fmt: skip

#: The module defining each backend class, loaded on first use
#: (module_load_qom): creating one chardev loads only its own backend.
_BACKEND_MODULES = {
    "chardev-null": "chardev.char_null",
    "chardev-ringbuf": "chardev.char_ringbuf",
    "chardev-memory": "chardev.char_ringbuf",
    "chardev-fd": "chardev.char_fd",
    "chardev-file": "chardev.char_file",
    "chardev-pipe": "chardev.char_pipe",
    "chardev-stdio": "chardev.char_stdio",
    "chardev-socket": "chardev.char_socket",
    "chardev-mux": "chardev.char_mux",
    "chardev-pair": "chardev.char_pair",
}

_types: dict[str, type[Chardev]] = {}


def type_register(cls: type[Chardev]) -> type[Chardev]:
    """Class decorator: make ``cls`` known by its ``typename`` (type_init)."""
    assert _BACKEND_MODULES.get(cls.typename, cls.__module__) == cls.__module__, (
        f"{cls.typename} is listed in _BACKEND_MODULES under another module"
    )
    _types[cls.typename] = cls
    return cls


def chardev_types() -> dict[str, type[Chardev]]:
    """Every registered backend class by type name, loading all modules."""
    for name in dict.fromkeys(_BACKEND_MODULES.values()):
        importlib.import_module(name)
    return _types


def chardev_type(typename: str) -> Optional[type[Chardev]]:
    """The backend class registered as ``typename``, loading only its module."""
    module = _BACKEND_MODULES.get(typename)
    if module is not None:
        importlib.import_module(module)
    return _types.get(typename)


# ---------------------------------------------------------------- global state


class ChardevState:
    """QEMU's chardev globals, in one object a test can build fresh."""

    def __init__(self) -> None:
        #: protected by the BQL: the children of QEMU's /chardevs container
        self.chardevs: dict[str, Chardev] = {}
        #: protected by the BQL: the container's property table, whose layout
        #: gives query-chardev its order
        self.order = GStrHashSet()
        #: char-mux.c: false between suspend_mux_open() and resume_mux_open()
        self.muxes_opened = True
        #: char-stdio.c: only one stdio chardev at a time
        self.stdio_in_use = False
        #: the mux escape character (-echr), C-a by default
        self.term_escape_char = 0x01
        #: the clock of reconnect timers (tests drive QEMU_CLOCK_VIRTUAL)
        self.timer_clock: QEMUClockType = QEMU_CLOCK_REALTIME
        #: installed by system/: what mux's ``C-a x`` runs (qmp_quit)
        self.exit_request: Optional[Callable[[], None]] = None
        #: installed by monitor/: attach an HMP monitor to a ``mon:`` mux
        self.monitor_init_hmp: Optional[Callable[[Chardev], object]] = None


class _Current:
    state: Optional[ChardevState] = None


_current = _Current()


def qemu_chr_state() -> ChardevState:
    """The chardev globals, created on first use (as container_get does)."""
    if _current.state is None:
        _current.state = ChardevState()
    return _current.state


def qemu_chr_cleanup() -> None:
    """Destroy every chardev and forget the globals (qemu_chr_cleanup)."""
    state = _current.state
    if state is None:
        return
    for label in list(state.order):
        qemu_chr_delete(state.chardevs[label])
    _current.state = None


# ---------------------------------------------------------------- the base class


class Chardev:
    """A character device backend (struct Chardev + ChardevClass).

    Subclasses override the ``chr_*`` hooks QEMU keeps in ChardevClass.  A
    class that overrides :meth:`chr_update_read_handler` can run its I/O in
    any context and gets QEMU_CHAR_FEATURE_GCONTEXT, as in char_init().
    """

    typename: ClassVar[str] = "chardev"
    #: the backend kind its command-line parser produces
    kind: ClassVar[str] = "null"
    abstract: ClassVar[bool] = True
    #: internal classes cannot be created by name (ChardevClass.internal)
    internal: ClassVar[bool] = False
    #: lock class of chr_write_lock (a mux nests its base's lock inside its own)
    write_lock_class: ClassVar[str] = "chr_write_lock"

    def __init__(self, label: str, gcontext: Optional[AioContext]) -> None:
        self.label = label
        self.filename: Optional[str] = None
        #: the context a frontend bound the chardev to; None is the default
        self.gcontext = gcontext
        #: written under the BQL by qemu_chr_fe_init/deinit
        self.be: Optional[CharBackend] = None
        #: set by CHR_EVENT_OPENED, cleared by CHR_EVENT_CLOSED
        self.be_open = False
        self.features: set[ChardevFeature] = set()
        if type(self).chr_update_read_handler is not Chardev.chr_update_read_handler:
            self.features.add(QEMU_CHAR_FEATURE_GCONTEXT)
        self.chr_write_lock = QemuMutex(self.write_lock_class)
        #: protected by chr_write_lock
        self.logfd = -1
        self.sources = ChrSources(label)
        self.sources.add_bh("chr_input", self.chr_input_bh)
        #: input the frontend has not taken yet; only the context thread
        self.pending = b""
        #: True while input is being offered to the frontend (context thread):
        #: an accept_input from inside its read callback must not nest
        self.offering = False
        self.finalized = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.label}>"

    # ------------------------------------------------------------ class hooks

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        """Fill the QAPI backend data from command-line options (cc->parse)."""

    def open(self, data: dict[str, Any]) -> bool:
        """Open the backend; returns be_opened.  Raises QapiError (cc->open)."""
        return True

    def chr_write(self, buf: bytes) -> int:
        """Write with chr_write_lock held: count (0 = would block) or -errno."""
        return len(buf)

    def chr_wait_writable(self) -> None:
        """Block until chr_write can make progress (write_all after a 0)."""
        raise AssertionError(f"{self.typename} never reports a full buffer")

    def chr_update_read_handler(self) -> None:
        """The context changed (cc->chr_update_read_handler); see GCONTEXT."""

    def chr_read_poll_update(self) -> None:
        """Start or stop reading the source, as the frontend can take input.

        QEMU re-evaluates this in every main-loop iteration (the read
        watch's prepare); here it runs in the context thread after a read,
        after accept_input and after the handlers change.
        """

    def chr_accept_input(self) -> None:
        """The frontend can take input again (cc->chr_accept_input)."""

    def chr_be_event(self, event: QEMUChrEvent) -> None:
        """Deliver an event to the frontend (cc->chr_be_event)."""
        be = self.be
        if be is not None and be.chr_event is not None:
            be.chr_event(be.opaque, event)

    def chr_add_watch(self, cond: int, func: WatchFunc, opaque: Any) -> int:
        """Watch the output side; a tag, or 0 if the backend cannot."""
        return 0

    def chr_remove_watch(self, tag: int) -> bool:
        return self.sources.remove_watch(tag)

    def get_msgfds(self, num: int) -> Optional[list[int]]:
        """Take up to ``num`` fds received with the data; None: unsupported."""
        return None

    def chr_set_echo(self, echo: bool) -> None:
        """Turn local echo on or off (stdio)."""

    def chr_set_fe_open(self, fe_open: bool) -> None:
        """The frontend opened or closed its side."""

    def chr_disconnect(self) -> None:
        """Drop the current client, if the backend has clients (cc->chr_disconnect)."""

    def fe_attach(self, be: CharBackend) -> int:
        """Accept ``be`` as a frontend; returns its tag (qemu_chr_fe_init)."""
        if self.be is not None:
            raise error_setg("Device '%s' is in use", self.label)
        self.be = be
        return 0

    def fe_detach(self, be: CharBackend) -> None:
        """Forget frontend ``be`` (qemu_chr_fe_deinit)."""
        if self.be is be:
            self.be = None

    def fe_take_focus(self, be: CharBackend) -> None:
        """Give ``be`` the input focus (only a mux has several frontends)."""

    def is_busy(self) -> bool:
        """chardev-remove refuses a busy chardev (qemu_chr_is_busy)."""
        return self.be is not None

    def finalize(self) -> None:
        """Release everything (instance_finalize); main thread, BQL held."""
        self.finalized = True
        self.sources.destroy()
        if self.be is not None:
            self.be.chr = None
        if self.logfd >= 0:
            os.close(self.logfd)
            self.logfd = -1

    # ------------------------------------------------------------ input

    def chr_input_bh(self) -> None:
        """Context thread: offer pending input again, then resume reading."""
        if self.finalized:
            return
        was, self.offering = self.offering, True
        try:
            self.chr_accept_input()
            qemu_chr_be_flush(self)
        finally:
            self.offering = was
        self.chr_read_poll_update()


def qemu_chr_has_feature(chr: Chardev, feature: ChardevFeature) -> bool:
    return feature in chr.features


def qemu_chr_set_feature(chr: Chardev, feature: ChardevFeature) -> None:
    chr.features.add(feature)


# ---------------------------------------------------------------- backend side


def qemu_chr_be_event(chr: Chardev, event: QEMUChrEvent) -> None:
    """Raise an event from the backend; OPENED/CLOSED track ``be_open``."""
    if event == CHR_EVENT_OPENED:
        chr.be_open = True
    elif event == CHR_EVENT_CLOSED:
        chr.be_open = False
    trace_chr_be_event(chr.label, event.name)
    chr.chr_be_event(event)


def qemu_chr_be_can_write(chr: Chardev) -> int:
    """The frontend's can_read: >0 means it wants input now."""
    be = chr.be
    if be is None or be.chr_can_read is None:
        return 0
    return int(be.chr_can_read(be.opaque))


def qemu_chr_be_write(chr: Chardev, data: bytes) -> None:
    """Offer input read from the source; what the frontend leaves is kept.

    Without a frontend the data is dropped, as in QEMU.  Context thread.
    """
    be = chr.be
    if be is None or be.chr_read is None:
        return
    chr.pending += data
    qemu_chr_be_flush(chr)


def qemu_chr_be_flush(chr: Chardev) -> None:
    """Offer ``pending`` once if the frontend can take input (context thread).

    What it leaves stays pending until it calls accept_input again.
    """
    if not chr.pending or qemu_chr_be_can_write(chr) <= 0:
        return
    be = chr.be
    if be is None or be.chr_read is None:
        chr.pending = b""
        return
    data = chr.pending
    was, chr.offering = chr.offering, True
    try:
        taken = be.chr_read(be.opaque, data)
    finally:
        chr.offering = was
    n = len(data) if taken is None else taken
    assert 0 <= n <= len(data), f"read callback took {n} of {len(data)} bytes"
    if trace_chr_be_write.state:
        trace_chr_be_write(chr.label, len(data), n)
    chr.pending = data[n:]


def qemu_chr_be_update_read_handlers(chr: Chardev, context: Optional[AioContext]) -> None:
    """Bind the chardev's I/O to ``context`` (None: the default context)."""
    assert QEMU_CHAR_FEATURE_GCONTEXT in chr.features or context is None, chr
    chr.gcontext = context
    chr.sources.set_context(context)
    chr.chr_update_read_handler()


# ---------------------------------------------------------------- writing


def _qemu_chr_write_log(chr: Chardev, buf: bytes) -> None:
    """Best effort, as QEMU's: errors writing the log are ignored."""
    done = 0
    while chr.logfd >= 0 and done < len(buf):
        try:
            done += os.write(chr.logfd, buf[done:])
        except OSError:
            return


def qemu_chr_write(chr: Chardev, buf: bytes, write_all: bool) -> int:
    """Write ``buf``; returns the count written or a negative errno.

    Without ``write_all`` one backend write is tried (0: it would block).
    With it, the caller blocks until everything is written or an error.
    """
    offset = 0
    res = 0
    with chr.chr_write_lock:
        while offset < len(buf):
            res = chr.chr_write(buf[offset:])
            if res == 0 and write_all:
                chr.chr_wait_writable()
                continue
            if res <= 0:
                break
            offset += res
            if not write_all:
                break
        if offset > 0:
            _qemu_chr_write_log(chr, buf[:offset])
        elif res < 0:
            _qemu_chr_write_log(chr, buf)
    if trace_chr_write.state:
        trace_chr_write(chr.label, len(buf), res if res < 0 else offset)
    return res if res < 0 else offset


def qemu_chr_write_all(chr: Chardev, buf: bytes) -> int:
    return qemu_chr_write(chr, buf, True)


# ---------------------------------------------------------------- registry


def qemu_chr_find(name: str) -> Optional[Chardev]:
    """The chardev called ``name``, or None."""
    return qemu_chr_state().chardevs.get(name)


def qemu_chr_list() -> list[Chardev]:
    """Chardevs in QEMU's container order (object_child_foreach)."""
    state = qemu_chr_state()
    return [state.chardevs[label] for label in state.order]


def _chardev_add(chr: Chardev) -> None:
    state = qemu_chr_state()
    if chr.label in state.chardevs:
        chr.finalize()
        raise error_setg(
            "attempt to add duplicate property '%s' to object (type 'container')", chr.label
        )
    state.chardevs[chr.label] = chr
    state.order.add(chr.label)


def qemu_chr_delete(chr: Chardev) -> None:
    """Unlink the chardev and finalize it (object_unparent)."""
    state = qemu_chr_state()
    if state.chardevs.get(chr.label) is chr:
        del state.chardevs[chr.label]
        state.order.discard(chr.label)
    chr.finalize()


def char_get_class(driver: str) -> type[Chardev]:
    """The backend class for ``driver``, or QEMU's error for a bad name."""
    cls = chardev_type(f"chardev-{driver}")
    if cls is None or cls.internal:
        raise error_setg("'%s' is not a valid char driver name", driver)
    if cls.abstract:
        raise error_setg("Parameter 'driver' expects a non-abstract device type")
    return cls


def chardev_driver_names() -> list[str]:
    """Creatable driver names in QEMU 7.2's type-table order."""
    names = [t[8:] for t, cls in chardev_types().items() if not cls.internal and not cls.abstract]
    rank = {name: i for i, name in enumerate(_QEMU_DRIVER_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def qemu_chr_help_text() -> str:
    """What ``-chardev help`` prints."""
    return "Available chardev backend types: \n" + "".join(
        f"  {name}\n" for name in chardev_driver_names()
    )


def _strerror(e: OSError) -> str:
    return os.strerror(e.errno) if e.errno else str(e)


def qemu_char_open(chr: Chardev, backend: dict[str, Any]) -> bool:
    """Open the log file, then the backend; returns be_opened."""
    data = backend.get("data", {})
    logfile = data.get("logfile")
    if logfile is not None:
        flags = os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC
        flags |= os.O_APPEND if data.get("logappend") else os.O_TRUNC
        try:
            chr.logfd = os.open(logfile, flags, 0o666)
        except OSError as e:
            raise error_setg("Could not create '%s': %s", logfile, _strerror(e)) from None
    return chr.open(data)


def chardev_new(
    label: str, cls: type[Chardev], backend: dict[str, Any], gcontext: Optional[AioContext]
) -> Chardev:
    """Create and open a chardev, not yet registered; nothing is left on error."""
    chr = cls(label, gcontext)
    try:
        be_opened = qemu_char_open(chr, backend)
    except BaseException:
        chr.finalize()
        raise
    if chr.filename is None:
        chr.filename = cls.typename[len("chardev-") :]
    if be_opened:
        qemu_chr_be_event(chr, CHR_EVENT_OPENED)
    return chr


def qemu_chardev_new(
    label: str, cls: type[Chardev], backend: dict[str, Any], gcontext: Optional[AioContext]
) -> Chardev:
    """Create, open and register a chardev (qemu_chardev_new)."""
    chr = chardev_new(label, cls, backend, gcontext)
    _chardev_add(chr)
    return chr


def chr_info_report(msg: str) -> None:
    """QEMU's info_report(): an ``info:`` line on stderr."""
    error_report(f"info: {msg}")
