"""In-process QMP fixtures: the monitor globals and commands as ``qemu_init``
builds them, QMP monitors on in-memory chardev pairs, and a main-loop driver
with a deadline.

The test thread is the main loop thread (it holds the BQL, as QEMU's main
thread does); monitors whose chardev can move run their I/O in the real
``mon_iothread``.  Nothing here sleeps: :func:`run_until` blocks in the main
loop, woken by the work itself or by a short tick timer, until a condition
holds or the deadline passes.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any, Callable, Optional, Union

import pytest

from chardev.char import QEMU_CHAR_FEATURE_GCONTEXT, qemu_chr_cleanup
from chardev.char_pair import PairChardev, PairClient, qemu_chr_new_pair
from monitor.hmp import monitor_init_hmp
from monitor.monitor import (
    monitor_cleanup,
    monitor_globals,
    monitor_globals_initialised,
    monitor_init,
    monitor_init_globals,
)
from monitor.monitor_internal import MonitorGlobals, MonitorHMP, MonitorQMP
from qapi.schema import qapi_schema
from system.commands import qmp_init_commands
from system.machine import machine_init
from system.runstate import (
    MachinePhase,
    phase_advance,
    phase_check,
    qemu_machine_creation_done,
    runstate_init,
    runstate_is_running,
)
from util.aio import aio_timer_new
from util.atomic import qatomic_read, qatomic_set
from util.main_loop import MainLoop, main_loop_wait, qemu_get_aio_context
from util.timer import (
    QEMU_CLOCK_REALTIME,
    SCALE_MS,
    QEMUTimer,
    qemu_clock_get_ms,
    timer_del,
    timer_mod,
    timer_mod_ns,
)

#: seconds any wait may take before the test fails
DEADLINE = 5.0

#: a co-sleep long enough never to end by itself within a test
FOREVER_MS = 600_000


def run_until(
    cond: Callable[[], bool], what: Callable[[], object] = lambda: "", timeout: float = DEADLINE
) -> None:
    """Run the main loop until ``cond()`` holds; fail after ``timeout`` seconds.

    A 10 ms tick bounds each blocking wait, so a condition changed by the
    I/O thread without waking the main loop is still seen.
    """
    tick = aio_timer_new(
        qemu_get_aio_context(), QEMU_CLOCK_REALTIME, SCALE_MS, _nothing, None, "test-tick"
    )
    deadline = time.monotonic() + timeout
    try:
        while not cond():
            assert time.monotonic() < deadline, f"condition not reached: {what()}"
            timer_mod(tick, qemu_clock_get_ms(QEMU_CLOCK_REALTIME) + 10)
            main_loop_wait()
    finally:
        timer_del(tick)


def run_passes(n: int = 10) -> None:
    """A few non-blocking main-loop passes (for "nothing more happens" checks)."""
    for _ in range(n):
        main_loop_wait(nonblocking=True)


def _nothing(opaque: Any) -> None:
    """Waking the loop is all the tick does."""


def co_sleep_timers() -> list[QEMUTimer]:
    """The pending timers of ``x-debug-co-sleep`` commands (one per sleeper)."""
    tl = qemu_get_aio_context().tlg[QEMU_CLOCK_REALTIME]
    with tl.lock:
        return [t for t in tl.active if t.name == "x-debug-co-sleep"]


def wake_co_sleepers() -> int:
    """Make every pending ``x-debug-co-sleep`` expire now; returns how many."""
    timers = co_sleep_timers()
    for t in timers:
        timer_mod_ns(t, 0)
    return len(timers)


Message = dict[str, Any]


class QmpPeer:
    """The client side of a QMP monitor on a chardev pair."""

    def __init__(self, mon: MonitorQMP, chr: PairChardev, client: PairClient) -> None:
        self.mon = mon
        self.chr = chr
        self.client = client
        self.buf = bytearray()
        #: parsed messages received and not yet taken
        self.msgs: list[Message] = []
        #: events :meth:`reply` skipped while waiting for a reply
        self.events: list[Message] = []
        self._next_id = 0

    # -- input
    def send(self, data: Union[bytes, str, Message], fds: tuple[int, ...] = ()) -> None:
        if isinstance(data, dict):
            data = json.dumps(data) + "\n"
        if isinstance(data, str):
            data = data.encode()
        self.client.send(data, fds)

    def cmd(
        self,
        name: str,
        arguments: Optional[dict[str, Any]] = None,
        *,
        req_id: Any = None,
        oob: bool = False,
    ) -> Any:
        """Send one request; returns its id."""
        if req_id is None:
            self._next_id += 1
            req_id = f"{self.mon.name}-{self._next_id}"
        msg: Message = {("exec-oob" if oob else "execute"): name, "id": req_id}
        if arguments is not None:
            msg["arguments"] = arguments
        self.send(msg)
        return req_id

    # -- output
    def poll(self) -> list[Message]:
        """Take what the monitor wrote so far (never blocks); returns ``msgs``."""
        self.buf += self.client.recv()
        while b"\n" in self.buf:
            line, _, rest = bytes(self.buf).partition(b"\n")
            self.buf = bytearray(rest)
            assert line.endswith(b"\r"), f"QMP lines end with CRLF: {line!r}"
            self.msgs.append(json.loads(line))
        return self.msgs

    def wait_msgs(self, n: int) -> list[Message]:
        """Run the main loop until ``n`` messages arrived; take and return them."""
        run_until(lambda: len(self.poll()) >= n, lambda: (self.msgs, bytes(self.buf)))
        out, self.msgs = self.msgs[:n], self.msgs[n:]
        return out

    def recv(self) -> Message:
        return self.wait_msgs(1)[0]

    def reply(self, req_id: Any) -> Message:
        """Wait for the reply to ``req_id``, keeping events that come first
        in :attr:`events`; any other reply before it fails."""
        while True:
            msg = self.recv()
            if "event" in msg:
                self.events.append(msg)
                continue
            assert msg.get("id") == req_id, f"expected the reply to {req_id!r}, got {msg}"
            return msg

    def execute(self, name: str, arguments: Optional[dict[str, Any]] = None, **kw: Any) -> Message:
        return self.reply(self.cmd(name, arguments, **kw))

    def take_all(self) -> list[Message]:
        """Everything received so far (events :meth:`reply` skipped first),
        without running the loop."""
        out = self.events + self.poll()
        self.events, self.msgs = [], []
        return out

    def negotiate(self, oob: bool = False) -> None:
        args = {"enable": ["oob"]} if oob else None
        assert self.execute("qmp_capabilities", args)["return"] == {}

    # -- connection
    def hangup(self, wait: bool = True) -> None:
        """The client closes its end; by default, wait until the chardev saw it."""
        self.client.hangup()
        if wait:
            run_until(lambda: not self.connected(), lambda: "the hang-up was never seen")

    def connected(self) -> bool:
        with self.chr.chr_write_lock:
            return qatomic_read(self.chr.connected)

    def reconnect(self) -> Message:
        """A new client connects; returns its greeting."""
        self.buf.clear()
        self.msgs.clear()
        self.client.connect()
        greeting = self.recv()
        assert "QMP" in greeting, greeting
        return greeting


class HmpPeer:
    """The client side of an HMP monitor on a chardev pair."""

    def __init__(self, mon: MonitorHMP, client: PairClient) -> None:
        self.mon = mon
        self.client = client
        self.out = bytearray()

    def type(self, line: str) -> None:
        self.client.send(line.encode() + b"\r")

    def wait_for(self, text: bytes) -> bytes:
        """Run the main loop until ``text`` was printed; returns all output so far."""

        def seen() -> bool:
            self.out += self.client.recv()
            return text in self.out

        run_until(seen, lambda: bytes(self.out))
        out = bytes(self.out)
        self.out.clear()
        return out


class QmpEnv:
    """Monitor globals plus helpers to add monitors on chardev pairs."""

    def __init__(self, g: MonitorGlobals) -> None:
        self.g = g

    def in_mon_list(self, mon: Any) -> bool:
        with self.g.monitor_lock:
            return mon in self.g.mon_list

    def add_qmp(
        self,
        label: str,
        *,
        io_thread: bool = True,
        negotiate: bool = True,
        oob: bool = False,
        session_check: bool = False,
        out_capacity: Optional[int] = None,
    ) -> QmpPeer:
        """A QMP monitor on a new pair, greeted (and negotiated if asked).

        ``io_thread=False`` takes the GCONTEXT feature away from the pair,
        so the monitor is served by the main loop and offers no OOB.
        """
        chr, client = qemu_chr_new_pair(label, out_capacity=out_capacity)
        if not io_thread:
            chr.features.discard(QEMU_CHAR_FEATURE_GCONTEXT)
        mon = monitor_init(label, "control", False, False, session_check=session_check)
        assert isinstance(mon, MonitorQMP) and mon.use_io_thread == io_thread
        peer = QmpPeer(mon, chr, client)
        run_until(lambda: self.in_mon_list(mon), lambda: "monitor never joined mon_list")
        greeting = peer.recv()
        assert greeting["QMP"]["capabilities"] == (["oob"] if io_thread else []), greeting
        if negotiate:
            peer.negotiate(oob)
        return peer

    def add_hmp(self, label: str) -> HmpPeer:
        chr, client = qemu_chr_new_pair(label)
        peer = HmpPeer(monitor_init_hmp(chr, True), client)
        peer.wait_for(b"(qemu) ")
        return peer


def make_monitor_globals() -> MonitorGlobals:
    """What ``qemu_init`` sets up before creating monitors, machine running."""
    runstate_init(True)
    machine_init(None)
    g = monitor_init_globals(qapi_schema(), lambda: phase_check(MachinePhase.MACHINE_READY))
    g.runstate_is_running = runstate_is_running
    qmp_init_commands(g)
    phase_advance(MachinePhase.MACHINE_CREATED)
    phase_advance(MachinePhase.ACCEL_CREATED)
    qemu_machine_creation_done()
    return g


def teardown_monitors() -> None:
    """``qemu_cleanup``'s monitor part; a sleeping coroutine command is woken first."""
    if monitor_globals_initialised():
        wake_co_sleepers()
        g = monitor_globals()
        co = qatomic_read(g.qmp_dispatcher_co)
        if co is not None and co.finished:
            # it died of an exception (reported, so the test fails anyway):
            # monitor_cleanup would wait for it for ever
            qatomic_set(g.qmp_dispatcher_co, None)
        monitor_cleanup()
    qemu_chr_cleanup()


@pytest.fixture
def qmp_env(main_loop: MainLoop) -> Iterator[QmpEnv]:
    """Fresh monitor globals and chardevs; torn down as ``qemu_cleanup`` does."""
    qemu_chr_cleanup()
    env = QmpEnv(make_monitor_globals())
    try:
        yield env
    finally:
        teardown_monitors()
