"""The one migration command a monitor test needs (migration/migration.c).

``migrate-pause`` is allowed out-of-band (it must work while the main loop is
stuck on a broken postcopy connection); with no migration at all it fails
with QEMU's text, from whichever thread ran it.
"""

from __future__ import annotations

from qapi.error import error_setg


def qmp_migrate_pause() -> None:
    raise error_setg("migrate-pause is currently only supported during postcopy-active state")
