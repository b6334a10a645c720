"""What is measured: each workload opens a target, measures it, closes it.

A workload's :meth:`Workload.measure` returns one value per metric; the
runner (:mod:`tools.bench.run`) calls it alternately on every target, round
after round, on processes that stay up for the whole workload (except
workload 8, which starts its own).  Counts are fixed (scaled by ``scale``),
so every loop is bounded; every wait has a deadline (:data:`DEADLINE`).
"""

from __future__ import annotations

import asyncio
import errno
import math
import os
import select
import selectors
import time
from dataclasses import dataclass
from typing import Any, Optional

from tools.bench.qmpraw import CONNECT_PAUSE, DEADLINE, QMPRaw, connect_negotiated
from tools.bench.targets import Instance, Target, launch


@dataclass(frozen=True)
class Metric:
    key: str
    title: str
    unit: str
    higher_is_better: bool


def throughput(key: str, title: str, unit: str = "req/s") -> Metric:
    return Metric(key, title, unit, True)


def latency(key: str, title: str, unit: str = "µs") -> Metric:
    return Metric(key, title, unit, False)


class Workload:
    """Base class: a process with ``n_monitors`` monitors, clients, a measure."""

    metrics: tuple[Metric, ...] = ()
    n_monitors = 1

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def count(self, n: int) -> int:
        return max(2, int(n * self.scale))

    def open(self, target: Target) -> Any:
        inst = launch(target, self.n_monitors)
        try:
            return self.setup(inst)
        except BaseException:
            inst.shutdown()
            raise

    def setup(self, inst: Instance) -> Any:
        return inst

    def measure(self, state: Any) -> tuple[float, ...]:
        raise NotImplementedError

    def close(self, state: Any) -> None:
        for client in getattr(state, "clients", ()):
            client.close()
        getattr(state, "inst", state).shutdown()


@dataclass
class Session:
    inst: Instance
    clients: list[QMPRaw]
    extra: Any = None


def timed_round_trips(client: QMPRaw, n: int, template: bytes) -> float:
    """Seconds for *n* sequential round trips of ``template % i``."""
    reqs = [template % i for i in range(n)]
    t0 = time.perf_counter()
    for i, req in enumerate(reqs):
        client.send(req)
        if client.recv_reply(i).get("id") != i:
            raise AssertionError("reply out of order")
    return time.perf_counter() - t0


QUERY_NAME = b'{"execute": "query-name", "id": %d}\n'
MIGRATE_PAUSE_OOB = b'{"exec-oob": "migrate-pause", "id": %d}\n'


# ---------------------------------------------------------------- workloads 1, 2


class Sequential(Workload):
    """1: sequential in-band ``query-name`` round trips, OOB not negotiated."""

    metrics = (throughput("1", "1. sequential in-band round trips (OOB off)"),)

    def setup(self, inst: Instance) -> Session:
        return Session(inst, [connect_negotiated(inst.paths[0], oob=False)])

    def measure(self, state: Session) -> tuple[float, ...]:
        n = self.count(2000)
        return (n / timed_round_trips(state.clients[0], n, QUERY_NAME),)


class Pipelined(Workload):
    """2: in-band ``query-name`` sent in windows of 8 (OOB on: 8 may queue)."""

    WINDOW = 8
    metrics = (throughput("2", "2. pipelined in-band, windows of 8 (OOB on)"),)

    def setup(self, inst: Instance) -> Session:
        return Session(inst, [connect_negotiated(inst.paths[0], oob=True)])

    def measure(self, state: Session) -> tuple[float, ...]:
        client = state.clients[0]
        windows = self.count(600)
        batches = [
            b"".join(QUERY_NAME % (w * self.WINDOW + k) for k in range(self.WINDOW))
            for w in range(windows)
        ]
        t0 = time.perf_counter()
        for w, batch in enumerate(batches):
            client.send(batch)
            for k in range(self.WINDOW):
                if client.recv_reply().get("id") != w * self.WINDOW + k:
                    raise AssertionError("in-band replies out of order")
        return (windows * self.WINDOW / (time.perf_counter() - t0),)


# ---------------------------------------------------------------- workload 3


