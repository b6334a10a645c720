"""Fixtures of the differential tier: the ``target`` parameter and a process launcher."""

from __future__ import annotations

import shutil
from collections.abc import Iterator, Sequence
from typing import Any, Callable

import pytest

from tests.integration.harness import Instance, launch, target_program

Launcher = Callable[..., Instance]


@pytest.fixture(params=[pytest.param("qemu", marks=pytest.mark.qemu), "emu"])
def target(request: pytest.FixtureRequest) -> str:
    """``"qemu"`` (real qemu-system-x86_64) or ``"emu"`` (``python -m system``).

    Skips here, before any work, when the target is not available.
    """
    name: str = request.param
    target_program(name)
    return name


@pytest.fixture
def launcher(target: str) -> Iterator[Launcher]:
    """``launcher(extra_args=(), pretty=False, aux=False) -> Instance`` for *target*.

    Every instance is torn down at the end of the test: clients closed,
    process stopped and reaped (no zombie), temp dir removed; an emulator that
    printed a Python traceback fails the test.
    """
    instances: list[Instance] = []

    def _launch(extra_args: Sequence[str] = (), **kwargs: Any) -> Instance:
        inst = launch(target, extra_args, **kwargs)
        instances.append(inst)
        return inst

    yield _launch
    errors: list[BaseException] = []
    for inst in instances:
        try:
            inst.shutdown()
            output = inst.stderr_text()
            if output:  # shown by pytest only if the test failed
                print(f"--- {inst.target} ({' '.join(inst.argv)}) output ---\n{output}")
            if inst.target == "emu":
                inst.check_clean_stderr()
        except BaseException as e:  # keep tearing the others down
            errors.append(e)
        finally:
            shutil.rmtree(inst.tmpdir, ignore_errors=True)
    if errors:
        raise errors[0]


@pytest.fixture
def inst(launcher: Launcher) -> Instance:
    """A default instance: one QMP monitor, no extra arguments."""
    return launcher()
