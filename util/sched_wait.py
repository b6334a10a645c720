"""What a blocked explorer actor waits for: predicates util/sched.py
re-evaluates instead of blocking the host thread.

Split from util/sched.py.  Each wait knows its operation (for reports),
an optional virtual deadline, and when it is over (``ready``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:
    from util.sched import Actor


class Wait:
    """What a blocked actor waits for; ``deadline`` in virtual ns, or None."""

    __slots__ = ("deadline", "op")

    def __init__(self, op: str, deadline: Optional[int]) -> None:
        self.op = op
        self.deadline = deadline

    def ready(self) -> bool:
        return False

    def what(self) -> str:
        return self.op


class MutexWait(Wait):
    __slots__ = ("mutex",)

    def __init__(self, op: str, mutex: Any) -> None:
        super().__init__(op, None)
        self.mutex = mutex

    def ready(self) -> bool:
        return not self.mutex._lock.locked()


class CondWait(Wait):
    __slots__ = ("cond", "signalled")

    def __init__(self, op: str, cond: Any, deadline: Optional[int]) -> None:
        super().__init__(op, deadline)
        self.cond = cond
        self.signalled = False

    def ready(self) -> bool:
        return self.signalled


class EventWait(Wait):
    __slots__ = ("event",)

    def __init__(self, op: str, event: Any, deadline: Optional[int]) -> None:
        super().__init__(op, deadline)
        self.event = event

    def ready(self) -> bool:
        return bool(self.event.is_set())


class JoinWait(Wait):
    __slots__ = ("actor",)

    def __init__(self, op: str, actor: Actor) -> None:
        super().__init__(op, None)
        self.actor = actor

    def ready(self) -> bool:
        return self.actor.finished


class PollWait(Wait):
    """An idle poller: runnable once its epoll has something ready."""

    __slots__ = ("epoll",)

    def __init__(self, op: str, epoll: Any, deadline: Optional[int]) -> None:
        super().__init__(op, deadline)
        self.epoll = epoll

    def ready(self) -> bool:
        # level-triggered: looking does not consume what the poller will get
        return bool(self.epoll.poll(0))


# ---------------------------------------------------------------- actors
