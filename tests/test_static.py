"""Lint and type checks run with the suite (STYLE.md: ruff and mypy in CI)."""

from __future__ import annotations

import ast
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


#: modules only util/ may import (DESIGN.md's one rule)
_RAW_SYNC_MODULES = frozenset(("threading", "queue", "select", "selectors"))


def _raw_sync_uses(source: str) -> list[int]:
    """Lines that import a raw synchronisation module or use time's sleep.

    Read from the syntax tree, so ``from time import sleep``, aliases and
    ``import os, threading`` are caught as well as the plain spellings.
    """
    lines = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            if any(a.name.split(".")[0] in _RAW_SYNC_MODULES for a in node.names):
                lines.append(node.lineno)
        elif isinstance(node, ast.ImportFrom):
            module = (node.module or "").split(".")[0]
            if module in _RAW_SYNC_MODULES or (
                module == "time" and any(a.name == "sleep" for a in node.names)
            ):
                lines.append(node.lineno)
        elif (
            isinstance(node, ast.Attribute)
            and node.attr == "sleep"
            and isinstance(node.value, ast.Name)
            and node.value.id == "time"
        ):
            lines.append(node.lineno)
    return sorted(lines)


def test_raw_sync_check_catches_every_spelling() -> None:
    source = "\n".join(
        (
            "import os, threading",  # 1
            "from queue import Queue",  # 2
            "import select as s",  # 3
            "from time import sleep",  # 4
            "import time",  # 5: allowed (monotonic clocks)
            "pause = time.sleep",  # 6: any use, called or not
            "from time import monotonic",  # 7: allowed
            "x = time.monotonic()",  # 8: allowed
        )
    )
    assert _raw_sync_uses(source) == [1, 2, 3, 4, 6]


def test_raw_synchronisation_stays_in_util() -> None:
    """DESIGN.md's one rule: only util/ touches threading, queue, select, sleep."""
    bad = []
    for pkg in ("qapi", "chardev", "monitor", "system", "qom"):
        for dirpath, _, files in os.walk(os.path.join(ROOT, pkg)):
            for name in files:
                if not name.endswith(".py"):
                    continue
                path = os.path.join(dirpath, name)
                with open(path, encoding="utf-8") as f:
                    source = f.read()
                lines = source.splitlines()
                for lineno in _raw_sync_uses(source):
                    bad.append(
                        f"{os.path.relpath(path, ROOT)}:{lineno}: {lines[lineno - 1].strip()}"
                    )
    assert not bad, "\n".join(bad)
