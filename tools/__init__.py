"""Command-line tools: benchmarks, trace export and pictures, transcript capture.

Run each as ``python -m tools.NAME`` from the repository root.
"""
