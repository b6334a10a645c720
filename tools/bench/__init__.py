"""Benchmarks of the emulator against real QEMU (issue 7).

``python -m tools.bench`` (or ``python tools/bench/run.py``) starts
``qemu-system-x86_64``, the emulator (``python -m system``) and a minimal
single-threaded Python JSON echo server (the *floor*, :mod:`tools.bench.floor`)
with identical QEMU arguments, drives each with the same client code,
alternating targets round by round, and reports medians, spreads and ratios;
the results replace the ``## Performance`` section of README.md.

Modules: :mod:`~tools.bench.qmpraw` (the raw client), :mod:`~tools.bench.targets`
(launching, readiness, RSS), :mod:`~tools.bench.workloads` (what is measured),
:mod:`~tools.bench.report` (statistics, targets, README), :mod:`~tools.bench.run`
(the command line), :mod:`~tools.bench.profile` (profiling the emulator).

Ratios only: nothing here asserts on wall time (DESIGN.md, Tests).
"""
