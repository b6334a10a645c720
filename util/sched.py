"""The explorer's baton scheduler: the emulator's real threads, one at a time.

The emulator's own; QEMU has none.  A race in the real emulator shows up
only when the host happens to interleave its threads badly.  With
exploration on, every controlled thread (the main loop, ``IO mon_iothread``,
vCPUs, a scenario's clients) runs only while it holds the *baton*; each
util/ synchronisation point (mutex, condition, event, atomic, BH, notify,
poll, coroutine switch, thread start/join) calls :func:`sched_point` or
blocks through this module, and at each *decision* a strategy picks who
runs next.  The program is the real one: only the order is chosen.

Decisions are made

* at a point on a *shared* object (one that two threads have touched; an
  object only one thread ever touches cannot race, so it is never a choice),
* when the running thread blocks (a contended mutex, a wait, an idle poll),
* when a thread ends.

Without a strategy's say the next thread is the *default*: the running one
if it can go on, else the next runnable one after it in creation order.  A
schedule is the list of decisions where the strategy chose otherwise, each
anchored on what the deciding thread was doing (its label, the operation,
the object and the how-manieth time), so a schedule survives unrelated
changes to the code and a replay can say where it no longer fits.

Blocking never reaches the host: a blocked thread gives the baton away and
its wait is a predicate the scheduler re-evaluates (the mutex is free, the
condition was signalled, the event is set, the epoll has something ready,
the thread ended).  Time is virtual (``now_ns``): it advances only when no
thread can run, to the earliest deadline of a timed wait (Go's synctest
rule), so timers and timeouts fire in a chosen, repeatable order.  If no
thread can run and none waits with a deadline, the run is stuck: a cycle of
mutex waits is reported as a deadlock with the cycle, anything else as a
hang with what each thread waits for.  A watchdog names a thread that
blocks outside the scheduler (a host call no util primitive wraps).

With exploration off, every hook site costs one attribute test
(``SCHED.active``).  Runs in every controlled thread; the raw locks below
are the scheduler's own and are never held across a hand-off.
"""

from __future__ import annotations

import threading
from typing import Any, Callable, Optional

from util.sched_report import stuck_reason, uncontrolled_reason, wait_cycle
from util.sched_wait import CondWait, EventWait, JoinWait, MutexWait, PollWait, Wait

#: thread names QEMU gives its threads, turned into short actor labels
_LABELS = (("IO mon_iothread", "io"), ("MainThread", "main"))

#: virtual time at the start of a run (an arbitrary, recognisable epoch)
VIRTUAL_EPOCH_NS = 1_000_000_000_000

#: points a run may take before it counts as a livelock
MAX_STEPS = 2_000_000


class SchedFailure(Exception):
    """Raised in a controlled thread when the run cannot go on (no handler)."""


# ---------------------------------------------------------------- waits


class Actor:
    """One controlled thread: its label, its baton gate, what it waits for."""

    __slots__ = ("counts", "finished", "gate", "ident", "index", "label", "thread_name", "wait")

    def __init__(self, index: int, label: str, thread_name: str) -> None:
        self.index = index
        self.label = label
        self.thread_name = thread_name
        self.ident: Optional[int] = None
        #: held while the actor may not run; the baton's giver releases it
        self.gate = threading.Lock()
        self.gate.acquire()
        self.wait: Optional[Wait] = None
        self.finished = False
        #: occurrences of each (key, op, label) anchor so far
        self.counts: dict[tuple[str, str, str], int] = {}

    def __repr__(self) -> str:
        return f"<Actor {self.label}>"


class Decision:
    """One choice: who runs next.  Strategies read it and return an actor."""

    __slots__ = ("_cands", "anchor", "current", "default", "index", "runnable_me", "sched")

    def __init__(
        self,
        sched: Sched,
        current: Actor,
        anchor: tuple[str, str, str, int],
        runnable_me: bool,
        index: int,
    ) -> None:
        self.sched = sched
        self.current = current
        #: (actor key, op, object label, occurrence)
        self.anchor = anchor
        self.runnable_me = runnable_me
        self.index = index
        self._cands: Optional[list[Actor]] = None
        self.default: Optional[Actor] = current if runnable_me else None

    @property
    def candidates(self) -> list[Actor]:
        """The runnable actors, in creation order (computed on first use)."""
        if self._cands is None:
            self._cands = self.sched.runnable(self.current, self.runnable_me)
        return self._cands

    def default_choice(self) -> Actor:
        """The running actor if it can go on, else the next runnable after it."""
        if self.default is None:
            cands = self.candidates
            me = self.current.index
            after = [a for a in cands if a.index > me]
            self.default = after[0] if after else cands[0]
        return self.default

    def op_label(self) -> str:
        return f"{self.anchor[1]}({self.anchor[2]})" if self.anchor[2] else self.anchor[1]


