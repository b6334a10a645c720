"""File descriptors passed to the monitor (monitor/fds.c).

``getfd``/``closefd`` keep named fds per monitor under its ``mon_lock``;
``add-fd``/``remove-fd``/``query-fdsets`` manage the global fd sets under
``mon_fdsets_lock`` (a leaf lock).  The fds themselves arrive with SCM_RIGHTS
on the monitor's UNIX socket and are taken from the chardev when the command
runs (main loop, BQL held).  fds are closed only after the lock is dropped.
"""

from __future__ import annotations

import os
from typing import Any, Optional

from chardev.char_fe import qemu_chr_fe_get_msgfd
from monitor.monitor import monitor_cur, monitor_globals
from monitor.monitor_internal import MonFdset, MonFdsetFd, Monitor
from qapi.error import error_setg
from util.osdep import qemu_close_fds


def _current_monitor() -> Monitor:
    mon = monitor_cur()
    assert mon is not None, "fd commands run on behalf of a monitor"
    return mon


def _take_passed_fd(mon: Monitor) -> int:
    fd = qemu_chr_fe_get_msgfd(mon.chr)
    if fd == -1:
        raise error_setg("No file descriptor supplied via SCM_RIGHTS")
    return fd


def qmp_getfd(fdname: str) -> None:
    """Name the fd that came with this request; a reused name replaces."""
    mon = _current_monitor()
    fd = _take_passed_fd(mon)
    if fdname[:1].isdigit():
        os.close(fd)
        raise error_setg("Parameter 'fdname' expects a name not starting with a digit")
    with mon.mon_lock:
        old = mon.fds.get(fdname)
        mon.fds[fdname] = fd
    if old is not None:
        os.close(old)


def qmp_closefd(fdname: str) -> None:
    mon = _current_monitor()
    with mon.mon_lock:
        fd = mon.fds.pop(fdname, None)
    if fd is None:
        raise error_setg("File descriptor named '%s' not found", fdname)
    os.close(fd)


def monitor_fdset_cleanup_locked(fdset: MonFdset, to_close: list[int]) -> bool:
    """Drop removed fds (and all of them when unused and the VM runs).

    Returns True when the set is now empty and must be unlinked.  Caller
    holds mon_fdsets_lock and closes ``to_close`` after dropping it.
    """
    g = monitor_globals()
    unused = not fdset.dup_fds and g.mon_refcount == 0
    running = g.runstate_is_running()
    keep = []
    for entry in fdset.fds:
        if (entry.removed or unused) and running:
            to_close.append(entry.fd)
        else:
            keep.append(entry)
    fdset.fds = keep
    return not fdset.fds and not fdset.dup_fds


def monitor_fdsets_cleanup() -> None:
    """Called when a client goes away: release what nothing holds."""
    g = monitor_globals()
    to_close: list[int] = []
    with g.mon_fdsets_lock:
        g.mon_fdsets = [s for s in g.mon_fdsets if not monitor_fdset_cleanup_locked(s, to_close)]
    qemu_close_fds(to_close)


def monitor_fdset_add_fd(fd: int, fdset_id: Optional[int], opaque: Optional[str]) -> dict[str, Any]:
    """Put ``fd`` in set ``fdset_id`` (created if new; lowest free id if None)."""
    g = monitor_globals()
    if fdset_id is not None and fdset_id < 0:
        raise error_setg("Parameter 'fdset-id' expects a non-negative value")
    with g.mon_fdsets_lock:
        fdset = _find_or_create_fdset(g.mon_fdsets, fdset_id)
        fdset.fds.insert(0, MonFdsetFd(fd, opaque))
        return {"fdset-id": fdset.id, "fd": fd}


def _find_or_create_fdset(fdsets: list[MonFdset], fdset_id: Optional[int]) -> MonFdset:
    if fdset_id is None:
        fdset_id = 0
        for s in fdsets:
            if s.id != fdset_id:
                break
            fdset_id += 1
    for s in fdsets:
        if s.id == fdset_id:
            return s
    fdset = MonFdset(fdset_id)
    fdsets.append(fdset)
    fdsets.sort(key=lambda s: s.id)
    return fdset


def qmp_add_fd(fdset_id: Optional[int] = None, opaque: Optional[str] = None) -> dict[str, Any]:
    mon = _current_monitor()
    fd = _take_passed_fd(mon)
    try:
        return monitor_fdset_add_fd(fd, fdset_id, opaque)
    except Exception:
        os.close(fd)
        raise


def qmp_remove_fd(fdset_id: int, fd: Optional[int] = None) -> None:
    """Mark one fd (or the whole set) removed, then clean the set up."""
    g = monitor_globals()
    to_close: list[int] = []
    found = False
    with g.mon_fdsets_lock:
        fdset = next((s for s in g.mon_fdsets if s.id == fdset_id), None)
        if fdset is not None:
            targets = [e for e in fdset.fds if fd is None or e.fd == fd]
            found = fd is None or bool(targets)
            for entry in targets:
                entry.removed = True
            if found and monitor_fdset_cleanup_locked(fdset, to_close):
                g.mon_fdsets.remove(fdset)
    qemu_close_fds(to_close)
    if not found:
        name = f"fdset-id:{fdset_id}" if fd is None else f"fdset-id:{fdset_id}, fd:{fd}"
        raise error_setg("File descriptor named '%s' not found", name)


def qmp_query_fdsets() -> list[dict[str, Any]]:
    """Sets newest id first, fds oldest first: QEMU prepends while it walks."""
    g = monitor_globals()
    with g.mon_fdsets_lock:
        out: list[dict[str, Any]] = []
        for fdset in g.mon_fdsets:
            fds: list[dict[str, Any]] = []
            for entry in fdset.fds:
                info: dict[str, Any] = {"fd": entry.fd}
                if entry.opaque is not None:
                    info["opaque"] = entry.opaque
                fds.insert(0, info)
            out.insert(0, {"fdset-id": fdset.id, "fds": fds})
        return out
