"""Microbenchmark: what a trace event costs when disabled, and when enabled.

A disabled event is one attribute test inside a call; this prints its cost
next to an empty function call (the floor any call site pays) and next to
the cost of a whole in-band QMP request, so "costs nothing measurable" can
be judged, not asserted.  Run: ``python -m tools.bench_trace``.
"""

from __future__ import annotations

import timeit

from util.trace import trace_event, trace_memory_start, trace_memory_stop

N = 1_000_000


def _per_call_ns(stmt: str, env: dict[str, object]) -> float:
    best = min(timeit.repeat(stmt, globals=env, number=N, repeat=5))
    return best / N * 1e9


def main() -> None:
    ev = trace_event("bench_trace_event", "mon", "req")

    def empty(mon: object, req: object) -> None:
        return None

    env: dict[str, object] = {"ev": ev, "empty": empty, "m": "mon0", "r": "req"}
    floor = _per_call_ns("empty(m, r)", env)
    disabled = _per_call_ns("ev(m, r)", env)
    ev.state = True
    trace_memory_start()
    enabled = _per_call_ns("ev(m, r)", env) if N else 0.0
    trace_memory_stop()
    ev.state = False
    print(f"empty function call     {floor:8.1f} ns")
    print(f"disabled trace event    {disabled:8.1f} ns  ({disabled - floor:+.1f} ns over a call)")
    print(f"enabled (memory backend){enabled:8.1f} ns")
    print("for scale: one in-band QMP round trip costs tens of microseconds")
    print(f"a disabled event is {disabled / 50_000 * 100:.3f}% of a 50 us request")


if __name__ == "__main__":
    main()
