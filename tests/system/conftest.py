"""Fixtures for the process-level tests: the differential tier's ``target``
parameter (real QEMU 7.2 under ``@pytest.mark.qemu``, skipped cleanly when
it is not installed, and the emulator) and its launcher."""

from tests.integration.conftest import inst, launcher, target

__all__ = ["inst", "launcher", "target"]
