"""A campaign: many runs of one scenario under one strategy, their result
as JSON, merging shards, and shrinking a failing schedule.

Everything here is decided by the arguments alone (scenario, bugs, opts,
strategy, seed, runs, shard): run ``r`` of ``random``/``pct``/``guided``
draws from ``Random("SEED:r")``; ``pb`` walks its tree breadth first in a
fixed order.  Results are put in run order whatever order the children
finish in, so ``--jobs`` changes the speed and nothing else.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any, Callable, Optional

from tools.explore.runner import Result, run_many, run_one
from tools.explore.strategies import Entry, format_schedule, parse_schedule

#: replays one shrink may spend
SHRINK_BUDGET = 300


class Campaign:
    """The fixed inputs of a campaign (what its JSON names)."""

    def __init__(
        self,
        scenario: str,
        bugs: list[str],
        opts: list[str],
        strategy: tuple[str, int],
        seed: int,
        runs: int,
        shard: tuple[int, int] = (0, 1),
    ) -> None:
        self.scenario = scenario
        self.bugs = bugs
        self.opts = opts
        self.kind, self.param = strategy
        self.seed = seed
        self.runs = runs
        self.shard = shard

    @property
    def strategy(self) -> str:
        return self.kind if self.kind == "random" else f"{self.kind}:{self.param}"

    def base_spec(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "bugs": self.bugs, "opts": self.opts}

    def owns(self, run: int) -> bool:
        return run % self.shard[1] == self.shard[0]

    def replay(self, entries: list[Entry], trace: Optional[str] = None) -> Result:
        spec = {**self.base_spec(), "kind": "replay", "entries": entries}
        if trace is not None:
            spec["trace"] = trace
        return run_one(spec)

    def json_head(self) -> dict[str, Any]:
        head: dict[str, Any] = {
            "scenario": self.scenario,
            "bugs": self.bugs,
            "opts": self.opts,
            "strategy": self.strategy,
            "seed": self.seed,
            "runs": self.runs,
        }
        if self.shard[1] > 1:
            head["shard"] = f"{self.shard[0]}/{self.shard[1]}"
        return head


Progress = Callable[[int, int], None]


def explore(
    c: Campaign, jobs: int, stop_on_failure: bool, progress: Optional[Progress] = None
) -> dict[str, Any]:
    """Run the campaign; returns its JSON document (without shrinking)."""
    points: list[Optional[int]] = [None] * c.runs
    failures: list[dict[str, Any]] = []
    results = _pb_results(c, jobs) if c.kind == "pb" else _independent_results(c, jobs)
    done = 0
    for run, result in results:
        points[run] = result["points"]
        done += 1
        if result["reason"] is not None:
            failures.append(
                {
                    "run": run,
                    "schedule": result["schedule"],
                    "reason": result["reason"],
                    "shrunk": None,
                }
            )
        if progress is not None:
            progress(done, len(failures))
        if failures and stop_on_failure:
            points = points[: run + 1]
            break
    doc = c.json_head()
    doc["failures"] = failures
    doc["first_failure_run"] = failures[0]["run"] if failures else None
    doc["points_per_run"] = points
    return doc


def _independent_results(c: Campaign, jobs: int) -> Iterator[tuple[int, Result]]:
    spec = c.base_spec()
    if c.kind in ("pct", "guided"):
        # the default schedule's length spreads the change points
        cal = run_one({**spec, "kind": "calibrate"})
        spec["decisions"] = cal["decisions"] or 1
        spec["anchor_hits"] = cal.get("anchor_hits") or 0
    mine = [r for r in range(c.runs) if c.owns(r)]
    specs = (
        (r, {**spec, "kind": c.kind, "param": c.param, "seed": c.seed, "run": r}) for r in mine
    )
    # submitted in run order, so ordering by run only ever holds back <= jobs results
    yield from _ordered(run_many(specs, jobs), mine)


def _ordered(
    results: Iterator[tuple[int, Result]], order: list[int]
) -> Iterator[tuple[int, Result]]:
    held: dict[int, Result] = {}
    i = 0
    for run, result in results:
        held[run] = result
        while i < len(order) and order[i] in held:
            yield order[i], held.pop(order[i])
            i += 1


def _pb_results(c: Campaign, jobs: int) -> Iterator[tuple[int, Result]]:
    """Breadth-first over schedules with at most K deviations from the default.

    A node is a set of forced picks {decision index: actor}; its run records
    the alternatives of every later decision, and each alternative is a
    child with one more deviation.  Run numbers are BFS positions.  A shard
    runs the nodes it owns, and also every node whose children are still
    needed to number the tree up to ``runs`` (its result is not reported).
    """
    spec = c.base_spec()
    queue: deque[tuple[int, dict[int, str]]] = deque([(0, {})])
    numbered = 1
    while queue:
        batch: list[tuple[int, dict[int, str]]] = []
        while queue and len(batch) < jobs:
            batch.append(queue.popleft())
        specs = ((i, {**spec, "kind": "pb", "forced": dict(f)}) for i, (_, f) in enumerate(batch))
        results = dict(run_many(specs, jobs))
        for i, (run, forced) in enumerate(batch):
            result = results[i]
            if numbered < c.runs and len(forced) < c.param and result["reason"] is None:
                for index, cands, default in result.get("records") or []:
                    for label in cands:
                        if label == default or numbered >= c.runs:
                            continue
                        queue.append((numbered, {**forced, index: label}))
                        numbered += 1
            if c.owns(run):
                yield run, result
        # a node that only numbered the tree for another shard is not reported
        if numbered >= c.runs:
            queue = deque(n for n in queue if c.owns(n[0]))


def shrink(c: Campaign, schedule: str, reason: str) -> str:
    """The shortest schedule ddmin finds that fails the same way.

    "The same way" is the same class of failure (the text before the
    first colon: deadlock, hang, assertion, wrong reply, lost reply).  Each
    try is a tolerant replay (entries that no longer fit are skipped); the
    answer is what the last failing replay recorded, so it replays exactly.
    """
    kind = reason.split(":", 1)[0]
    best = parse_schedule(schedule)
    budget = [SHRINK_BUDGET]

    def fails(entries: list[Entry]) -> Optional[list[Entry]]:
        if budget[0] <= 0:
            return None
        budget[0] -= 1
        result = c.replay(entries)
        if result["reason"] is None or result["reason"].split(":", 1)[0] != kind:
            return None
        recorded = parse_schedule(result["schedule"])
        return recorded if len(recorded) <= len(entries) else entries

    empty = fails([])
    if empty is not None:
        return "v1:"
    n = 2
    while len(best) >= 2 and budget[0] > 0:
        size = max(1, len(best) // n)
        chunks = [best[i : i + size] for i in range(0, len(best), size)]
        for i in range(len(chunks)):
            rest = [e for j, ch in enumerate(chunks) if j != i for e in ch]
            got = fails(rest)
            if got is not None:
                best, n = got, max(n - 1, 2)
                break
        else:
            if n >= len(best):
                break
            n = min(len(best), n * 2)
    if len(best) == 1 and fails([]) is not None:
        best = []
    return format_schedule(best)


def merge(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """One campaign's JSON from its shards' (ValueError if they differ)."""
    keys = ("scenario", "bugs", "opts", "strategy", "seed", "runs")
    first = docs[0]
    for d in docs[1:]:
        for k in keys:
            if d.get(k) != first.get(k):
                raise ValueError(
                    f"shards of different campaigns: {k} is {first.get(k)!r} and {d.get(k)!r}"
                )
    shards = sorted(d.get("shard", "0/1") for d in docs)
    total = int(shards[0].split("/")[1])
    want = [f"{i}/{total}" for i in range(total)]
    if shards != want:
        raise ValueError(f"shards {', '.join(shards)} do not make up {total}")
    doc = {k: first[k] for k in keys}
    points: list[Optional[int]] = [None] * first["runs"]
    for d in docs:
        for i, p in enumerate(d["points_per_run"]):
            if p is not None:
                points[i] = p
    failures = sorted((f for d in docs for f in d["failures"]), key=lambda f: f["run"])
    doc["failures"] = failures
    doc["first_failure_run"] = failures[0]["run"] if failures else None
    doc["points_per_run"] = points
    return doc
