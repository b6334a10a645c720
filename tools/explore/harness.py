"""One explorer run: the whole emulator, its clients, under the baton scheduler.

A scenario is a plain function that receives a :class:`Setup`: it creates
QMP monitors on in-memory pair chardevs (``s.qmp("mon0")``) and registers
client bodies (``s.client("c0", body)``).  :func:`run_scenario` then brings
the emulator up as ``qemu-system-x86_64 -nodefaults -machine none`` would
(``qemu_init``), starts each client in a controlled thread, runs the main
loop until every client is done or a shutdown request ends it, tears the
emulator down (``qemu_cleanup``) and joins the clients.  Every thread runs
under util/sched.py, so the strategy decides the whole interleaving.

Client steps are thin and qemu.qmp-like (negotiate, send, reply, execute,
event, hang up, connect), written over the pair chardev with CRLF-ended
JSON lines as QEMU writes them.  A check that does not hold fails the run
with a stable, short reason ("wrong reply: ...", "lost reply: ..."); a
wait has a deadline on the virtual clock, which advances only when every
thread is blocked, so a reply that never comes is reported, never waited
for.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any, Callable, NoReturn, Optional

from chardev.char_pair import PairChardev, PairClient, qemu_chr_new_pair
from monitor.monitor import monitor_init_opts
from system import runstate as rs
from system.vl import qemu_cleanup, qemu_init, qemu_mon_opts, qemu_parse_args
from util.atomic import QAtomic, qatomic_inc, qatomic_read
from util.main_loop import main_loop_wait, qemu_notify_event
from util.qemu_option import qemu_opts_parse
from util.sched import SCHED
from util.thread import QemuEvent, QemuMutex, QemuThread

#: virtual seconds a client waits for a message before the run fails
REPLY_DEADLINE_S = 30.0

Message = dict[str, Any]


class Scenario:
    """A named scenario: its set-up function and the anchors it suggests."""

    __slots__ = ("anchors", "description", "fn", "name")

    def __init__(
        self, name: str, description: str, fn: Callable[[Setup], None], anchors: tuple[str, ...]
    ) -> None:
        self.name = name
        self.description = description
        self.fn = fn
        #: op labels (``op(object)``) where the guided strategy prefers to switch
        self.anchors = anchors


#: every registered scenario, by name
SCENARIOS: dict[str, Scenario] = {}


def scenario(
    name: str, description: str, anchors: Iterable[str] = ()
) -> Callable[[Callable[[Setup], None]], Callable[[Setup], None]]:
    """Register ``fn`` as scenario ``name`` (a decorator)."""

    def register(fn: Callable[[Setup], None]) -> Callable[[Setup], None]:
        if name in SCENARIOS:
            raise ValueError(f"scenario {name} is registered twice")
        SCENARIOS[name] = Scenario(name, description, fn, tuple(anchors))
        return fn

    return register


def fail(reason: str) -> NoReturn:
    """End the run with ``reason`` (the scheduler reports it and stops)."""
    SCHED.fail(reason)
    raise AssertionError("unreachable: SCHED.fail returns only by raising")


class QmpClient:
    """The client end of one QMP monitor's pair chardev.

    Messages that arrive while a step waits for something else are kept:
    replies by id in ``replies``, events in ``events`` (arrival order).
    """

    def __init__(self, label: str, chr: PairChardev, client: PairClient) -> None:
        self.label = label
        self.chr = chr
        self.client = client
        self.buf = bytearray()
        #: replies received and not yet taken, in arrival order
        self.replies: list[Message] = []
        #: events received and not yet taken, in arrival order
        self.events: list[Message] = []
        #: every reply id taken so far, in the order they arrived
        self.arrived: list[Any] = []
        self.session = 1
        self._next_id = 0
        self._greeting: Optional[Message] = None

    # ------------------------------------------------------------ reading

    def _message(self, what: str) -> Optional[Message]:
        """The next message; None at the end of the connection.

        Fails the run with ``lost reply: WHAT`` when nothing comes before
        the (virtual) deadline.
        """
        while True:
            line_end = self.buf.find(b"\n")
            if line_end >= 0:
                line = bytes(self.buf[: line_end + 1])
                del self.buf[: line_end + 1]
                try:
                    msg = json.loads(line)
                except ValueError:
                    fail(f"wrong reply: {self.label} sent a line that is not JSON: {line!r}")
                if not isinstance(msg, dict):
                    fail(f"wrong reply: {self.label} sent {line!r}, not an object")
                self._check_session(msg)
                return msg
            if not self.client.wait_output(1, REPLY_DEADLINE_S):
                data = self.client.recv()
                if data:
                    self.buf += data
                    continue
                if not qatomic_read(self.chr.connected):
                    return None
                fail(f"lost reply: {what} on {self.label}")
            self.buf += self.client.recv()

    def _check_session(self, msg: Message) -> None:
        """A reply to a request of an earlier connection is always wrong
        (bugs.md entry 3): the ids :meth:`send` makes name their session."""
        rid = msg.get("id")
        if "event" in msg or not isinstance(rid, str) or not rid.startswith(self.label + "."):
            return
        session = rid.split(".")[1]
        if session != str(self.session):
            fail(
                f"wrong reply: {self.label} session {self.session} got the reply to {rid}"
                f" of session {session}"
            )

    def _receive(self, what: str) -> None:
        """Read one more message into ``replies`` or ``events``; the end of
        the connection while waiting for ``what`` loses it."""
        msg = self._message(what)
        if msg is None:
            fail(f"lost reply: {what} on {self.label}: connection closed")
        if "event" in msg:
            self.events.append(msg)
        else:
            self.arrived.append(msg.get("id"))
            self.replies.append(msg)

    # ------------------------------------------------------------ steps

    def greeting(self) -> Message:
        """Read the greeting of the current session."""
        msg = self._message("greeting")
        if msg is None or "QMP" not in msg:
            fail(f"wrong reply: {self.label} greeting was {msg!r}")
        self._greeting = msg
        return msg

    def negotiate(self, oob: Optional[bool] = None) -> Message:
        """Greeting plus ``qmp_capabilities``; ``oob`` None: enable it if offered."""
        greeting = self.greeting()
        offered = "oob" in greeting["QMP"].get("capabilities", [])
        if oob and not offered:
            fail(f"wrong reply: {self.label} offers no oob capability")
        want = offered if oob is None else oob
        args = {"enable": ["oob"]} if want else None
        reply = self.execute("qmp_capabilities", args)
        self.check(reply.get("return") == {}, f"qmp_capabilities answered {reply!r}")
        return greeting

    def send(
        self,
        cmd: str,
        args: Optional[dict[str, Any]] = None,
        id: Any = None,
        oob: bool = False,
    ) -> Any:
        """Send a request; returns its id (made up as ``LABEL.N`` when None)."""
        if id is None:
            self._next_id += 1
            id = f"{self.label}.{self.session}.{self._next_id}"
        req: Message = {"exec-oob" if oob else "execute": cmd}
        if args is not None:
            req["arguments"] = args
        req["id"] = id
        self.send_raw(json.dumps(req).encode() + b"\n")
        return id

    def send_raw(self, data: bytes) -> None:
        self.client.send(data)

    def reply(self, id: Any) -> Message:
        """The reply whose id is ``id`` (other messages are kept for later)."""
        while True:
            for i, msg in enumerate(self.replies):
                if msg.get("id") == id:
                    del self.replies[i]
                    return msg
            self._receive(f"reply to {id}")

    def next_reply(self) -> Message:
        """The next reply in arrival order, whatever its id."""
        while not self.replies:
            self._receive("any reply")
        return self.replies.pop(0)

    def execute(
        self, cmd: str, args: Optional[dict[str, Any]] = None, oob: bool = False
    ) -> Message:
        """Send and wait for the reply (the whole message: return or error)."""
        return self.reply(self.send(cmd, args, oob=oob))

    def event(self, name: str) -> Message:
        """The first event ``name`` (other messages are kept for later)."""
        while True:
            for i, msg in enumerate(self.events):
                if msg.get("event") == name:
                    del self.events[i]
                    return msg
            self._receive(f"event {name}")

    def expect_eof(self) -> list[Message]:
        """Read to the end of the connection; returns what came before it."""
        rest: list[Message] = []
        while True:
            msg = self._message("end of connection")
            if msg is None:
                return rest
            rest.append(msg)

    def hangup(self) -> None:
        """Close the client's end (what it has not read is gone)."""
        self.client.hangup()
        self.buf.clear()
        self.replies.clear()
        self.events.clear()

    def connect(self) -> None:
        """Connect again (accepted after the previous connection's hang-up)."""
        self.session += 1
        self.client.connect()

    def check(self, cond: bool, reason: str) -> None:
        """Fail the run with ``wrong reply: REASON`` unless ``cond`` holds."""
        if not cond:
            fail(f"wrong reply: {reason}")


