"""Eras: run the monitor as a given QEMU release built it.

No single QEMU file mirrors this one: it is the emulator's table of QEMU's
monitor generations.  An era is chosen once, at start-up (``-x-era VERSION``
or ``QEMU_MONITOR_EMU_ERA``), before ``monitor_init_globals`` runs; that
function then picks the era's dispatcher and response path, so no request
ever asks which era it is in.

Each era is a short preset:

* the version numbers ``query-version`` and the greeting report;
* which of the commands the emulator implements that release had (those
  added later are absent; the emulator-only ``x-oob-test`` and ``x-debug-*``
  exist in every era, so one test drives them all);
* the fixes the release lacks, each with the commit that added it and the
  bug switch (util/bugs.py) that reverts it;
* for 2.12 only, a different structure: the bottom-half dispatcher and the
  responder bottom half of monitor/qmp_bh.py, and the request syntax of the
  first out-of-band design.

``current`` is the default: today's behaviour (QEMU 7.2 on the wire), no
switch on.  Main thread only (start-up).
"""

from __future__ import annotations

import os
from typing import Optional

from qapi.qmp_registry import QCO_COROUTINE, QmpCommandList, qmp_register_command
from util.bugs import SWITCHES, bugs_enable

#: The QEMU release whose behaviour (and error texts) the current era emulates.
QEMU_VERSION = (7, 2, 22)

#: the environment variable that picks an era when -x-era is not given
ERA_ENV = "QEMU_MONITOR_EMU_ERA"


class Fix:
    """A fix an era lacks: its bugs.md entry, QEMU commit, and switch."""

    __slots__ = ("commit", "entry", "switch")

    def __init__(self, entry: int, commit: str, switch: str) -> None:
        self.entry = entry
        self.commit = commit
        self.switch = switch


class Era:
    """One QEMU generation of the monitor (see the module docstring)."""

    __slots__ = ("bh_dispatcher", "lacks", "name", "version", "x_oob")

    def __init__(
        self,
        name: str,
        version: tuple[int, int, int],
        lacks: tuple[Fix, ...] = (),
        bh_dispatcher: bool = False,
    ) -> None:
        self.name = name
        self.version = version
        self.lacks = lacks
        #: the 2.12 structure: monitor/qmp_bh.py's dispatcher, "run-oob"
        #: requests, out-of-band only with ``-mon ...,x-oob=on``
        self.bh_dispatcher = bh_dispatcher
        self.x_oob = bh_dispatcher

    def switches(self) -> list[str]:
        """The switches of the fixes this era lacks that the emulator models.

        A fix whose switch is not modelled (yet) is listed in the table all
        the same, so the table stays the history; ``unmodelled`` names them.
        """
        return [fix.switch for fix in self.lacks if fix.switch in SWITCHES]

    def unmodelled(self) -> list[Fix]:
        return [fix for fix in self.lacks if fix.switch not in SWITCHES]

    def has_option(self, name: str) -> bool:
        """Did this release have command-line option ``name``?"""
        since = OPTION_SINCE.get(name)
        return since is None or since <= self.version

    def has_command(self, name: str) -> bool:
        """Did this release have command ``name`` (emulator-only ones: always)?"""
        if name.startswith(EMULATOR_ONLY_PREFIXES):
            return True
        since = COMMAND_SINCE.get(name)
        return since is None or since <= self.version


#: emulator-only commands, present in every era
EMULATOR_ONLY_PREFIXES = ("x-oob-test", "x-debug-")

#: implemented commands that came after QEMU 2.12 (all others are older);
#: CURRENT marks the emulator's monitor hotplug (bugs.md 23: proposed for
#: QEMU, never merged), present only in the current era
CURRENT = (99, 0, 0)
COMMAND_SINCE: dict[str, tuple[int, int, int]] = {
    "x-exit-preconfig": (3, 0, 0),  # with --preconfig
    "migrate-pause": (3, 0, 0),  # postcopy recovery
    "yank": (6, 0, 0),
    "query-yank": (6, 0, 0),
    "monitor-add": CURRENT,
    "monitor-remove": CURRENT,
    "query-monitors": CURRENT,
}

#: emulated command-line options that came after QEMU 2.12
OPTION_SINCE: dict[str, tuple[int, int, int]] = {"preconfig": (3, 0, 0)}

