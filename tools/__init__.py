"""Command-line tools: benchmarks, trace export and pictures, transcript capture (run as ``python -m tools.NAME``)."""
