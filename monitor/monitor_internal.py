"""The monitor's data structures and globals (monitor/monitor-internal.h).

``Monitor`` is the part common to QMP and HMP; ``MonitorQMP`` and
``MonitorHMP`` extend it.  QEMU's file-scope globals of monitor.c and qmp.c
(``mon_list``, ``monitor_lock``, ``coroutine_mon``, ``monitor_destroyed``,
``mon_iothread``, the dispatcher coroutine and its flags, the event throttle
state, the two command lists) live in one :class:`MonitorGlobals` object so a
test can build a fresh one.  Every shared field says which lock protects it.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Callable, Optional

from chardev.char_fe import CharBackend
from qapi.error import QapiError
from qapi.qmp_dispatch import QmpDispatchEnv
from qapi.qmp_registry import QmpCommandList
from qapi.schema import Schema
from qom.object import Object
from util.aio import QEMUBH
from util.atomic import QAtomic
from util.coroutine import Coroutine
from util.iothread import IOThread
from util.thread import QemuEvent, QemuMutex
from util.timer import QEMU_CLOCK_REALTIME, QEMUClockType, QEMUTimer

if TYPE_CHECKING:
    from qapi.json_streamer import JSONMessageParser
    from util.readline import ReadLineState

#: include/monitor/monitor.h: in-band requests a QMP monitor queues at most.
QMP_REQ_QUEUE_LEN_MAX = 8


class Monitor(Object):
    """State common to every monitor (struct Monitor), a QOM object.

    QEMU 11.1 makes the monitor itself the object (``monitor``, abstract;
    ``monitor-qmp``, ``monitor-hmp``): ``object-add`` creates one, its
    finalize frees it.  Monitors made by -mon, -qmp or monitor-add are
    objects too, outside the tree (no parent): the emulator keeps 7.2's
    lifecycle for them.
    """

    TYPE = "monitor"

    #: only a QMP monitor queues requests; this empty stand-in lets the
    #: dispatcher peek at every monitor's queue in one pass (pop_any)
    qmp_requests: Sequence[QMPRequest] = ()

    def __init__(self, is_qmp: bool, skip_flush: bool, use_io_thread: bool) -> None:
        super().__init__()
        self.chr = CharBackend()
        self.is_qmp = is_qmp
        self.skip_flush = skip_flush
        self.use_io_thread = use_io_thread
        #: read by the chardev's can_read in its context; changed from any thread
        self.suspend_cnt: QAtomic[int] = QAtomic(0, "suspend_cnt")
        self.mon_lock = QemuMutex("mon_lock")
        #: protected by mon_lock
        self.outbuf = bytearray()
        #: protected by mon_lock: the pending output watch tag, 0 when none
        self.out_watch = 0
        #: written under BQL and mon_lock (mux focus)
        self.mux_out = False
        #: protected by mon_lock: fds received with getfd, by name
        self.fds: dict[str, int] = {}
        self.reset_seen = False
        #: hotplug: the id given by -mon id= or monitor-add, if any
        self.id: Optional[str] = None
        #: hotplug: created by monitor-add (only those can be removed)
        self.dynamic = False
        #: hotplug: set under monitor_lock when monitor-remove unlinks it;
        #: read by the dispatcher without it
        self.dead: QAtomic[bool] = QAtomic(False, "dead")
        #: the QOM path of the monitor's current CPU (HMP ``cpu``), BQL
        self.mon_cpu_path: Optional[str] = None
        #: QOM property ``chardev`` (set before complete)
        self.chardev_id: Optional[str] = None
        #: QOM monitors only (11.1): the persistent BH monitor_resume
        #: schedules, created at complete, deleted at finalize; None for
        #: 7.2-style monitors, which schedule a one-shot BH
        self.accept_input_bh: Optional[QEMUBH] = None

    @property
    def name(self) -> str:
        return self.id or self.chr.label()

    def label_locks(self) -> None:
        """Name this monitor's locks and flags after it (once its chardev is
        known), so schedules and deadlock reports can say whose they are."""
        for obj in self.sync_objects():
            obj.label = self.name

    def sync_objects(self) -> list[Any]:
        return [self.suspend_cnt, self.mon_lock, self.dead]

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


class MonitorQMP(Monitor):
    """A QMP monitor (struct MonitorQMP)."""

    TYPE = "monitor-qmp"

    def __init__(self, use_io_thread: bool = False, pretty: bool = False) -> None:
        super().__init__(is_qmp=True, skip_flush=False, use_io_thread=use_io_thread)
        self.pretty = pretty
        #: QOM property ``close-action``: "none" or "delete" (11.1)
        self.close_action = "none"
        #: the I/O thread's setup BH has not run yet (written by the main
        #: loop and that BH, read by object-del)
        self.setup_pending: QAtomic[bool] = QAtomic(False, "setup_pending")
        #: chardev context only: close-action=delete has scheduled the delete
        self.delete_pending = False
        self.parser: Optional[JSONMessageParser] = None
        #: the negotiation list until qmp_capabilities succeeds, then the full list
        self.commands: Optional[QmpCommandList] = None
        self.capab_offered: set[str] = set()
        #: chardev context only: the serialised greeting, built at the first
        #: OPENED (version and capability offer never change for a monitor)
        self.greeting: Optional[str] = None
        self.capab: set[str] = set()
        self.qmp_queue_lock = QemuMutex("qmp_queue_lock")
        #: protected by qmp_queue_lock
        self.qmp_requests: deque[QMPRequest] = deque()
        #: protected by qmp_queue_lock: serialised replies waiting for the
        #: responder BH (bugs.md 18 switch queue_replies_for_iothread; 2.12)
        self.qmp_responses: deque[str] = deque()
        #: a client got OPENED and no CLOSED yet (chardev context only); it
        #: counts in mon_refcount until it goes
        self.client_open = False
        #: bumped under mon_lock at every CHR_EVENT_OPENED and CLOSED; only read
        #: with the session check on
        self.session = 0
        #: emulator switch: drop replies meant for an earlier connection (bugs.md 3)
        self.session_generation_check = False
        #: main loop only: the session of the in-band request being dispatched
        self.dispatch_session = 0

    def sync_objects(self) -> list[Any]:
        return [*super().sync_objects(), self.qmp_queue_lock]


class MonitorHMP(Monitor):
    """A human monitor (struct MonitorHMP)."""

    TYPE = "monitor-hmp"

    def __init__(self, use_readline: bool = True, skip_flush: bool = False) -> None:
        super().__init__(is_qmp=False, skip_flush=skip_flush, use_io_thread=False)
        self.use_readline = use_readline
        self.rs: Optional[ReadLineState] = None


# Plain classes rather than dataclasses: a dataclass compiles its methods
# when its module is imported (about 0.2 ms each), which every start-up pays.


class QMPRequest:
    """A queued in-band request, or the parse error to report in its place.

    ``err`` set means a parse error; otherwise ``req`` is the parsed value,
    which may be anything JSON, ``None`` (null) included.
    """

    def __init__(
        self,
        mon: MonitorQMP,
        req: Any = None,
        err: Optional[QapiError] = None,
        session: int = 0,
    ) -> None:
        self.mon = mon
        self.req = req
        self.err = err
        self.session = session


class MonFdsetFd:
    """One fd in an fd set; ``removed`` fds are closed at the next cleanup."""

    def __init__(self, fd: int, opaque: Optional[str] = None, removed: bool = False) -> None:
        self.fd = fd
        self.opaque = opaque
        self.removed = removed


class MonFdset:
    """An fd set created by add-fd (fds.c); protected by mon_fdsets_lock."""

    def __init__(self, id: int) -> None:
        self.id = id
        #: newest first, as QEMU inserts at the head
        self.fds: list[MonFdsetFd] = []
        self.dup_fds: list[int] = []


class MonitorQAPIEventState:
    """Throttle state of one (event, key) pair; protected by monitor_lock."""

    def __init__(self, event: str, key: Optional[str]) -> None:
        self.event = event
        self.key = key
        self.timer: Optional[QEMUTimer] = None
        #: the event held back until the timer fires, if any
        self.qdict: Optional[dict[str, Any]] = None


class MonitorGlobals:
    """QEMU's monitor globals, in one object (see module docstring)."""

    def __init__(self, schema: Optional[Schema] = None) -> None:
        self.monitor_lock = QemuMutex("monitor_lock")
        #: protected by monitor_lock; the dispatcher rotates it for round-robin
        self.mon_list: list[Monitor] = []
        #: protected by monitor_lock: Coroutine -> current Monitor
        self.coroutine_mon: dict[Coroutine, Monitor] = {}
        #: protected by monitor_lock
        self.monitor_destroyed = False
        #: protected by monitor_lock: monitors that have an id, from creation
        #: (before they join mon_list) until they are removed
        self.mon_ids: dict[str, Monitor] = {}
        self.mon_iothread: Optional[IOThread] = None
        self.qmp_dispatcher_co: QAtomic[Optional[Coroutine]] = QAtomic(None, "qmp_dispatcher_co")
        #: protected by monitor_lock
        self.qmp_dispatcher_co_shutdown = False
        self.qmp_dispatcher_co_busy: QAtomic[bool] = QAtomic(False, "qmp_dispatcher_co_busy")
        #: era 2.12 (monitor/qmp_bh.py): the dispatcher BH in iohandler_ctx,
        #: and the QMP monitors' chardev read handler
        self.qmp_dispatcher_bh: Optional[QEMUBH] = None
        self.qmp_read: Optional[Callable[[Any, bytes], int]] = None
        #: bugs.md 18 (queue_replies_for_iothread): the responder BH in the
        #: monitor I/O thread, created with it
        self.qmp_respond_bh: Optional[QEMUBH] = None
        #: how many QMP monitors may have a queued request: counted before a
        #: queue turns non-empty and after it turns empty, under its
        #: qmp_queue_lock, so it is never below the true number
        self.qmp_queues_pending: QAtomic[int] = QAtomic(0, "qmp_queues_pending")
        #: the monitor whose queue turned non-empty last (a hint, checked
        #: under its qmp_queue_lock before use)
        self.qmp_queue_last: QAtomic[Optional[Monitor]] = QAtomic(None, "qmp_queue_last")
        #: the monitor whose request the dispatcher is running (written by the
        #: dispatcher, read by monitor-remove): a monitor removing itself is
        #: destroyed after that request's reply
        self.dispatcher_servicing: QAtomic[Optional[Monitor]] = QAtomic(
            None, "dispatcher_servicing"
        )
        #: protected by monitor_lock
        self.monitor_qapi_event_state: dict[tuple[str, Optional[str]], MonitorQAPIEventState] = {}
        #: the clock throttling uses: REALTIME, or VIRTUAL under test (qtest)
        self.event_clock: QEMUClockType = QEMU_CLOCK_REALTIME
        self.qmp_commands = QmpCommandList()
        self.qmp_cap_negotiation_commands = QmpCommandList()
        #: the QAPI schema: events are built from it, introspection reports it
        self.schema = schema
        #: query-qmp-schema's result, computed once
        self.schema_info: Optional[list[dict[str, Any]]] = None
        #: how the greeting gets the version (query-version's handler)
        self.query_version: Optional[Callable[[], dict[str, Any]]] = None
        #: system/ tells whether the VM runs (fd sets are kept while it does not)
        self.runstate_is_running: Callable[[], bool] = lambda: True
        self.mon_fdsets_lock = QemuMutex("mon_fdsets_lock")
        #: protected by mon_fdsets_lock, sorted by id
        self.mon_fdsets: list[MonFdset] = []
        #: protected by mon_fdsets_lock: monitors (QMP or HMP) with a client
        #: connected; fd sets nothing uses are kept while there is one
        self.mon_refcount = 0
        #: what qmp_dispatch needs from monitor/ and system/ (set at init)
        self.dispatch_env: Optional[QmpDispatchEnv] = None
        #: x-oob-test: a pending release, consumed by the in-band lock it frees
        self.x_oob_test_release = QemuEvent()
