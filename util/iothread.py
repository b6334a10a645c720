"""IOThread: a thread running its own AioContext (iothread.c).

The monitor's I/O thread (``mon_iothread``) is one of these.  Its thread is
named ``IO <name>`` as QEMU names it; the thread declares its context as the
current one, then polls it until ``iothread_stop`` schedules the stop BH.
State machine: CREATED -> RUNNING -> STOPPING -> JOINED (-> destroyed).
"""

from __future__ import annotations

import enum
from typing import Any

from util.aio import (
    AioContext,
    aio_bh_schedule_oneshot,
    aio_context_finalize,
    aio_poll,
    qemu_set_current_aio_context,
)
from util.atomic import QAtomic, qatomic_set
from util.sched import SCHED, sched_point
from util.thread import QemuEvent, QemuThread, qemu_get_thread_id, qemu_thread_create


class IOThreadState(enum.Enum):
    CREATED = "created"
    RUNNING = "running"
    STOPPING = "stopping"
    JOINED = "joined"
    DESTROYED = "destroyed"


class IOThread:
    """One I/O thread: its name, context and thread."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.ctx = AioContext(f"iothread:{name}")
        self.state = IOThreadState.CREATED
        #: cleared by the stop BH, read by the loop
        self.running: QAtomic[bool] = QAtomic(True, "running", name)
        self.thread_id = 0
        self._started = QemuEvent(name=f"iothread_started:{name}")
        self.thread: QemuThread = qemu_thread_create(f"IO {name}", iothread_run, self)
        if not self._started.wait(10):
            raise RuntimeError(f"IOThread {name} did not start")

    def _require(self, *states: IOThreadState) -> None:
        if self.state not in states:
            raise AssertionError(f"IOThread {self.name} is {self.state.value}")

    def __repr__(self) -> str:
        return f"<IOThread {self.name} {self.state.value}>"


def iothread_run(iothread: IOThread) -> None:
    """The thread body: poll the context until stopped."""
    iothread.thread_id = qemu_get_thread_id()
    iothread.ctx.home_thread = iothread.thread_id
    qemu_set_current_aio_context(iothread.ctx)
    iothread.state = IOThreadState.RUNNING
    iothread._started.set()
    running, ctx = iothread.running, iothread.ctx
    while True:
        if SCHED.active:  # qatomic_read(iothread.running) inlined: once per pass
            sched_point("qatomic_read", running)
        if not running.value:
            break
        aio_poll(ctx, True)
    qemu_set_current_aio_context(None)


def iothread_create(name: str) -> IOThread:
    """Create and start ``name``'s thread; returns once it polls."""
    return IOThread(name)


def _iothread_stop_bh(iothread: Any) -> None:
    qatomic_set(iothread.running, False)


def iothread_stop(iothread: IOThread) -> None:
    """Stop the loop from inside (a BH) and join the thread; idempotent."""
    if iothread.state in (IOThreadState.JOINED, IOThreadState.DESTROYED):
        return
    iothread._require(IOThreadState.RUNNING)
    iothread.state = IOThreadState.STOPPING
    aio_bh_schedule_oneshot(iothread.ctx, _iothread_stop_bh, iothread, "iothread_stop_bh")
    iothread.thread.join(30)
    iothread.state = IOThreadState.JOINED
    iothread.ctx.home_thread = None


def iothread_destroy(iothread: IOThread) -> None:
    """Stop if needed, then release the context (naming any leaked BH)."""
    iothread_stop(iothread)
    iothread.state = IOThreadState.DESTROYED
    aio_context_finalize(iothread.ctx)


def iothread_get_aio_context(iothread: IOThread) -> AioContext:
    return iothread.ctx


def qemu_in_iothread() -> bool:
    """True in a thread that runs an IOThread's loop (not the main loop)."""
    from util.aio import qemu_get_current_aio_context
    from util.main_loop import main_loop_initialised, qemu_get_aio_context

    ctx = qemu_get_current_aio_context()
    if ctx is None:
        return False
    return not main_loop_initialised() or ctx is not qemu_get_aio_context()
