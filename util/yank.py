"""The yank registry (util/yank.c): instances and the functions that cut them.

A yank instance (a chardev, a block node, migration) registers functions
that abort its network connections without waiting, so a management tool can
recover from a hung peer.  ``yank`` and ``query-yank`` are OOB-capable, so the
registry is guarded by a plain leaf lock and its functions must not block.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from util.thread import QemuMutex

YankFn = Callable[[Any], None]


class YankRegistry:
    """Registered instances, newest first (QEMU inserts at the head)."""

    def __init__(self) -> None:
        self.lock = QemuMutex("yank_lock")
        self.instances: list[tuple[dict[str, Any], list[tuple[YankFn, Any]]]] = []

    def _find(self, instance: dict[str, Any]) -> Optional[list[tuple[YankFn, Any]]]:
        for inst, fns in self.instances:
            if inst == instance:
                return fns
        return None


_registry = YankRegistry()


def yank_registry() -> YankRegistry:
    return _registry


def chardev_yank_instance(label: str) -> dict[str, Any]:
    return {"type": "chardev", "id": label}


def yank_register_instance(instance: dict[str, Any]) -> bool:
    """Register ``instance``; False if it already is (QEMU reports an error)."""
    with _registry.lock:
        if _registry._find(instance) is not None:
            return False
        _registry.instances.insert(0, (dict(instance), []))
        return True


def yank_unregister_instance(instance: dict[str, Any]) -> None:
    with _registry.lock:
        _registry.instances = [(i, f) for i, f in _registry.instances if i != instance]


def yank_register_function(instance: dict[str, Any], fn: YankFn, opaque: Any) -> None:
    with _registry.lock:
        fns = _registry._find(instance)
        assert fns is not None, f"yank instance {instance} not registered"
        fns.insert(0, (fn, opaque))


def yank_unregister_function(instance: dict[str, Any], fn: YankFn, opaque: Any) -> None:
    with _registry.lock:
        fns = _registry._find(instance)
        assert fns is not None, f"yank instance {instance} not registered"
        fns[:] = [(f, o) for f, o in fns if not (f == fn and o is opaque)]


def yank_instances() -> list[dict[str, Any]]:
    """Registered instances, oldest first (query-yank's order)."""
    with _registry.lock:
        return [dict(i) for i, _ in reversed(_registry.instances)]


def yank_find_missing(instances: list[dict[str, Any]]) -> bool:
    """True if any of ``instances`` is not registered."""
    with _registry.lock:
        return any(_registry._find(i) is None for i in instances)


def yank_run(instances: list[dict[str, Any]]) -> None:
    """Run every function of every instance (after checking all exist)."""
    with _registry.lock:
        work = [list(_registry._find(i) or []) for i in instances]
    for fns in work:
        for fn, opaque in fns:
            fn(opaque)