class Blocker:
    """Blocks the target's main loop with an in-band request, and releases it."""

    def block(self, client: QMPRaw, req_id: str) -> None:
        pass

    def unblock(self, client: QMPRaw, req_id: str) -> None:
        pass


class FifoBlocker(Blocker):
    """QEMU: blkdebug on a FIFO (tests/qtest/qmp-test.c; harness.FifoBlocker)."""

    def __init__(self, inst: Instance) -> None:
        self.fifo = inst.path("blkdebug.fifo")
        os.mkfifo(self.fifo)
        self.writer: Optional[int] = None

    def block(self, client: QMPRaw, req_id: str) -> None:
        client.send_cmd(
            "blockdev-add",
            {
                "driver": "blkdebug",
                "node-name": req_id,
                "config": self.fifo,
                "image": {"driver": "null-co", "read-zeroes": True},
            },
            req_id,
        )
        end = time.monotonic() + DEADLINE
        while self.writer is None:
            try:
                # succeeds once QEMU has the FIFO open for reading, i.e. is
                # stuck in blkdebug's read() in the main loop
                self.writer = os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as e:
                if e.errno != errno.ENXIO or time.monotonic() >= end:
                    raise
                time.sleep(CONNECT_PAUSE)

    def unblock(self, client: QMPRaw, req_id: str) -> None:
        assert self.writer is not None
        os.close(self.writer)
        self.writer = None
        reply = client.recv_reply(req_id)
        if reply.get("return") != {}:
            raise AssertionError(f"blockdev-add failed: {reply!r}")


class OobTestBlocker(Blocker):
    """Emulator: in-band ``x-oob-test {"lock": true}``, released out-of-band."""

    #: The lock cannot be observed from outside: no reply within this long
    #: means the main loop is inside the command (harness.OobTestBlocker).
    SETTLE = 0.05

    def block(self, client: QMPRaw, req_id: str) -> None:
        client.send_cmd("x-oob-test", {"lock": True}, req_id)
        readable, _, _ = select.select([client.sock], [], [], self.SETTLE)
        if readable or client.buf:
            raise AssertionError("x-oob-test lock did not block")

    def unblock(self, client: QMPRaw, req_id: str) -> None:
        reply = client.execute("x-oob-test", {"lock": False}, "un" + req_id, oob=True)
        if reply.get("return") != {}:
            raise AssertionError(f"x-oob-test release failed: {reply!r}")
        reply = client.recv_reply(req_id)
        if reply.get("return") != {}:
            raise AssertionError(f"x-oob-test lock failed: {reply!r}")


class OobWhileBlocked(Workload):
    """3: ``exec-oob migrate-pause`` round trips while the main loop is blocked.

    The floor has no main loop to block: it just answers.
    """

    metrics = (throughput("3", "3. OOB round trips, main loop blocked"),)

    def setup(self, inst: Instance) -> Session:
        blocker: Blocker
        if inst.target.key == "qemu":
            blocker = FifoBlocker(inst)
        elif inst.target.key in ("emu", "base"):
            blocker = OobTestBlocker()
        else:
            blocker = Blocker()
        return Session(inst, [connect_negotiated(inst.paths[0], oob=True)], [blocker, 0])

    def measure(self, state: Session) -> tuple[float, ...]:
        client = state.clients[0]
        blocker, rounds = state.extra
        state.extra[1] = rounds + 1
        req_id = f"blocker{rounds}"  # a fresh blkdebug node name every round
        n = self.count(2000)
        blocker.block(client, req_id)
        try:
            elapsed = timed_round_trips(client, n, MIGRATE_PAUSE_OOB)
        finally:
            blocker.unblock(client, req_id)
        return (n / elapsed,)


# ---------------------------------------------------------------- workloads 4, 5


class QMPClientSequential(Workload):
    """4: qemu.qmp's asyncio ``QMPClient`` running ``query-name`` sequentially."""

    metrics = (throughput("4", "4. qemu.qmp QMPClient sequential query-name"),)

    def measure(self, state: Instance) -> tuple[float, ...]:
        return (asyncio.run(self._run(state.paths[0], self.count(1000))),)

    @staticmethod
    async def _run(path: str, n: int) -> float:
        from qemu.qmp import QMPClient

        client = QMPClient("bench")
        await asyncio.wait_for(client.connect(path), DEADLINE)
        try:
            t0 = time.perf_counter()
            for _ in range(n):
                await asyncio.wait_for(client.execute("query-name"), DEADLINE)
            return n / (time.perf_counter() - t0)
        finally:
            await asyncio.wait_for(client.disconnect(), DEADLINE)


