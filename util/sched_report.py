"""What a stuck explorer run reports: the wait-for cycle, every thread's
wait, or the thread that blocked where the scheduler cannot see.

Split from util/sched.py, which calls these when no thread can run (or
when its watchdog sees no progress); they only read the scheduler's state.
"""

from __future__ import annotations

import sys
import traceback
from typing import TYPE_CHECKING, Any, Optional

from util.sched_wait import JoinWait, MutexWait

if TYPE_CHECKING:
    from util.sched import Actor, Sched


def owner_of(sched: Sched, mutex: Any) -> tuple[Optional[Actor], Optional[str]]:
    """The actor holding ``mutex``, and the coroutine that took it if that
    coroutine is not the one running in its thread (it is parked)."""
    owner = mutex.owner
    if owner is None:
        return None, None
    actor = next((a for a in sched.actors if a.ident == owner.ident), None)
    parked = None
    for entry in owner:
        if entry[0] is mutex:
            from util.coroutine import coroutine_parked_name

            parked = coroutine_parked_name(entry[3])
    return actor, parked


def wait_cycle(sched: Sched, start: Actor) -> Optional[str]:
    """If the waits from ``start`` lead back to it, describe the cycle.

    The wait-for edges: a mutex wait points at the mutex's holder (or
    at the parked coroutine holding it), a join at the thread joined.
    Events and conditions have no owner, so they end a chain (a stuck
    run through them is a hang, reported with every thread's wait).
    """
    steps = []
    actor = start
    seen: set[int] = set()
    while isinstance(actor.wait, (MutexWait, JoinWait)):
        if actor.index in seen:
            break
        seen.add(actor.index)
        if isinstance(actor.wait, JoinWait):
            owner = actor.wait.actor
            steps.append(f"{actor.label} waits for thread {owner.label} to end")
        else:
            m = actor.wait.mutex
            owner_or_none, parked = owner_of(sched, m)
            lab = sched.label_of(m)[0]
            if owner_or_none is None:
                return None
            owner = owner_or_none
            if parked is not None and owner is actor:
                steps.append(
                    f"{actor.label} waits for {lab} held by coroutine {parked}, "
                    f"parked in {actor.label}, which only {actor.label} can resume"
                )
                return "; ".join(steps)
            holder = owner.label if parked is None else f"coroutine {parked} of {owner.label}"
            steps.append(f"{actor.label} waits for {lab} held by {holder}")
        if owner is start:
            return "; ".join(steps)
        actor = owner
    return None


def stuck_reason(sched: Sched) -> str:
    for a in sched.actors:
        if not a.finished and isinstance(a.wait, (MutexWait, JoinWait)):
            cycle = wait_cycle(sched, a)
            if cycle:
                return "deadlock: " + cycle
    waits = []
    for a in sched.actors:
        if not a.finished and a.wait is not None:
            what = a.wait.what()
            if isinstance(a.wait, MutexWait):
                owner, parked = owner_of(sched, a.wait.mutex)
                if parked is not None:
                    what += f" (held by parked coroutine {parked})"
                elif owner is not None:
                    what += f" (held by {owner.label})"
            waits.append(f"{a.label} {what}")
    return "hang: every thread is blocked: " + "; ".join(waits)


def uncontrolled_reason(sched: Sched) -> str:
    """Name the running thread, blocked in a host call, with its stack."""
    cur = sched.current
    frames = sys._current_frames()
    frame = frames.get(cur.ident) if cur is not None and cur.ident is not None else None
    where = "unknown"
    if frame is not None:
        stack = traceback.extract_stack(frame)[-4:]
        where = " <- ".join(f"{f.name} ({f.filename}:{f.lineno})" for f in reversed(stack))
    label = cur.label if cur is not None else "?"
    return f"hang: {label} blocked outside the scheduler at {where}"
