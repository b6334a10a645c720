"""Host signals with their sender (util/compatfd.c's sigwait thread, os-posix.c).

Why a thread: QEMU's termsig_handler is an ``SA_SIGINFO`` handler, so it
learns who sent the signal (``si_pid``) and ``qemu_system_killed`` can say
``terminating on signal 15 from pid N (name)``.  A Python signal handler
gets only the number.  ``signal.sigwaitinfo`` returns the whole siginfo, so
the signals are blocked in every thread (QemuThread starts threads with all
signals blocked; :func:`qemu_sigwait_start` blocks them in the caller) and
one thread, ``sigwait``, takes them, as compatfd.c's thread does where the
host has no signalfd.

Runs ``handler`` in the ``sigwait`` thread; it must only record and kick
(``qemu_notify_event``), as a signal handler would.
"""

from __future__ import annotations

import signal
from collections.abc import Iterable
from typing import Callable

from util.thread import QemuThread

SigHandler = Callable[[int, int], None]


def _sigwait_thread(sigs: frozenset[int], handler: SigHandler) -> None:
    while True:
        info = signal.sigwaitinfo(sigs)
        handler(info.si_signo, info.si_pid)


def qemu_sigwait_start(sigs: Iterable[int], handler: SigHandler) -> QemuThread:
    """Block ``sigs`` here and deliver them to ``handler(signo, sender_pid)``.

    Call it from the main thread before any other thread exists, so that no
    thread is left with the signals unblocked.  The thread lives as long as
    the process (it is a daemon, like every QemuThread).
    """
    wanted = frozenset(sigs)
    signal.pthread_sigmask(signal.SIG_BLOCK, wanted)
    return QemuThread("sigwait", _sigwait_thread, wanted, handler)