class ConnectCycle(Workload):
    """5: connect, greeting, qmp_capabilities, one command, close; repeated."""

    metrics = (throughput("5", "5. connect+greeting+caps+command+close", "sessions/s"),)

    def measure(self, state: Instance) -> tuple[float, ...]:
        n = self.count(200)
        t0 = time.perf_counter()
        for _ in range(n):
            client = QMPRaw.connect(state.paths[0])
            try:
                client.negotiate(oob=False)
                if "return" not in client.execute("query-name", req_id=1):
                    raise AssertionError("query-name failed")
            finally:
                client.close()
        return (n / (time.perf_counter() - t0),)


# ---------------------------------------------------------------- workloads 6, 7


def fan_out_once(clients: list[QMPRaw], sel: selectors.BaseSelector, cmd: str, event: str) -> float:
    """Send *cmd* on client 0; seconds until every client has *event* and 0 its reply."""
    end = time.monotonic() + DEADLINE
    missing = set(range(len(clients)))
    replied = False
    req = b'{"execute": "%s", "id": "fan"}\n' % cmd.encode()
    t0 = time.perf_counter()
    clients[0].send(req)
    while missing or not replied:
        ready = sel.select(max(end - time.monotonic(), 0))
        if not ready:
            raise TimeoutError(f"{cmd}: {len(missing)} monitors never got {event}")
        for key, _ in ready:
            i = key.data
            client = clients[i]
            client.fill(end)
            for msg in client.take_lines():
                if msg.get("event") == event:
                    missing.discard(i)
                elif msg.get("id") == "fan" and i == 0:
                    if "return" not in msg:
                        raise AssertionError(f"{cmd} failed: {msg!r}")
                    replied = True
    return time.perf_counter() - t0


def fan_out(clients: list[QMPRaw], sel: selectors.BaseSelector, toggles: int) -> float:
    """Mean µs per fan-out over *toggles* stop/cont (even: ends running)."""
    total = 0.0
    for k in range(toggles + toggles % 2):
        if k % 2 == 0:
            total += fan_out_once(clients, sel, "stop", "STOP")
        else:
            total += fan_out_once(clients, sel, "cont", "RESUME")
    return total / (toggles + toggles % 2) * 1e6


class Connected(Workload):
    """Base of 6 and 7: every monitor has a negotiated client (OOB off)."""

    def setup(self, inst: Instance) -> Session:
        clients: list[QMPRaw] = []
        sel = selectors.DefaultSelector()
        try:
            for i, path in enumerate(inst.paths):
                clients.append(connect_negotiated(path, oob=False))
                sel.register(clients[-1].sock, selectors.EVENT_READ, i)
        except BaseException:
            for client in clients:
                client.close()
            sel.close()
            raise
        return Session(inst, clients, sel)

    def close(self, state: Session) -> None:
        state.extra.close()
        super().close(state)


class FanOut(Connected):
    """6: STOP/RESUME from 16 monitors; time until all 16 received it."""

    n_monitors = 16
    metrics = (latency("6", "6. event fan-out to 16 monitors (stop/cont)"),)

    def measure(self, state: Session) -> tuple[float, ...]:
        return (fan_out(state.clients, state.extra, self.count(100)),)


def whole_cycle_once(clients: list[QMPRaw], cmd: str, event: str) -> float:
    """*cmd* on client 0, its reply, then *event* read on each client in turn (seconds)."""
    end = time.monotonic() + DEADLINE
    t0 = time.perf_counter()
    clients[0].send(b'{"execute": "%s", "id": "cycle"}\n' % cmd.encode())
    if "return" not in clients[0].recv_reply("cycle", end):
        raise AssertionError(f"{cmd} failed")
    for client in clients:
        while not any(e.get("event") == event for e in client.events):
            msg = client.recv_msg(end)
            if "event" not in msg:
                raise AssertionError(f"{cmd}: unexpected {msg!r}")
            client.events.append(msg)
        client.events.clear()
    return time.perf_counter() - t0


