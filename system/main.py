"""``main()`` (system/main.c): parse, init, loop, clean up; signals and
-pidfile/-daemonize, which belong to the process rather than the monitors."""

from __future__ import annotations

import fcntl
import os
import signal
import sys
from typing import Optional

from system import runstate as rs
from system.vl import (
    VlConfig,
    VlError,
    VlExit,
    qemu_cleanup,
    qemu_init,
    qemu_main_loop,
    qemu_parse_args,
)
from util.compatfd import qemu_sigwait_start
from util.error_report import error_log_init, error_report, error_set_progname
from util.lockdep import lockdep_violations
from util.main_loop import main_loop_initialised
from util.thread import qemu_thread_get_cpu, qemu_thread_set_affinity


def termsig_handler(signum: int, sender: int) -> None:
    """SIGINT/SIGTERM/SIGHUP: ask the main loop to shut down (host-signal).

    Runs in the ``sigwait`` thread with the sender's pid (si_pid).  Once the
    main loop has been torn down there is nothing left to ask.
    """
    if main_loop_initialised():
        rs.qemu_system_killed(signum, sender)


def os_setup_signal_handling() -> None:
    """Before any thread exists: the termination signals go to ``sigwait``."""
    qemu_sigwait_start((signal.SIGINT, signal.SIGTERM, signal.SIGHUP), termsig_handler)


#: environment variable that turns the one-CPU placement off ("off")
AFFINITY_ENV = "QEMU_MONITOR_EMU_AFFINITY"


def os_setup_cpu_affinity() -> None:
    """Keep the emulator's threads on the CPU the host started it on.

    CPython runs one thread's Python code at a time (the GIL), so the main
    loop and the monitor I/O thread never compute in parallel; spread over
    two CPUs, every hand-off between them (an eventfd kick, the GIL itself)
    is a cross-CPU wake-up instead of a switch on one CPU.  On a virtual
    machine such a wake-up costs tens of microseconds, more than the Python
    work of a whole request.  The CPU is the one the kernel chose when it
    placed the new process, so emulators started side by side spread out.
    Threads created later inherit the placement.  With more emulators than
    CPUs, or to let the kernel move the threads freely, set
    ``QEMU_MONITOR_EMU_AFFINITY=off``.  It changes no thread's work and no
    lock: only where the host runs them.
    """
    if os.environ.get(AFFINITY_ENV, "").lower() == "off":
        return
    cpu = qemu_thread_get_cpu()
    if cpu is None:
        return
    try:
        qemu_thread_set_affinity(None, {cpu})
    except OSError:
        pass  # a host that refuses keeps the default placement


def os_daemonize() -> int:
    """Fork before any thread exists; the parent waits for the child's word."""
    rfd, wfd = os.pipe()
    pid = os.fork()
    if pid > 0:
        os.close(wfd)
        status = os.read(rfd, 1)
        os._exit(0 if status == b"\0" else 1)
    os.close(rfd)
    os.setsid()
    return wfd


def os_setup_post(daemon_fd: int) -> None:
    """Tell the parent we are up, then detach stdio as QEMU does."""
    os.write(daemon_fd, b"\0")
    os.close(daemon_fd)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)


class PidfileError(Exception):
    """qemu_write_pidfile failed; the message is QEMU's."""


def qemu_write_pidfile(path: str) -> int:
    """Create (0600), lock and fill the pid file (util/oslib-posix.c).

    The write lock is held, with the returned fd open, for the life of the
    process: a second process given the same file fails instead of taking
    it over.  If the file was removed or replaced between the open and the
    lock, someone else is racing with us: try again.
    """
    while True:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
        except OSError as e:
            raise PidfileError(f"Could not create '{path}': {e.strerror}") from None
        try:
            b = os.fstat(fd)
        except OSError as e:
            os.close(fd)
            raise PidfileError(f"Cannot stat file: {e.strerror}") from None
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # fcntl(F_SETLK, F_WRLCK)
        except OSError as e:
            os.close(fd)
            raise PidfileError(f"Cannot lock pid file: {e.strerror}") from None
        try:
            a = os.stat(path)
        except OSError:
            os.close(fd)
            continue
        if a.st_ino == b.st_ino:
            break
        os.close(fd)
    pidstr = f"{os.getpid()}\n".encode()
    try:
        os.ftruncate(fd, 0)
    except OSError as e:
        _unlink_and_close(path, fd)
        raise PidfileError(f"Failed to truncate pid file: {e.strerror}") from None
    try:
        written = os.write(fd, pidstr)
    except OSError:
        written = -1
    if written != len(pidstr):
        _unlink_and_close(path, fd)
        raise PidfileError("Failed to write pid file")
    return fd


def _unlink_and_close(path: str, fd: int) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
    os.close(fd)


def main(argv: Optional[list[str]] = None) -> int:
    error_set_progname("qemu-monitor-emu")
    # internal errors (callback exceptions) print one line each, as qemu.qmp logs
    error_log_init("qemu-monitor-emu: %(message)s")
    try:
        config: VlConfig = qemu_parse_args(sys.argv[1:] if argv is None else argv)
    except VlExit as e:
        return e.code
    except VlError as e:
        error_report(str(e))
        return 1
    daemon_fd = os_daemonize() if config.daemonize else None
    pidfile: Optional[tuple[str, int]] = None
    if config.pidfile:
        # qemu_maybe_daemonize: before anything is created; removed at any exit
        try:
            pidfile = (os.path.realpath(config.pidfile), qemu_write_pidfile(config.pidfile))
        except PidfileError as e:
            error_report(f"cannot create PID file: {e}")
            return 1
    os_setup_cpu_affinity()  # first: threads inherit the placement
    os_setup_signal_handling()
    try:
        try:
            qemu_init(config)
        except VlError as e:
            error_report(str(e))
            return 1
        if daemon_fd is not None:
            os_setup_post(daemon_fd)
        qemu_main_loop()
        qemu_cleanup(config)
        for violation in lockdep_violations():
            error_report(f"lock-order violation: {violation}")
    finally:
        if pidfile is not None:
            _unlink_and_close(*pidfile)
    return 0


if __name__ == "__main__":
    sys.exit(main())
