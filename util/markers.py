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


Check = tuple[Callable[[], bool], str]


def _marker(check: Callable[[], bool], what: str) -> Callable[[F], F]:
    """A decorator asserting ``check()`` on entry.

    Stacked markers fold into one wrapper that runs every check, outermost
    first: ``do_qmp_dispatch_bh`` is both main-loop-only and BQL-only, and
    runs once per request.
    """

    def decorate(fn: F) -> F:
        inner = getattr(fn, "__marker_inner__", fn)
        checks: tuple[Check, ...] = ((check, what), *getattr(fn, "__marker_checks__", ()))

        def fail(rule: str) -> ThreadRoleError:
            return ThreadRoleError(
                f"{inner.__qualname__} {rule}; called in {threading.current_thread().name}"
            )

        if len(checks) == 1:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                if not check():
                    raise fail(what)
                return inner(*args, **kwargs)

        else:

            def wrapper(*args: Any, **kwargs: Any) -> Any:
                for one, one_what in checks:
                    if not one():
                        raise fail(one_what)
                return inner(*args, **kwargs)

        functools.update_wrapper(wrapper, inner)
        wrapper.__marker_inner__ = inner  # type: ignore[attr-defined]
        wrapper.__marker_checks__ = checks  # type: ignore[attr-defined]
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