class Setup:
    """What a scenario function builds before the run starts."""

    def __init__(self, mon_opts: Iterable[str]) -> None:
        #: -mon options the command line's --opt added, for every QMP monitor
        self.mon_opts = list(mon_opts)
        self.clients: list[tuple[str, Callable[[], None]]] = []
        self.monitors: list[QmpClient] = []

    def qmp(
        self,
        label: str,
        *,
        lockstep: bool = False,
        out_capacity: Optional[int] = None,
        opts: str = "",
    ) -> QmpClient:
        """A QMP monitor on pair chardev ``label``; returns its client end."""
        chr, client = qemu_chr_new_pair(label, lockstep=lockstep, out_capacity=out_capacity)
        text = ",".join(["chardev=" + label, "mode=control", *self.mon_opts, *filter(None, [opts])])
        monitor_init_opts(qemu_opts_parse(qemu_mon_opts(), text, False))
        mon = QmpClient(label, chr, client)
        self.monitors.append(mon)
        return mon

    def pair(self, label: str, *, connected: bool = True) -> QmpClient:
        """A pair chardev with no frontend yet (for monitor-add)."""
        chr, client = qemu_chr_new_pair(label, connected=connected)
        return QmpClient(label, chr, client)

    def flag(self, name: str) -> QemuEvent:
        """An event for clients to wait for one another."""
        return QemuEvent(name=name)

    def client(self, name: str, body: Callable[[], None]) -> None:
        """Run ``body`` in client thread ``name`` once the emulator is up."""
        self.clients.append((name, body))