_LACKS_ALL = (
    # 8bd8b04adc9f (QEMU 9.0): a hang-up was handled before pending input
    Fix(11, "8bd8b04adc9f", "hup_same_priority_as_read"),
)

#: the eras, oldest first
ERAS: dict[str, Era] = {
    era.name: era
    for era in (
        Era(
            "2.12",
            (2, 12, 0),
            (
                # 2895aaa139b3 (4.2): CLOSED clearing the queue resumes the monitor
                Fix(1, "2895aaa139b3", "no_resume_on_queue_clear"),
                # 62aa1d887f (3.0) and e69ee454b5f9 (5.2): the current monitor;
                # in 2.12 a plain global of the main thread, modelled per thread
                Fix(8, "e69ee454b5f9", "current_monitor_per_thread"),
                # suspend on a full queue replaced COMMAND_DROPPED (3.0)
                Fix(16, "bf1e7301745a", "queue_full_drop_event"),
                # 69240fe62d1a, 1cc37471525d (3.0): in-band errors queued
                Fix(17, "69240fe62d1a", "report_inband_errors_immediately"),
                # replies written directly under mon_lock (the response queue
                # and its responder BH of abe3cd0ff7f7 removed, 4.0)
                Fix(18, "abe3cd0ff7f7", "queue_replies_for_iothread"),
                *_LACKS_ALL,
            ),
            bh_dispatcher=True,
        ),
        Era(
            "5.2",
            (5, 2, 0),
            (
                # a67b996e7894 (6.0): no yield holding qmp_queue_lock
                Fix(2, "a67b996e7894", "dispatcher_yields_with_queue_lock"),
                # eea7cd3fc513 (8.1): busy-flag ordering against the queue
                Fix(7, "eea7cd3fc513", "dispatcher_check_then_set_busy"),
                *_LACKS_ALL,
            ),
        ),
        Era(
            "7.2",
            (7, 2, 0),
            (Fix(7, "eea7cd3fc513", "dispatcher_check_then_set_busy"), *_LACKS_ALL),
        ),
        Era("8.1", (8, 1, 0), _LACKS_ALL),
        Era("current", QEMU_VERSION),
    )
}

DEFAULT_ERA = "current"


class UnknownEraError(ValueError):
    """An era name that does not exist; the message lists the valid ones."""

    def __init__(self, name: str) -> None:
        super().__init__(f"unknown era '{name}'; valid eras: {', '.join(ERAS)}")
        self.name = name


class _Selected:
    era: Era = ERAS[DEFAULT_ERA]


_selected = _Selected()


def era_lookup(name: str) -> Era:
    era = ERAS.get(name)
    if era is None:
        raise UnknownEraError(name)
    return era


def era_from_env(environ: Optional[dict[str, str]] = None) -> Optional[str]:
    """The era ``QEMU_MONITOR_EMU_ERA`` names (checked), or None if unset."""
    env = os.environ if environ is None else environ
    name = env.get(ERA_ENV, "")
    if not name:
        return None
    era_lookup(name)
    return name


def era_select(name: str) -> Era:
    """Make ``name`` the era of this process and turn its switches on.

    Called once, before ``monitor_init_globals``; the switches stay on for
    the life of the process, like ``-x-bug``.
    """
    era = era_lookup(name)
    bugs_enable(era.switches())
    _selected.era = era
    return era


def era_reset() -> None:
    """Back to the default era (tests; the switches are reset separately)."""
    _selected.era = ERAS[DEFAULT_ERA]


def current_era() -> Era:
    return _selected.era


def era_init_commands(cmds: QmpCommandList, era: Era) -> None:
    """Keep the commands ``era`` had, in their order.

    Eras with the bottom-half dispatcher had no coroutine commands
    (QCO_COROUTINE came with 5.2's coroutine dispatcher, 9ce44e2ce267):
    theirs run in the BH like every other command.
    """
    if era.name == DEFAULT_ERA:
        return
    old = cmds.commands
    cmds.commands = []
    cmds.by_name = {}
    for cmd in old:
        if era.has_command(cmd.name):
            options = cmd.options & ~QCO_COROUTINE if era.bh_dispatcher else cmd.options
            qmp_register_command(cmds, cmd.name, cmd.fn, options, cmd.special_features)