class Strategy:
    """Picks the next actor at each decision; the default keeps the default."""

    name = "default"

    def choose(self, d: Decision) -> Actor:
        return d.default_choice()

    def finish(self, sched: Sched) -> None:
        """The run ended (pass or fail)."""


class _Tls(threading.local):
    actor: Optional[Actor] = None


class Sched:
    """The process's scheduler state; ``active`` is what every hook tests."""

    def __init__(self) -> None:
        self.active = False
        self.tls = _Tls()
        self._reset(Strategy(), None)

    def _reset(self, strategy: Strategy, on_failure: Optional[Callable[[str], None]]) -> None:
        self.strategy = strategy
        self.actors: list[Actor] = []
        self.current: Optional[Actor] = None
        self.now_ns = VIRTUAL_EPOCH_NS
        #: every point so far
        self.steps = 0
        #: decisions so far (shared points, blocks, exits)
        self.decisions = 0
        #: baton hand-offs from one thread to another so far
        self.switches = 0
        #: deviations from the default, as (key, occurrence, target, op label)
        self.entries: list[tuple[str, int, str, str]] = []
        #: per object seen at a point: [label, first actor, shared]
        self.objects: dict[Any, list[Any]] = {}
        #: keeps objects alive while their id keys ``objects``
        self._keep: list[Any] = []
        #: called with the reason when the run cannot go on
        self.on_failure = on_failure
        self._labels_used: set[str] = set()
        self._watchdog: Optional[threading.Thread] = None
        self._watchdog_stop = threading.Event()
        self.failure: Optional[str] = None

    # ------------------------------------------------------------ lifecycle

    def start(
        self,
        strategy: Strategy,
        on_failure: Optional[Callable[[str], None]] = None,
        watchdog_s: float = 5.0,
    ) -> Actor:
        """Turn exploration on; the calling thread becomes actor ``main``."""
        if self.active:
            raise AssertionError("the scheduler is already active")
        self._reset(strategy, on_failure)
        me = self._new_actor(threading.current_thread().name)
        me.ident = threading.get_ident()  # its gate is taken: it holds the baton
        self.tls.actor = me
        self.current = me
        self.active = True
        if watchdog_s > 0:
            self._start_watchdog(watchdog_s)
        return me

    def stop(self) -> None:
        """Turn exploration off (the main actor, once every other one ended)."""
        others = [a.label for a in self.actors if not a.finished and a is not self.current]
        self.active = False
        self._watchdog_stop.set()
        self.strategy.finish(self)
        if others:
            raise AssertionError(f"scheduler stopped with live actors: {others}")

    def _new_actor(self, thread_name: str) -> Actor:
        label = thread_name
        for name, short in _LABELS:
            if thread_name == name:
                label = short
        if label.startswith("IO "):
            label = "io:" + label[3:]
        elif label.startswith("CPU ") and label.endswith("/TCG"):
            label = "cpu" + label[4:-4]
        label = label.replace(" ", "_")
        base, n = label, 1
        while label in self._labels_used:
            n += 1
            label = f"{base}#{n}"
        self._labels_used.add(label)
        actor = Actor(len(self.actors), label, thread_name)
        self.actors.append(actor)
        return actor

    def me(self) -> Actor:
        actor = self.tls.actor
        if actor is None:
            raise AssertionError(
                f"thread {threading.current_thread().name} is not under the scheduler"
            )
        return actor

    # ------------------------------------------------------------ labels

    def label_of(self, obj: Any) -> list[Any]:
        """The record of ``obj``: [label, first actor index, shared]."""
        key: Any = obj if isinstance(obj, str) else id(obj)
        info = self.objects.get(key)
        if info is None:
            if isinstance(obj, str):
                label = obj
            else:
                label = getattr(obj, "name", None) or type(obj).__name__
                extra = getattr(obj, "label", None)
                if extra:
                    label = f"{label}:{extra}"
            info = self.objects[key] = [str(label).replace(";", ","), -1, False]
            self._keep.append(obj)
        return info

    def anchor_key(self, actor: Actor) -> str:
        """The actor's label, with the running coroutine's name if any."""
        from util.coroutine import qemu_running_coroutine_name

        co = qemu_running_coroutine_name()
        return actor.label if co is None else f"{actor.label}/{co}"

    # ------------------------------------------------------------ points

    def point(self, op: str, obj: Any) -> None:
        """A synchronisation point of the running actor (before the operation)."""
        me = self.me()
        self._step()
        info = self.label_of(obj)
        if not info[2]:
            first = info[1]
            if first < 0:
                info[1] = me.index
            elif first != me.index:
                info[2] = True
        anchor = self._count(me, op, info[0])
        if info[2]:
            self._decide(me, anchor, True)

    def _step(self) -> None:
        self.steps += 1
        if self.steps > MAX_STEPS:
            self.fail(f"hang: livelock: more than {MAX_STEPS} points without an end")

    def _count(self, me: Actor, op: str, label: str) -> tuple[str, str, str, int]:
        key = (self.anchor_key(me), op, label)
        n = me.counts.get(key, 0) + 1
        me.counts[key] = n
        return (key[0], op, label, n)

    def block(self, wait: Wait, obj: Any = None) -> None:
        """Give the baton away until ``wait`` is ready (or its deadline passed)."""
        me = self.me()
        self._step()
        label = self.label_of(obj)[0] if obj is not None else ""
        anchor = self._count(me, "wait " + wait.op, label)
        me.wait = wait
        if isinstance(wait, (MutexWait, JoinWait)):
            cycle = wait_cycle(self, me)
            if cycle:
                self.fail("deadlock: " + cycle)
        try:
            self._decide(me, anchor, False)
        finally:
            me.wait = None

    def thread_exit(self) -> None:
        """The running actor ends: hand the baton on and never take it back."""
        me = self.me()
        me.finished = True
        self.tls.actor = None
        if all(a.finished for a in self.actors):
            return
        self._step()
        anchor = (self.anchor_key(me), "exit", "", 1)
        d = Decision(self, me, anchor, False, self.decisions)
        self.decisions += 1
        nxt = self._choose(d)
        self.current = nxt
        nxt.gate.release()

    # ------------------------------------------------------------ deciding

    def runnable(self, me: Actor, runnable_me: bool) -> list[Actor]:
        out = []
        now = self.now_ns
        for a in self.actors:
            if a.finished:
                continue
            if a is me:
                if runnable_me:
                    out.append(a)
                elif a.wait is not None and self._wait_done(a.wait, now):
                    out.append(a)
                continue
            w = a.wait
            if w is None or self._wait_done(w, now):
                out.append(a)
        return out

    @staticmethod
    def _wait_done(w: Wait, now: int) -> bool:
        return (w.deadline is not None and now >= w.deadline) or w.ready()

    def _decide(self, me: Actor, anchor: tuple[str, str, str, int], runnable_me: bool) -> None:
        d = Decision(self, me, anchor, runnable_me, self.decisions)
        self.decisions += 1
        nxt = self._choose(d)
        if nxt is not me:
            self.switches += 1
            self.current = nxt
            nxt.gate.release()
            me.gate.acquire()

    def _choose(self, d: Decision) -> Actor:
        if not d.candidates:
            self._quiesce(d)
        nxt = self.strategy.choose(d)
        if nxt not in d.candidates:
            raise AssertionError(f"strategy {self.strategy.name} chose {nxt}, not runnable")
        if nxt is not d.default_choice():
            self.entries.append((d.anchor[0], d.anchor[3], nxt.label, d.op_label()))
        return nxt

    def _quiesce(self, d: Decision) -> None:
        """Nobody can run: advance virtual time to the first deadline, or fail."""
        deadlines = [
            a.wait.deadline
            for a in self.actors
            if not a.finished and a.wait is not None and a.wait.deadline is not None
        ]
        if not deadlines:
            self.fail(stuck_reason(self))
        self.now_ns = max(self.now_ns, min(deadlines))
        d._cands = None
        if not d.candidates:
            raise AssertionError("no actor became runnable at its deadline")

    # ------------------------------------------------------------ failure

    def fail(self, reason: str) -> None:
        """The run cannot go on: hand ``reason`` to the handler (which may exit)."""
        if self.failure is None:
            self.failure = reason
        handler = self.on_failure
        if handler is not None:
            handler(reason)
        raise SchedFailure(reason)

    # ------------------------------------------------------------ watchdog

    def _start_watchdog(self, seconds: float) -> None:
        stop = self._watchdog_stop

        def watch() -> None:
            last = -1
            while not stop.wait(seconds):
                if not self.active:
                    return
                if self.steps == last:
                    self._report_uncontrolled()
                    return
                last = self.steps

        self._watchdog = threading.Thread(target=watch, name="sched-watchdog", daemon=True)
        self._watchdog.start()

    def _report_uncontrolled(self) -> None:
        reason = uncontrolled_reason(self)
        self.failure = self.failure or reason
        if self.on_failure is not None:
            self.on_failure(reason)


