"""Strategies (who runs next at each decision) and schedule strings.

A *schedule* is the list of decisions where a run did not take the default
(util/sched.py's Decision.default_choice: the running thread while it can
go on, else the next runnable one in creation order).  Each entry is
anchored on what the deciding thread was doing, not on a step number::

    v1:main/monitor_qmp_dispatcher_co@3>io[qemu_mutex_lock(qmp_queue_lock:mon0)]

reads "the third time the dispatcher coroutine in the main thread reached
``qemu_mutex_lock`` on ``mon0``'s queue lock, the I/O thread ran instead".
An unrelated change elsewhere in the code leaves such an anchor valid,
and a replay that meets an anchor whose target cannot run, or never meets
one, says so (:class:`ReplayStrategy.divergence`).

Strategies:

* ``random`` — a uniformly random runnable thread at every decision;
* ``pct:D`` — probabilistic concurrency testing (Burckhardt et al., 2010):
  random thread priorities, the highest runnable one runs, and D-1
  priority change points spread over the decisions a default run makes
  (only shared points are decisions, see util/sched.py); finds any bug of
  depth D with probability at least 1/(n·k^(D-1));
* ``guided:D`` — PCT whose change points fall only on decisions whose
  operation the scenario names as an anchor;
* ``pb:K`` — every schedule with at most K deviations from the default,
  breadth first (CHESS's bounded search; a deviation is a preemption or a
  non-default pick when the running thread blocks, so the search is
  finite);
* ``replay`` — follows a schedule string.
"""

from __future__ import annotations

import random
import re
from typing import Any, Optional

from util.sched import Actor, Decision, Sched, Strategy

SCHEDULE_VERSION = "v1"

#: (actor key, occurrence, target label, op label)
Entry = tuple[str, int, str, str]

_ENTRY = re.compile(
    r"^(?P<key>[^@;\[\]>]+)@(?P<n>[1-9][0-9]*)>(?P<target>[^@;\[\]>]+)\[(?P<op>[^;]*)\]$"
)


class ScheduleError(ValueError):
    """A schedule string that does not parse (a usage error: exit 2)."""


def format_schedule(entries: list[Entry]) -> str:
    return SCHEDULE_VERSION + ":" + ";".join(f"{k}@{n}>{t}[{op}]" for k, n, t, op in entries)


def parse_schedule(text: str) -> list[Entry]:
    """The entries of ``text``; :class:`ScheduleError` says what is wrong."""
    version, sep, body = text.partition(":")
    if not sep or version != SCHEDULE_VERSION:
        raise ScheduleError(f"malformed schedule: must start with '{SCHEDULE_VERSION}:': {text!r}")
    entries: list[Entry] = []
    for part in filter(None, body.split(";")):
        m = _ENTRY.match(part)
        if m is None:
            raise ScheduleError(
                f"malformed schedule entry {part!r}: expected ACTOR@N>TARGET[OP(OBJECT)]"
            )
        entries.append((m["key"], int(m["n"]), m["target"], m["op"]))
    return entries


def _by_label(d: Decision, label: str) -> Optional[Actor]:
    for a in d.candidates:
        if a.label == label:
            return a
    return None


class RandomStrategy(Strategy):
    name = "random"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng

    def choose(self, d: Decision) -> Actor:
        cands = d.candidates
        return cands[self.rng.randrange(len(cands))] if len(cands) > 1 else cands[0]


class PctStrategy(Strategy):
    """PCT; with ``anchors``, change points count only matching decisions."""

    name = "pct"

    def __init__(
        self, rng: random.Random, depth: int, decisions: int, anchors: tuple[str, ...] = ()
    ) -> None:
        self.rng = rng
        self.depth = depth
        self.anchors = anchors
        span = range(1, max(decisions, 1) + 1)
        points = rng.sample(span, min(depth - 1, len(span)))
        #: decision count (of matching decisions, with anchors) -> new priority
        self.changes = {p: float(depth - 1 - i) for i, p in enumerate(sorted(points))}
        self.prio: dict[int, float] = {}
        self.counted = 0

    def _priority(self, a: Actor) -> float:
        p = self.prio.get(a.index)
        if p is None:
            p = self.prio[a.index] = self.depth + self.rng.random()
        return p

    def choose(self, d: Decision) -> Actor:
        if not self.anchors or anchor_matches(d, self.anchors):
            self.counted += 1
            low = self.changes.get(self.counted)
            if low is not None:
                self._priority(d.current)
                self.prio[d.current.index] = low
        cands = d.candidates
        if len(cands) == 1:
            self._priority(cands[0])
            return cands[0]
        return max(cands, key=self._priority)


