"""Suite-wide fixtures: a fresh main loop, and hygiene after every test.

After each test: no thread it started is still alive, no coroutine is left
suspended, no AioContext or BH leaked, no callback exception went unreported
and the lock-order checker saw no violation.
"""

from __future__ import annotations

import gc
import os
import threading
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, settings

from util.aio import live_aio_contexts
from util.coroutine import live_coroutines
from util.error_report import error_sink_set
from util.lockdep import lockdep_violations
from util.main_loop import (
    MainLoop,
    main_loop_initialised,
    qemu_init_main_loop,
    qemu_main_loop_cleanup,
)
from util.timer import qemu_clock_set_manual
from util.trace import trace_disable_all, trace_log_close, trace_memory_stop

# Hypothesis: a bounded profile for the normal run; HYPOTHESIS_PROFILE=long
# for a longer search (the fuzz tests take their example counts from it).
settings.register_profile(
    "default", max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.register_profile(
    "long", max_examples=3000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))


class CallbackErrors(list):  # type: ignore[type-arg]
    """Exceptions that escaped BH/timer/fd callbacks during a test."""

    def __call__(self, where: str, exc: BaseException) -> None:
        self.append((where, exc))


@pytest.fixture(autouse=True)
def hygiene(request: pytest.FixtureRequest) -> Iterator[CallbackErrors]:
    before = set(threading.enumerate())
    errors = CallbackErrors()
    old_sink = error_sink_set(errors)
    violations_before = len(lockdep_violations())
    yield errors
    error_sink_set(old_sink)
    trace_disable_all()
    trace_memory_stop()
    trace_log_close()
    if main_loop_initialised():
        qemu_main_loop_cleanup()
    problems = []
    deadline = time.monotonic() + 5
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    while leaked and time.monotonic() < deadline:
        leaked[0].join(deadline - time.monotonic())
        leaked = [t for t in leaked if t.is_alive()]
    if leaked:
        problems.append(f"leaked threads: {[t.name for t in leaked]}")
    gc.collect()
    if live_coroutines():
        problems.append(f"live coroutines: {live_coroutines()}")
    if live_aio_contexts():
        problems.append(f"AioContexts not finalised: {live_aio_contexts()}")
    if errors and not request.node.get_closest_marker("callback_errors_expected"):
        problems.append(f"callback exceptions: {errors}")
    new_violations = lockdep_violations()[violations_before:]
    if new_violations and not request.node.get_closest_marker("lockdep_violation_expected"):
        problems.append(f"lock-order violations: {new_violations}")
    if problems:
        pytest.fail("hygiene: " + "; ".join(problems))


@pytest.fixture
def main_loop() -> Iterator[MainLoop]:
    """A fresh main loop; the test thread is its thread and holds the BQL."""
    loop = qemu_init_main_loop()
    yield loop
    if main_loop_initialised():
        qemu_main_loop_cleanup()


@pytest.fixture
def virtual_clock() -> Iterator[None]:
    """Drive QEMU_CLOCK_VIRTUAL by hand for the test."""
    qemu_clock_set_manual(0)
    yield
    qemu_clock_set_manual(None)
