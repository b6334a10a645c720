"""Runs in forked processes: one run per child, many in flight.

The parent has imported the whole emulator once; each run forks a child
that starts from that state, so a run costs a fork instead of an
interpreter start and can leave nothing behind for the next one (no
threads, no global state, no leaked fds).  The child turns the garbage
collector off (a collection would run finalizers at moments no schedule
names), sets the bug switches, starts the scheduler, runs the scenario and
writes one JSON result to a pipe; the parent reads it, and kills a child
that outlives the wall-clock limit.  Nothing in the result depends on
timing, so results are the same in any order and with any ``--jobs``.
"""

from __future__ import annotations

import gc
import json
import os
import select
import signal
import time
from collections.abc import Iterator
from typing import Any, Optional

from tools.explore.harness import SCENARIOS, run_scenario
from tools.explore.strategies import format_schedule, make_strategy

#: wall-clock seconds a run may take before the parent kills it
RUN_TIMEOUT_S = 120.0

#: host seconds without a single point before the watchdog names the thread
#: that blocks outside the scheduler (EXPLORE_WATCHDOG_S overrides it)
WATCHDOG_S = float(os.environ.get("EXPLORE_WATCHDOG_S", "5"))

Result = dict[str, Any]


def _child(spec: dict[str, Any], wfd: int) -> None:
    """The run itself, in the forked child; never returns."""
    from util.bugs import bugs_enable, bugs_reset
    from util.error_report import error_sink_set
    from util.lockdep import lockdep_reset, lockdep_violations
    from util.sched import SCHED, SchedFailure

    gc.disable()
    sc = SCENARIOS[spec["scenario"]]
    bugs_reset()
    bugs_enable(spec["bugs"])
    lockdep_reset()
    strategy = make_strategy(spec, sc.anchors)
    trace = spec.get("trace")

    def report(reason: Optional[str]) -> None:
        if reason is not None:
            strategy.finish(SCHED)  # SCHED.stop() does it for a run that ended
        out: Result = {
            "reason": reason,
            "schedule": format_schedule(SCHED.entries),
            "points": SCHED.steps,
            "decisions": SCHED.decisions,
            "switches": SCHED.switches,
        }
        for name in ("anchor_hits", "records", "divergence"):
            if hasattr(strategy, name):
                out[name] = getattr(strategy, name)
        if reason is not None and trace:
            from util.trace_output import trace_output_close

            trace_output_close()
        data = json.dumps(out).encode()
        while data:
            data = data[os.write(wfd, data) :]
        os._exit(0)

    def on_error(where: str, exc: BaseException) -> None:
        SCHED.fail(f"assertion: {where}: {type(exc).__name__}: {exc}")

    error_sink_set(on_error)
    SCHED.start(strategy, on_failure=report, watchdog_s=WATCHDOG_S)
    try:
        run_scenario(sc, spec["opts"], trace)
        bad = lockdep_violations()
        if bad:
            SCHED.fail("assertion: lock order: " + bad[0])
        SCHED.stop()
    except SchedFailure:
        pass  # report() has exited already
    except BaseException as exc:
        SCHED.fail(f"assertion: thread main died: {type(exc).__name__}: {exc}")
    report(None)


class _Child:
    __slots__ = ("buf", "deadline", "key", "pid", "rfd")

    def __init__(self, key: Any, pid: int, rfd: int) -> None:
        self.key = key
        self.pid = pid
        self.rfd = rfd
        self.buf = bytearray()
        self.deadline = time.monotonic() + RUN_TIMEOUT_S


def _spawn(key: Any, spec: dict[str, Any]) -> _Child:
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(rfd)
        try:
            _child(spec, wfd)
        finally:
            os._exit(3)
    os.close(wfd)
    return _Child(key, pid, rfd)


def _reap(child: _Child, timed_out: bool) -> Result:
    os.close(child.rfd)
    if timed_out:
        os.kill(child.pid, signal.SIGKILL)
    _, status = os.waitpid(child.pid, 0)
    if timed_out:
        return {
            "reason": f"hang: the run took more than {RUN_TIMEOUT_S:.0f} s of host time",
            "schedule": None,
            "points": None,
            "decisions": None,
        }
    try:
        result: Result = json.loads(child.buf)
        return result
    except ValueError:
        code = os.waitstatus_to_exitcode(status)
        how = f"signal {-code}" if code < 0 else f"exit status {code}"
        return {
            "reason": f"assertion: the run's process died ({how})",
            "schedule": None,
            "points": None,
            "decisions": None,
        }


def run_many(
    specs: Iterator[tuple[Any, dict[str, Any]]], jobs: int
) -> Iterator[tuple[Any, Result]]:
    """Run ``specs`` with up to ``jobs`` children at once; yields as they end
    (in any order: callers order results by their keys)."""
    live: dict[int, _Child] = {}
    pending = iter(specs)
    exhausted = False
    while True:
        while not exhausted and len(live) < jobs:
            nxt = next(pending, None)
            if nxt is None:
                exhausted = True
                break
            child = _spawn(*nxt)
            live[child.rfd] = child
        if not live:
            return
        now = time.monotonic()
        timeout = max(0.0, min(c.deadline for c in live.values()) - now)
        ready, _, _ = select.select(list(live), [], [], timeout)
        for fd in ready:
            child = live[fd]
            data = os.read(fd, 1 << 16)
            if data:
                child.buf += data
                continue
            del live[fd]
            yield child.key, _reap(child, False)
        now = time.monotonic()
        for fd, child in list(live.items()):
            if now >= child.deadline:
                del live[fd]
                yield child.key, _reap(child, True)


def run_one(spec: dict[str, Any]) -> Result:
    """One run, waited for."""
    for _, result in run_many(iter([(0, spec)]), 1):
        return result
    raise AssertionError("unreachable: run_many yields one result per spec")
