"""Helpers shared by the qapi tests: schemas, stand-in handlers, a fake monitor map."""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable, Optional

from qapi.qmp_dispatch import QmpDispatchEnv
from qapi.qmp_marshal import py_name
from qapi.schema import (
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    ObjectType,
    Schema,
    SchemaType,
    load_schema,
)
from util.coroutine import Coroutine, qemu_coroutine_self

DATA = Path(__file__).with_name("data")


def load_test_schema() -> Schema:
    return load_schema(DATA / "qapi-schema-test.json")


def sample_value(typ: SchemaType) -> Any:
    """A minimal value that satisfies ``typ`` (required members only)."""
    if isinstance(typ, BuiltinType):
        samples = {"string": "", "number": 0.0, "int": 0, "boolean": False, "null": None}
        return samples.get(typ.json_type(), {})
    if isinstance(typ, EnumType):
        return typ.values[0]
    if isinstance(typ, ArrayType):
        return []
    if isinstance(typ, AlternateType):
        return sample_value(typ.variants[0].type)
    assert isinstance(typ, ObjectType)
    value = {m.name: sample_value(m.type) for m in typ.members if not m.optional}
    if typ.variants:
        branch = typ.variants.find(value[typ.variants.tag_member.name]).type
        assert isinstance(branch, ObjectType)
        value.update(sample_value(branch))
    return value


Call = tuple[str, dict[str, Any]]


def stand_in_handler(cmd: Command, calls: list[Call], result: Any = None) -> Callable[..., Any]:
    """A handler with exactly the signature the schema asks for.

    It records its keyword arguments and returns ``result`` or a sample of
    the command's return type.  Test scaffolding only: production binding has
    no stubs.
    """

    def handler(**kwargs: Any) -> Any:
        calls.append((cmd.name, kwargs))
        if result is not None:
            return result
        return sample_value(cmd.ret_type) if cmd.ret_type else None

    def boxed(arg: Any) -> Any:
        calls.append((cmd.name, {"<boxed>": arg}))
        return None

    if cmd.boxed or not cmd.gen:
        return boxed
    members = cmd.arg_type.members if cmd.arg_type else []
    kind = inspect.Parameter.KEYWORD_ONLY
    params = [inspect.Parameter(py_name(m.name), kind) for m in members]
    handler.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    return handler


def stand_in_handlers(schema: Schema, calls: list[Call]) -> dict[str, Callable[..., Any]]:
    return {cmd.name: stand_in_handler(cmd, calls) for cmd in schema.commands()}


class FakeMonitors:
    """The coroutine -> monitor map monitor/ keeps, reduced to a dict."""

    def __init__(self) -> None:
        self.cur: dict[Coroutine, object] = {}
        self.log: list[tuple[str, Optional[object]]] = []

    def monitor_cur(self) -> Optional[object]:
        return self.cur.get(qemu_coroutine_self())

    def monitor_set_cur(self, co: Coroutine, mon: Optional[object]) -> Optional[object]:
        old = self.cur.get(co)
        self.log.append((co.name, mon))
        if mon is None:
            self.cur.pop(co, None)
        else:
            self.cur[co] = mon
        return old

    def env(self, **kwargs: Any) -> QmpDispatchEnv:
        return QmpDispatchEnv(self.monitor_cur, self.monitor_set_cur, **kwargs)


# -- comparing introspection data across schemas (masked names differ)

Entries = dict[str, dict[str, Any]]


def resolve(entries: Entries, name: str) -> Any:
    """The structure behind a (masked) name, with names resolved recursively."""
    e = entries.get(name)
    if e is None or e["meta-type"] == "builtin":
        return name
    kind = e["meta-type"]
    if kind == "array":
        return ["array", resolve(entries, e["element-type"])]
    if kind == "enum":
        return {"enum": e["values"], "members": e["members"], "features": e.get("features")}
    if kind == "alternate":
        return {"alternate": [resolve(entries, m["type"]) for m in e["members"]]}
    if kind == "object":
        members = [
            (m["name"], "default" in m, resolve(entries, m["type"]), m.get("features"))
            for m in e["members"]
        ]
        variants = {v["case"]: resolve(entries, v["type"]) for v in e.get("variants", [])}
        return {"members": members, "tag": e.get("tag"), "variants": variants}
    refs = {k: resolve(entries, e[k]) for k in ("arg-type", "ret-type") if k in e}
    return {kind: refs, "allow-oob": e.get("allow-oob"), "features": e.get("features")}


def assert_subset(ours: Any, theirs: Any, path: str = "") -> None:
    """``ours`` is ``theirs`` with some enum values and union branches left out."""
    if isinstance(ours, dict) and "enum" in ours:
        assert set(ours["enum"]) <= set(theirs["enum"]), path
        assert ours["enum"] == [v for v in theirs["enum"] if v in ours["enum"]], path
        return
    if isinstance(ours, dict) and "variants" in ours:
        assert set(ours["variants"]) <= set(theirs["variants"]), path
        for case, sub in ours["variants"].items():
            assert_subset(sub, theirs["variants"][case], f"{path}/{case}")
        ours = {**ours, "variants": None}
        theirs = {**theirs, "variants": None}
    if isinstance(ours, dict):
        assert ours.keys() == theirs.keys(), path
        for key in ours:
            assert_subset(ours[key], theirs[key], f"{path}.{key}")
    elif isinstance(ours, (list, tuple)):
        assert len(ours) == len(theirs), path
        for i, (a, b) in enumerate(zip(ours, theirs)):
            assert_subset(a, b, f"{path}[{i}]")
    else:
        assert ours == theirs, path