def run_scenario(sc: Scenario, mon_opts: Iterable[str], trace: Optional[str] = None) -> None:
    """Bring the emulator up, run ``sc``'s clients, tear it down (one run)."""
    argv = ["-nodefaults", "-machine", "none", "-display", "none"]
    if trace is not None:
        argv += ["-trace", f"enable=*,file={trace}"]
    config = qemu_parse_args(argv)
    qemu_init(config)
    setup = Setup(mon_opts)
    sc.fn(setup)
    done: QAtomic[int] = QAtomic(0, "clients_done")
    # a client that ends after a shutdown request must not wake a main loop
    # that qemu_cleanup is taking apart
    loop_lock = QemuMutex("explore_loop_lock")
    loop_alive = [True]

    def body(fn: Callable[[], None]) -> None:
        fn()
        qatomic_inc(done)
        with loop_lock:
            if loop_alive[0]:
                qemu_notify_event()

    threads = [QemuThread(name, body, fn) for name, fn in setup.clients]
    while qatomic_read(done) < len(threads) and not rs.main_loop_should_exit():
        main_loop_wait(False)
    with loop_lock:
        loop_alive[0] = False
    qemu_cleanup(config)
    for t in threads:
        t.join()


def check_mon_opts(opts: Iterable[str]) -> Optional[str]:
    """What is wrong with the --opt values as -mon options, or None."""
    from util.qemu_option import QemuOptsError

    for opt in opts:
        key, sep, _ = opt.partition("=")
        if not sep or not key:
            return f"--opt wants KEY=VALUE, not {opt!r}"
        try:
            qemu_opts_parse(qemu_mon_opts(), "chardev=x," + opt, False)
        except QemuOptsError as e:
            return f"--opt {opt}: {e.msg}"
    return None