class WholeCycle(Connected):
    """9: the whole stop/cont cycle as a sequential client sees it (16 monitors).

    Unlike 6, which selects on all sockets at once, the client sends the
    command, waits for its reply, then reads the event on monitor 0, 1, ...
    15 in turn with blocking reads: what a test driving 16 monitors does.
    """

    n_monitors = 16
    metrics = (latency("9", "9. whole stop/cont cycle, 16 monitors"),)

    def measure(self, state: Session) -> tuple[float, ...]:
        n = self.count(100)
        total = 0.0
        for k in range(n + n % 2):
            total += whole_cycle_once(state.clients, *(("stop", "STOP"), ("cont", "RESUME"))[k % 2])
        return (total / (n + n % 2) * 1e6,)


class Scaling(Connected):
    """7: fan-out and round-trip at N monitors (N-1 idle but negotiated)."""

    SIZES = (1, 16, 64, 256)

    def __init__(self, scale: float, n_monitors: int) -> None:
        super().__init__(scale)
        self.n_monitors = n_monitors
        plural = "" if n_monitors == 1 else "s"
        self.metrics = (
            latency(f"7-fan-{n_monitors}", f"7. fan-out, {n_monitors} monitor{plural}"),
            latency(f"7-rtt-{n_monitors}", f"7. round trip, {n_monitors - 1} idle monitors"),
        )

    def measure(self, state: Session) -> tuple[float, ...]:
        toggles = self.count(max(10, 1600 // self.n_monitors))
        fan = fan_out(state.clients, state.extra, toggles)
        n = self.count(1000)
        rtt = timed_round_trips(state.clients[0], n, QUERY_NAME) / n * 1e6
        return fan, rtt


# ---------------------------------------------------------------- workload 8


class StartToGreeting(Workload):
    """8a: from ``Popen`` to the greeting on the first monitor (fresh process)."""

    metrics = (latency("8-start", "8. process start to greeting", "ms"),)

    def open(self, target: Target) -> Target:
        return target

    def close(self, state: Target) -> None:
        pass

    def measure(self, state: Target) -> tuple[float, ...]:
        for attempt in range(3):  # QEMU's startup window may eat a session
            inst = Instance(state, 1)
            try:
                client = QMPRaw.connect(inst.paths[0])
                try:
                    client.greeting()
                    return ((time.monotonic() - inst.started) * 1e3,)
                finally:
                    client.close()
            except (AssertionError, ValueError, EOFError, OSError):
                if attempt == 2 or state.key != "qemu":
                    raise
            finally:
                inst.shutdown()
        raise AssertionError("unreachable")


class Memory(Workload):
    """8b: VmRSS with 16 negotiated clients that each ran a command (fresh process)."""

    metrics = (latency("8-rss", "8. resident memory, 16 clients", "MiB"),)

    def open(self, target: Target) -> Target:
        return target

    def close(self, state: Target) -> None:
        pass

    def measure(self, state: Target) -> tuple[float, ...]:
        inst = launch(state, 16)
        clients: list[QMPRaw] = []
        try:
            for path in inst.paths:
                clients.append(connect_negotiated(path, oob=True))
                clients[-1].execute("query-name", req_id=1)
            return (inst.rss_kib() / 1024,)
        finally:
            for client in clients:
                client.close()
            inst.shutdown()


def all_workloads(scale: float) -> list[Workload]:
    return [
        Sequential(scale),
        Pipelined(scale),
        OobWhileBlocked(scale),
        QMPClientSequential(scale),
        ConnectCycle(scale),
        FanOut(scale),
        WholeCycle(scale),
        *(Scaling(scale, n) for n in Scaling.SIZES),
        StartToGreeting(scale),
        Memory(scale),
    ]


def growth_exponent(t_small: float, n_small: int, t_large: float, n_large: int) -> float:
    """k in T ~ N**k between two sizes: 1 is linear, below 1 sub-linear."""
    return math.log(t_large / t_small) / math.log(n_large / n_small)