def anchor_matches(d: Decision, anchors: tuple[str, ...]) -> bool:
    """Whether ``d``'s operation starts with one of the scenario's anchors."""
    op = d.op_label()
    return any(op.startswith(a) for a in anchors)


class CalibrateStrategy(Strategy):
    """The default schedule, counting decisions that match the anchors."""

    name = "calibrate"

    def __init__(self, anchors: tuple[str, ...]) -> None:
        self.anchors = anchors
        self.anchor_hits = 0

    def choose(self, d: Decision) -> Actor:
        if self.anchors and anchor_matches(d, self.anchors):
            self.anchor_hits += 1
        return d.default_choice()


class ReplayStrategy(Strategy):
    """Follow a schedule; record where it no longer fits the program."""

    name = "replay"

    def __init__(self, entries: list[Entry]) -> None:
        self.pending: dict[tuple[str, int, str], str] = {(k, n, op): t for k, n, t, op in entries}
        self.order = [(k, n, op) for k, n, _, op in entries]
        self.divergence: list[str] = []

    def choose(self, d: Decision) -> Actor:
        if self.pending:
            key = (d.anchor[0], d.anchor[3], d.op_label())
            target = self.pending.pop(key, None)
            if target is not None:
                actor = _by_label(d, target)
                if actor is not None:
                    return actor
                self.divergence.append(
                    f"{key[0]}@{key[1]}>{target}[{key[2]}]: {target} cannot run there"
                )
        return d.default_choice()

    def finish(self, sched: Sched) -> None:
        for key in self.order:
            if key in self.pending:
                self.divergence.append(
                    f"{key[0]}@{key[1]}>{self.pending[key]}[{key[2]}]: never reached"
                )


class ForcedStrategy(Strategy):
    """pb:K's runs: forced picks by decision index, then the default; records
    every later decision's alternatives so the search can branch there."""

    name = "pb"

    def __init__(self, forced: dict[int, str]) -> None:
        self.forced = forced
        self.after = max(forced, default=-1)
        #: (decision index, candidate labels, default label) past the last forced one
        self.records: list[tuple[int, list[str], str]] = []

    def choose(self, d: Decision) -> Actor:
        label = self.forced.get(d.index)
        if label is not None:
            actor = _by_label(d, label)
            if actor is None:
                raise AssertionError(f"pb: decision {d.index} cannot pick {label}")
            return actor
        default = d.default_choice()
        if d.index > self.after:
            cands = d.candidates
            if len(cands) > 1:
                self.records.append((d.index, [a.label for a in cands], default.label))
        return default


def parse_strategy(text: str) -> tuple[str, int]:
    """``random``, ``pct:D``, ``guided:D`` or ``pb:K`` as (kind, parameter)."""
    kind, _, param = text.partition(":")
    if kind == "random" and not param:
        return kind, 0
    if kind in ("pct", "guided", "pb") and param.isdigit():
        n = int(param)
        if kind != "pb" and n < 1:
            raise ValueError(f"strategy {kind} needs a depth of at least 1: {text!r}")
        return kind, n
    raise ValueError(f"unknown strategy {text!r}: expected random, pct:D, guided:D or pb:K")


def make_strategy(spec: dict[str, Any], anchors: tuple[str, ...]) -> Strategy:
    """The strategy of one run, from the runner's spec (in the run's process)."""
    kind = spec["kind"]
    if kind == "calibrate":
        return CalibrateStrategy(anchors)
    if kind == "replay":
        return ReplayStrategy([(k, int(n), t, op) for k, n, t, op in spec["entries"]])
    if kind == "pb":
        return ForcedStrategy({int(k): v for k, v in spec["forced"].items()})
    rng = random.Random(f"{spec['seed']}:{spec['run']}")
    if kind == "random":
        return RandomStrategy(rng)
    depth = spec["param"]
    if kind == "pct":
        return PctStrategy(rng, depth, spec["decisions"])
    if not anchors:
        raise ValueError("guided: the scenario names no anchors")
    return PctStrategy(rng, depth, spec["anchor_hits"], anchors)
