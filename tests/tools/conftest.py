"""Fixtures of the trace-tool tests: real scenario runs, done once per session.

Each run starts ``python -m system`` (a separate process, so no thread of
this one is involved) and leaves a record file, its Chrome JSON and the
timeline model; the tests only read them.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tools.trace.scenarios import Result, run_scenario


@pytest.fixture(scope="session")
def scenario_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("scenarios")


@pytest.fixture(scope="session")
def run(scenario_dir: Path) -> Any:
    """``run(name)``: the :class:`Result` of scenario ``name``, run at most once."""
    _runs: dict[str, Result] = {}

    def get(name: str) -> Result:
        if name not in _runs:
            _runs[name] = run_scenario(name, str(scenario_dir))
        return _runs[name]

    return get


def load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)