#: the process's scheduler; hook sites read ``SCHED.active``
SCHED = Sched()


# ---------------------------------------------------------------- hooks


def sched_point(op: str, obj: Any) -> None:
    """A synchronisation point (call only when ``SCHED.active``)."""
    SCHED.point(op, obj)


def sched_deadline(timeout: Optional[float]) -> Optional[int]:
    """A relative timeout in seconds as an absolute virtual deadline."""
    if timeout is None:
        return None
    return SCHED.now_ns + max(0, int(timeout * 1e9))


def sched_mutex_lock(mutex: Any) -> None:
    """Take ``mutex``'s raw lock, giving the baton away while another holds it."""
    SCHED.point("qemu_mutex_lock", mutex)
    while not mutex._lock.acquire(False):
        SCHED.block(MutexWait("qemu_mutex_lock", mutex), mutex)


def sched_cond_wait(cond: Any, mutex: Any, timeout: Optional[float]) -> bool:
    """QemuCond.wait under the scheduler; False on (virtual) timeout."""
    w = CondWait("qemu_cond_wait", cond, sched_deadline(timeout))
    cond.sched_waiters.append(w)
    mutex.unlock()
    try:
        SCHED.block(w, cond)
    finally:
        if not w.signalled:
            cond.sched_waiters.remove(w)
        mutex.lock()
    return w.signalled


