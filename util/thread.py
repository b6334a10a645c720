"""QEMU's thread primitives (include/qemu/thread.h, util/qemu-thread-posix.c).

``QemuMutex``, ``QemuCond``, ``QemuEvent`` and ``QemuThread``, each with a
class name.  Every mutex acquisition goes through the lock-order checker
(util/lockdep.py) and the ``qemu_mutex_*`` trace events, so the checker and the
tracer see all locking of monitor/, chardev/ and qapi/.  Like QEMU's
error-checking mutexes they are not recursive and must be unlocked by their
owner.  Runs in any thread.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections import deque
from typing import Any, Callable, Optional

from greenlet import getcurrent

from util.lockdep import (
    LOCKDEP_WRAPPER_CODES,
    HeldStack,
    LockOrderError,
    checked_outer,
    code_line,
    lockdep_acquire,
    lockdep_release,
    lockdep_site_frame,
    lockdep_skip_frames_of,
    lockdep_tls,
)
from util.sched import (
    SCHED,
    sched_cond_signal,
    sched_cond_wait,
    sched_event_wait,
    sched_mutex_lock,
    sched_point,
    sched_sleep_ns,
    sched_thread_body,
    sched_thread_join,
    sched_thread_register,
)
from util.trace import trace_event

trace_qemu_mutex_lock = trace_event("qemu_mutex_lock", "mutex", "file", "line")
trace_qemu_mutex_locked = trace_event("qemu_mutex_locked", "mutex", "file", "line")
trace_qemu_mutex_unlock = trace_event("qemu_mutex_unlock", "mutex")
trace_qemu_mutex_contended = trace_event("qemu_mutex_contended", "mutex", "owner")

_getframe = sys._getframe


class QemuMutex:
    """A non-recursive mutex with a lock class name (``name``).

    Every request takes a dozen of these, so the lock-order bookkeeping is
    inline: a tuple pushed on the thread's held stack, the order check only
    when something is already held, the trace calls only when enabled.  The
    owner is the holder's held stack, which the push fetches anyway.
    """

    __slots__ = ("_checked_outer", "_lock", "label", "name", "owner")

    def __init__(self, name: str, label: str = "") -> None:
        self.name = name
        #: which instance (a monitor's name, say), for schedules and reports
        self.label = label
        self._lock = threading.Lock()
        #: the holder's held-lock stack (it names the thread), or None
        self.owner: Optional[HeldStack] = None
        #: outer classes the checker has already ranked against this class
        self._checked_outer = checked_outer(name)

    def lock(self) -> None:
        """Take the mutex, checking the lock order first (qemu_mutex_lock).

        Also the ``with`` statement's entry, so the caller's frame is the
        lock's site without a wrapper in between.
        """
        frame = _getframe(1)
        code = frame.f_code
        if code in LOCKDEP_WRAPPER_CODES:
            frame = lockdep_site_frame(frame)
            code = frame.f_code
        entry = (self, code, frame.f_lasti, getcurrent())
        stack = lockdep_tls.stack
        # the common nesting (one lock, usually the BQL, held; that pair of
        # classes checked before) needs no call into the checker
        if stack and (
            len(stack) != 1 or stack[0][0] is self or stack[0][0].name not in self._checked_outer
        ):
            lockdep_acquire(self, entry, stack)
        if trace_qemu_mutex_lock.state:
            trace_qemu_mutex_lock(self.name, code.co_filename, code_line(code, entry[2]))
        if SCHED.active:
            sched_mutex_lock(self)
        elif not self._lock.acquire(False):
            owner = self.owner
            trace_qemu_mutex_contended(self.name, None if owner is None else owner.ident)
            self._lock.acquire()
        self.owner = stack
        stack.append(entry)
        if trace_qemu_mutex_locked.state:
            trace_qemu_mutex_locked(self.name, code.co_filename, code_line(code, entry[2]))

    def trylock(self) -> bool:
        """Take the mutex if free; never blocks, so never an order violation."""
        if SCHED.active:
            sched_point("qemu_mutex_trylock", self)
        if not self._lock.acquire(False):
            return False
        stack = lockdep_tls.stack
        self.owner = stack
        frame = lockdep_site_frame(_getframe(1))
        stack.append((self, frame.f_code, frame.f_lasti, getcurrent()))
        return True

    def unlock(self, *_exc: object) -> None:
        """Release; only the owner may (QEMU's error-checking mutex).

        Also the ``with`` statement's exit (which passes the exception).
        """
        stack = lockdep_tls.stack
        if self.owner is not stack:
            raise LockOrderError(f"{self.name} unlocked by a thread that does not own it")
        if stack[-1][0] is self:
            stack.pop()
        else:
            lockdep_release(self, stack)
        self.owner = None
        if trace_qemu_mutex_unlock.state:
            trace_qemu_mutex_unlock(self.name)
        self._lock.release()
        if SCHED.active:
            sched_point("qemu_mutex_unlock", self)

    def locked_by_me(self) -> bool:
        """True when the calling thread holds the mutex."""
        return self.owner is lockdep_tls.stack

    __enter__ = lock
    __exit__ = unlock

    def __repr__(self) -> str:
        return f"<QemuMutex {self.name}{':' + self.label if self.label else ''}>"


lockdep_skip_frames_of(QemuMutex.lock, QemuMutex.trylock)


def QEMU_LOCK_GUARD(lockable: QemuMutex) -> QemuMutex:
    """``with QEMU_LOCK_GUARD(m):`` holds ``m`` for the block (lockable.h)."""
    return lockable


class QemuCond:
    """A condition variable usable with any :class:`QemuMutex`."""

    def __init__(self, name: str = "cond") -> None:
        self.name = name
        self._waiters: deque[threading.Lock] = deque()
        self._guard = threading.Lock()
        #: the explorer's waiters (util/sched.py), used instead while it runs
        self.sched_waiters: list[Any] = []

    def wait(self, mutex: QemuMutex, timeout: Optional[float] = None) -> bool:
        """Release ``mutex``, wait for a signal, retake ``mutex``.

        Returns False on timeout (qemu_cond_timedwait).
        """
        if SCHED.active:
            return sched_cond_wait(self, mutex, timeout)
        waiter = threading.Lock()
        waiter.acquire()
        with self._guard:
            self._waiters.append(waiter)
        mutex.unlock()
        try:
            got = waiter.acquire(timeout=-1 if timeout is None else timeout)
        finally:
            mutex.lock()
        if not got:
            with self._guard:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    got = True  # signalled between the timeout and the removal
        return got

    def signal(self) -> None:
        """Wake one waiter, if any."""
        if SCHED.active:
            sched_cond_signal(self, False)
            return
        with self._guard:
            if self._waiters:
                self._waiters.popleft().release()

    def broadcast(self) -> None:
        """Wake every waiter."""
        if SCHED.active:
            sched_cond_signal(self, True)
            return
        with self._guard:
            while self._waiters:
                self._waiters.popleft().release()


lockdep_skip_frames_of(QemuCond.wait)


class QemuEvent:
    """A manual-reset event (util/event.c): set, reset, wait."""

    def __init__(self, initial: bool = False, name: str = "event") -> None:
        self.name = name
        self._event = threading.Event()
        if initial:
            self._event.set()

    def set(self) -> None:
        if SCHED.active:
            sched_point("qemu_event_set", self)
        self._event.set()

    def reset(self) -> None:
        if SCHED.active:
            sched_point("qemu_event_reset", self)
        self._event.clear()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: Optional[float] = None) -> bool:
        """Wait until set; False if ``timeout`` seconds passed first."""
        if SCHED.active:
            return sched_event_wait(self, timeout)
        return self._event.wait(timeout)


class QemuThread:
    """A named, joinable thread (qemu_thread_create with QEMU_THREAD_JOINABLE)."""

    def __init__(self, name: str, fn: Callable[..., Any], *args: Any) -> None:
        self.name = name
        #: the explorer's actor for this thread, when it runs under util/sched.py
        self.actor = sched_thread_register(name) if SCHED.active else None
        if self.actor is not None:
            args, fn = (self.actor, fn, args), sched_thread_body
        self._thread = threading.Thread(target=fn, args=args, name=name, daemon=True)
        # As qemu_thread_create: the new thread starts with every signal
        # blocked, so host signals interrupt the main loop thread only.
        old = signal.pthread_sigmask(signal.SIG_BLOCK, signal.valid_signals())
        try:
            self._thread.start()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, old)
        if self.actor is not None:
            sched_point("qemu_thread_create", self.actor.label)

    @property
    def ident(self) -> Optional[int]:
        return self._thread.ident

    @property
    def native_id(self) -> Optional[int]:
        """The host's id of the thread (a Linux TID)."""
        return self._thread.native_id

    def join(self, timeout: Optional[float] = None) -> None:
        """Wait for the thread to finish (qemu_thread_join)."""
        if self.actor is not None and SCHED.active:
            sched_thread_join(self.actor)
        self._thread.join(timeout)
        if self._thread.is_alive():
            raise TimeoutError(f"thread {self.name} did not finish")

    def is_self(self) -> bool:
        return self._thread.ident == threading.get_ident()


def qemu_thread_create(name: str, fn: Callable[..., Any], *args: Any) -> QemuThread:
    """Start ``fn(*args)`` in a new thread called ``name``."""
    return QemuThread(name, fn, *args)


def g_usleep(us: int) -> None:
    """Let ``us`` microseconds pass in the calling thread (glib's g_usleep).

    QEMU sleeps where it polls with back-off (the RCU thread's batching) or
    where work simply takes time (the guest model's I/O exits); under the
    explorer the time is virtual and the sleeper is one more blocked actor.
    """
    if SCHED.active:
        sched_sleep_ns(us * 1000)
    else:
        time.sleep(us / 1e6)


def qemu_thread_get_name() -> str:
    """The calling thread's name."""
    return threading.current_thread().name


def qemu_thread_set_affinity(thread: Optional[QemuThread], host_cpus: set[int]) -> None:
    """Restrict ``thread`` (None: the calling one) to ``host_cpus``.

    Threads it creates afterwards inherit the set, as with QEMU's
    thread-context objects.  Raises OSError when the host refuses.
    """
    tid = 0 if thread is None else thread.native_id
    if tid is None:
        raise OSError("the thread has not started")
    os.sched_setaffinity(tid, host_cpus)


def qemu_thread_get_cpu() -> Optional[int]:
    """The host CPU the calling thread is running on now, if the host says."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            stat = f.read()
    except OSError:
        return None
    # the name in parentheses may hold spaces; "processor" is field 39
    fields = stat.rsplit(b")", 1)[-1].split()
    return int(fields[36]) if len(fields) > 36 else None


def qemu_get_thread_id() -> int:
    """The calling thread's identifier."""
    return threading.get_ident()


class QemuThreadLocal(threading.local):
    """Thread-local storage (QEMU's ``__thread`` variables)."""
