"""Thread-role markers that check, always on.

QEMU marks functions with ``GLOBAL_STATE_CODE()``, ``IO_CODE()`` and
``coroutine_fn`` and checks some of them in debug builds.  Here the markers
are decorators that assert on every call, so a function reached from the
wrong thread fails where it is entered, naming the function and the thread.
"""

from __future__ import annotations

import functools
import threading
from typing import Any, Callable, TypeVar

from util.coroutine import qemu_in_coroutine
from util.iothread import qemu_in_iothread
from util.main_loop import bql_locked, qemu_in_main_thread

F = TypeVar("F", bound=Callable[..., Any])


class ThreadRoleError(AssertionError):
    """A function ran in a thread (or context) its marker forbids."""


def _marker(check: Callable[[], bool], what: str) -> Callable[[F], F]:
    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            if not check():
                raise ThreadRoleError(
                    f"{fn.__qualname__} {what}; called in {threading.current_thread().name}"
                )
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


#: QEMU's GLOBAL_STATE_CODE(): only the main loop thread.
main_loop_only = _marker(qemu_in_main_thread, "must run in the main loop thread")
#: the caller must hold the BQL.
requires_bql = _marker(bql_locked, "requires the BQL")
#: must run in coroutine context.
coroutine_fn = _marker(qemu_in_coroutine, "must run in coroutine context")
#: must run in an IOThread (e.g. mon_iothread).
iothread_only = _marker(qemu_in_iothread, "must run in an IOThread")
