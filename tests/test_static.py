"""Lint and type checks run with the suite (STYLE.md: ruff and mypy in CI)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_ruff() -> None:
    res = _run(sys.executable, "-m", "ruff", "check", ".")
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.timeout(300)
def test_mypy() -> None:
    res = _run(sys.executable, "-m", "mypy")
    assert res.returncode == 0, res.stdout + res.stderr


def test_raw_synchronisation_stays_in_util() -> None:
    """DESIGN.md's one rule: only util/ touches threading, queue, select, sleep."""
    bad = []
    for pkg in ("qapi", "chardev", "monitor", "system"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    for lineno, line in enumerate(f, 1):
                        s = line.strip()
                        if (
                            s.startswith(
                                (
                                    "import threading",
                                    "from threading",
                                    "import queue",
                                    "from queue",
                                    "import select",
                                    "from select",
                                    "import selectors",
                                )
                            )
                            or "time.sleep(" in s
                        ):
                            bad.append(f"{os.path.relpath(path, ROOT)}:{lineno}: {s}")
    assert not bad, "\n".join(bad)
