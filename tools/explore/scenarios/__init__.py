"""The explorer's scenarios: every module here registers some on import.

A scenario is a function decorated with ``@scenario(name, description)``
(tools/explore/harness.py) that builds monitors and client bodies on a
:class:`~tools.explore.harness.Setup`.  More can live outside the tree:
``--scenarios MODULE`` (or ``QEMU_MONITOR_EMU_SCENARIOS=MOD1,MOD2``)
imports other modules that register scenarios the same way.
"""

from __future__ import annotations

import importlib
import os
import pkgutil


def load_scenarios(extra: tuple[str, ...] = ()) -> None:
    """Import this package's modules, then ``extra`` and the environment's."""
    for info in sorted(pkgutil.iter_modules(__path__), key=lambda m: m.name):
        importlib.import_module(f"{__name__}.{info.name}")
    env = os.environ.get("QEMU_MONITOR_EMU_SCENARIOS", "")
    for name in (*extra, *filter(None, env.split(","))):
        importlib.import_module(name)