def sched_cond_signal(cond: Any, everyone: bool) -> None:
    SCHED.point("qemu_cond_broadcast" if everyone else "qemu_cond_signal", cond)
    waiters = cond.sched_waiters
    while waiters:
        waiters.pop(0).signalled = True
        if not everyone:
            break


def sched_event_wait(event: Any, timeout: Optional[float]) -> bool:
    SCHED.point("qemu_event_wait", event)
    if not event.is_set():
        SCHED.block(EventWait("qemu_event_wait", event, sched_deadline(timeout)), event)
    return bool(event.is_set())


def sched_poll(epoll: Any, timeout: Optional[float], what: Any) -> list[tuple[int, int]]:
    """A blocking ``epoll.poll(timeout)`` as a non-blocking poll plus an idle wait."""
    SCHED.point("poll", what)
    ready: list[tuple[int, int]] = epoll.poll(0)
    if ready or timeout == 0:
        return ready
    SCHED.block(PollWait(f"poll {SCHED.label_of(what)[0]}", epoll, sched_deadline(timeout)), what)
    return epoll.poll(0)


def sched_sleep_ns(ns: int) -> None:
    """Let ``ns`` of virtual time pass for the running actor."""

    class _Sleep(Wait):
        __slots__ = ()

    SCHED.block(_Sleep("sleep", SCHED.now_ns + max(0, ns)), "sleep")


def sched_thread_register(name: str) -> Actor:
    """The actor of a thread about to be started; the creator makes the
    ``qemu_thread_create`` point once the host thread exists."""
    return SCHED._new_actor(name)


def sched_thread_body(actor: Actor, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
    """Run ``fn`` in a new controlled thread: wait for the baton first, hand it
    on at the end; an exception escaping the thread fails the run."""
    actor.ident = threading.get_ident()
    actor.gate.acquire()
    SCHED.tls.actor = actor
    try:
        fn(*args)
    except SchedFailure:
        return
    except BaseException as exc:
        SCHED.fail(f"assertion: thread {actor.label} died: {type(exc).__name__}: {exc}")
    SCHED.thread_exit()


def sched_thread_join(actor: Actor) -> None:
    SCHED.point("qemu_thread_join", actor.label)
    if not actor.finished:
        SCHED.block(JoinWait(f"qemu_thread_join {actor.label}", actor), actor.label)
