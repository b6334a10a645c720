"""Bug switches: QEMU's historical monitor races, each revertible on demand.

``../shared/reference/bugs.md`` (and docs/bugs/) catalogue real races that
QEMU fixed in its monitor.  Each one the emulator models is a *switch*
here: off by default, so the default behaviour is QEMU's.  Turning a switch
on reverts exactly that fix, at the place the fix was made, in one small
commented branch that reads ``if BUG.<name>:``, so the bug and the fix sit
side by side.  When no switch is on, the branch costs one attribute test.

Switches are turned on before the emulator starts, and stay as they are for
the life of the process (an explorer run is one process): by
``-x-bug NAME[,NAME...]`` on the command line, ``QEMU_MONITOR_EMU_BUGS`` in
the environment, ``python -m tools.explore --bug NAME``, or the pytest
marker ``@pytest.mark.bugs("NAME", ...)``.  An unknown name is an error
that lists the valid ones.

``CATALOG`` holds every catalogued entry (modelled or not), so that
``python -m tools.catalog list`` can say which are reproduced; ``SWITCHES``
holds only the switches that are implemented.  A switch exists only once the
branch that reverts its fix exists: a test checks that every switch named
here is read somewhere in the emulator.

Bug 3 is the other way round: QEMU never fixed it, so QEMU's behaviour (the
default) *is* the bug, and the fix is the emulator-only monitor option
``-mon ...,x-session-check=on``.  It is catalogued with that note and has no
switch.

Runs in any thread; the switches are written only at start-up.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Optional

#: the environment variable that turns switches on (comma separated)
BUGS_ENV = "QEMU_MONITOR_EMU_BUGS"


class BugEntry:
    """One catalogued race: what broke, when it was fixed, and how."""

    __slots__ = ("fix", "note", "number", "summary", "title", "year")

    def __init__(
        self, number: int, title: str, year: str, fix: str, summary: str, note: str = ""
    ) -> None:
        self.number = number
        self.title = title
        self.year = year
        self.fix = fix
        self.summary = summary
        self.note = note


class BugSwitch:
    """One switch: the catalogue entry it belongs to and the fix it reverts."""

    __slots__ = ("entry", "name", "reverts", "where")

    def __init__(self, name: str, entry: int, where: str, reverts: str) -> None:
        self.name = name
        self.entry = entry
        #: module and function where the fix (and the switch's branch) lives
        self.where = where
        #: the fix that turning the switch on undoes, in a line
        self.reverts = reverts


#: every entry of bugs.md, modelled or not (numbers as in bugs.md)
CATALOG: tuple[BugEntry, ...] = (
    BugEntry(
        1,
        "Monitor stuck suspended after CLOSED clears the queue",
        "2019",
        "2895aaa139b3",
        "a new client is greeted but never answered",
    ),
    BugEntry(
        2,
        "Dispatcher yields holding qmp_queue_lock; CLOSED blocks the main loop",
        "2021",
        "a67b996e7894",
        "the whole process hangs",
    ),
    BugEntry(
        3,
        "Reply of a disconnected client delivered to the next client",
        "2021",
        "proposed, not merged",
        "the next client gets a reply it never asked for",
        note="unfixed upstream: the default is the bug; -mon ...,x-session-check=on is the fix",
    ),
    BugEntry(
        4,
        "monitor_cleanup destroys monitors while the dispatcher uses them",
        "2020",
        "357bda959078",
        "abort at quit; the quit reply is lost",
    ),
    BugEntry(
        5,
        "Cleanup schedules a BH into the stopped I/O thread; queued commands delay exit",
        "2021",
        "c81219a7dd36, b248e61652e2",
        "assertion at shutdown; slow exit",
    ),
    BugEntry(
        6,
        "Waking the dispatcher after it terminated",
        "2025",
        "03f50d7ee756",
        "the I/O thread crashes during shutdown",
    ),
    BugEntry(
        7,
        "Dispatcher double scheduling and lost wake-up",
        "2020-2023",
        "9ce44e2ce267, eea7cd3fc513",
        "abort (scheduled twice) or a stalled request",
    ),
    BugEntry(
        8,
        "The current monitor was per thread, not per coroutine",
        "2018/2020",
        "e69ee454b5f9",
        "errors and fd lookups reach the wrong monitor",
    ),
    BugEntry(
        9,
        "monitor_cur() before the monitor globals exist",
        "2018-2026",
        "Berrange 2026",
        "abort on an early error report",
    ),
    BugEntry(
        10,
        "Socket disconnect in the I/O thread frees the channel under a writer",
        "2019",
        "78d01598aea8",
        "crash at quit while writing an event",
    ),
    BugEntry(
        11,
        "Hang-up handled before pending input on the same socket",
        "2024",
        "8bd8b04adc9f",
        "the last command of a client that writes and closes is lost",
    ),
    BugEntry(
        12,
        "A chardev watch removed while another thread prepares it",
        "2024",
        "e0bf95443ee9",
        "assertion during monitor setup",
    ),
    BugEntry(
        13,
        "Event emission re-enters itself and deadlocks on monitor_lock",
        "<=2018",
        "thread-local event queue",
        "deadlock",
    ),
    BugEntry(
        14,
        "Monitor appended after monitor_cleanup emptied mon_list",
        "2018/2019",
        "monitor_destroyed guard",
        "leak or use after cleanup",
    ),
    BugEntry(
        15,
        "Suspend and resume across threads; prompt under mon_lock; mux counter",
        "2018-2023",
        "c5d0c55f1ac4, 6ee7c82d0df9",
        "stalled input or a self-deadlock",
    ),
    BugEntry(
        16,
        "COMMAND_DROPPED on a full queue, replaced by flow control",
        "2018",
        "bf1e7301745a (the drop)",
        "commands dropped; the client must resend",
    ),
    BugEntry(
        17,
        "In-band errors jump the queue when OOB is on",
        "2018",
        "69240fe62d1a, 1cc37471525d",
        "in-band replies out of order",
    ),
    BugEntry(
        18,
        "Responses queued for the I/O thread lost at quit or on CLOSED",
        "2018",
        "abe3cd0ff7f7",
        "the quit reply is lost",
    ),
    BugEntry(
        19,
        "iothread_stop races with the thread entering its loop",
        "2017-2018",
        "stop via a BH in the iothread",
        "hang at exit",
    ),
    BugEntry(
        20,
        "Coroutine screendump waits forever for a display update",
        "2020-2021",
        "b577ab2dda3a",
        "every in-band command stalls",
    ),
    BugEntry(
        21,
        "Coroutine block_resize yields holding a foreign AioContext lock",
        "2020",
        "960d5fb3e8ee, 8089eab2bd5f",
        "deadlock of the command and guest I/O",
    ),
    BugEntry(
        22,
        "Dispatcher parked in iohandler_ctx: progress rules",
        "2020",
        "9ce44e2ce267",
        "hang at quit or an assertion",
    ),
    BugEntry(
        23,
        "Runtime monitor hotplug races",
        "2026",
        "Brauner series v1-v4; QOM successor",
        "use after free, lost reply",
    ),
    BugEntry(
        24,
        "Monitor device_add against a vCPU holding an RCU read lock",
        "2021",
        "Greg Kurz, 'rcu: Introduce force_rcu notifier' and 'accel/tcg: Register a "
        "force_rcu notifier' (20211109183523.47726-3-groug@kaod.org, gitlab #650)",
        "the monitor hangs",
    ),
)

#: the implemented switches, by name; each is read at the place of its fix
SWITCHES: dict[str, BugSwitch] = {}


def _declare(*switches: BugSwitch) -> None:
    for sw in switches:
        assert sw.name not in SWITCHES, sw.name
        assert any(e.number == sw.entry for e in CATALOG), sw.entry
        SWITCHES[sw.name] = sw


_declare()

# bugs.md 24 (system/accel_model.py): a busy vCPU inside cpu_exec's RCU
# read-side section, and drain_call_rcu in device_add waiting for it
_declare(
    BugSwitch(
        "vcpu_holds_rcu_read_lock",
        24,
        "system/accel_model.py mttcg_cpu_thread_fn",
        "the vCPU's force_rcu notifier, which kicks it out of its read-side "
        "section while drain_call_rcu waits",
    ),
)

# Eras (issue 17): the fixes QEMU 2.12 lacked, as monitor/eras.py names them.
_declare(
    BugSwitch(
        "current_monitor_per_thread",
        8,
        "monitor/monitor.py monitor_cur, monitor_set_cur",
        "the current monitor is per coroutine (e69ee454b5f9), not per thread",
    ),
    BugSwitch(
        "queue_full_drop_event",
        16,
        "monitor/qmp.py handle_qmp_command, monitor_qmp_dispatcher_co",
        "with OOB a full queue suspends the monitor instead of dropping the "
        "request with COMMAND_DROPPED (bf1e7301745a)",
    ),
    BugSwitch(
        "report_inband_errors_immediately",
        17,
        "monitor/qmp.py handle_qmp_command",
        "in-band parse and request-shape errors are queued, answered in order "
        "(69240fe62d1a, 1cc37471525d)",
    ),
    BugSwitch(
        "queue_replies_for_iothread",
        18,
        "monitor/qmp.py qmp_send_response_text",
        "replies are written directly under mon_lock, not queued for a "
        "responder BH in the I/O thread (abe3cd0ff7f7's queue, later removed)",
    ),
    BugSwitch(
        "no_flush_at_cleanup",
        18,
        "monitor/monitor.py monitor_cleanup",
        "cleanup flushes the response queues after stopping the I/O thread "
        "(abe3cd0ff7f7); only with queue_replies_for_iothread",
    ),
)


class _Bugs:
    """The switches as attributes, so a branch costs one attribute test.

    Only declared names exist: reading an undeclared switch is an
    AttributeError, so a typo cannot silently read "off".
    """

    __slots__ = tuple(SWITCHES)

    def __init__(self) -> None:
        for name in SWITCHES:
            setattr(self, name, False)

    if TYPE_CHECKING:
        # the slots are made from SWITCHES, which mypy cannot see

        def __getattr__(self, name: str) -> bool: ...


#: the one object code reads: ``if BUG.no_resume_on_queue_clear:``
BUG = _Bugs()


class UnknownBugError(ValueError):
    """A switch name that does not exist; the message lists the valid ones."""

    def __init__(self, name: str) -> None:
        valid = ", ".join(sorted(SWITCHES)) or "(none)"
        super().__init__(f"unknown bug switch '{name}'; valid switches: {valid}")
        self.name = name


def bug_names(text: str) -> list[str]:
    """Split ``NAME[,NAME...]`` (empty parts ignored), checking every name."""
    names = [part.strip() for part in text.split(",") if part.strip()]
    for name in names:
        if name not in SWITCHES:
            raise UnknownBugError(name)
    return names


def bugs_enable(names: Iterable[str]) -> None:
    """Turn the named switches on; all names are checked before any is set."""
    names = list(names)
    for name in names:
        if name not in SWITCHES:
            raise UnknownBugError(name)
    for name in names:
        setattr(BUG, name, True)


def bugs_reset() -> None:
    """Every switch off (QEMU's behaviour)."""
    for name in SWITCHES:
        setattr(BUG, name, False)


def bugs_enabled() -> list[str]:
    """The switches that are on, sorted."""
    return sorted(name for name in SWITCHES if getattr(BUG, name))


def bugs_from_env(environ: Optional[dict[str, str]] = None) -> list[str]:
    """The names ``QEMU_MONITOR_EMU_BUGS`` asks for (checked, not enabled)."""
    env = os.environ if environ is None else environ
    return bug_names(env.get(BUGS_ENV, ""))


def catalog_entry(number: int) -> BugEntry:
    for entry in CATALOG:
        if entry.number == number:
            return entry
    raise KeyError(number)


def switches_of(number: int) -> list[BugSwitch]:
    """The implemented switches of catalogue entry ``number``."""
    return [sw for sw in SWITCHES.values() if sw.entry == number]
