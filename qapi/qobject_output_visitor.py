"""Check a handler's result (or an event's data) and put it in schema order.

Mirrors ``qapi/qobject-output-visitor.c`` together with the generated
``qmp_marshal_output_*`` / ``qapi_event_send_*`` code that drives it.  Runs
in whichever thread produced the value (main loop, monitor I/O thread, or the
thread raising an event).

Why it exists: in QEMU a C struct *cannot* have the wrong shape, and the
output visitor inserts an object's members into the QDict in schema order.
That insertion order is visible on the wire, because members that share a
QDict bucket come out newest first (``"micro", "minor", "major"``).  A Python
handler returns a plain dict in whatever order it was written, so this module
rebuilds every object in schema order and, since a wrong shape here is a bug
in the emulator and not the client's fault, raises ``AssertionError`` (never
a :class:`~qapi.error.QapiError`) when the value does not match the schema.
"""

from __future__ import annotations

from typing import Any, Callable

from qapi.schema import (
    AlternateType,
    ArrayType,
    BuiltinType,
    EnumType,
    ObjectType,
    SchemaType,
    qtype_of,
)

_INT_RANGES = {
    "int": (-(2**63), 2**63 - 1),
    "int64": (-(2**63), 2**63 - 1),
    "int8": (-(2**7), 2**7 - 1),
    "int16": (-(2**15), 2**15 - 1),
    "int32": (-(2**31), 2**31 - 1),
    "uint8": (0, 2**8 - 1),
    "uint16": (0, 2**16 - 1),
    "uint32": (0, 2**32 - 1),
    "uint64": (0, 2**64 - 1),
    "size": (0, 2**64 - 1),
}
_PY_QTYPES = {bool: "boolean", str: "string", dict: "object", list: "array", type(None): "null"}
_PY_TYPES = {"str": str, "bool": bool, "null": type(None)}


def _fail(path: str, problem: str) -> AssertionError:
    return AssertionError(f"QAPI output {path or '<root>'}: {problem}")


def qobject_output_visit(typ: SchemaType, value: Any, path: str = "") -> Any:
    """Return ``value`` rebuilt in schema order; ``path`` names it in failures.

    Picks the visit by the type's class (one dict lookup, no isinstance
    chain: the schema's type classes have no subclasses).
    """
    return _OUTPUT[type(typ)](typ, value, path)


def _output_enum(typ: EnumType, value: Any, path: str) -> Any:
    if not isinstance(value, str) or value not in typ.value_set:
        raise _fail(path, f"{value!r} is not a value of {typ.name}")
    return value


def _output_list(typ: ArrayType, value: Any, path: str) -> list[Any]:
    if not isinstance(value, list):
        raise _fail(path, f"expected a list, got {type(value).__name__}")
    element = typ.element_type
    return [qobject_output_visit(element, e, f"{path}[{i}]") for i, e in enumerate(value)]


def _output_object(typ: ObjectType, value: Any, path: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(path, f"expected a dict for {typ.name}, got {type(value).__name__}")
    result = _output_members(typ, value, path)
    if len(result) != len(value):  # result's keys all come from value
        extra = set(value) - set(result)
        raise _fail(path, f"members {sorted(extra)} are not in {typ.name}")
    return result


def _output_members(typ: ObjectType, value: dict[str, Any], path: str) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for member in typ.members:
        sub = f"{path}.{member.name}" if path else member.name
        if member.name in value:
            result[member.name] = qobject_output_visit(member.type, value[member.name], sub)
        elif not member.optional:
            raise _fail(sub, f"required member of {typ.name} is missing")
    if typ.variants:
        branch = typ.variants.find(result[typ.variants.tag_member.name]).type
        assert isinstance(branch, ObjectType)
        result.update(_output_members(branch, value, path))
    return result


def _output_builtin(typ: BuiltinType, value: Any, path: str) -> Any:
    if typ.name in _INT_RANGES:
        low, high = _INT_RANGES[typ.name]
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise _fail(path, f"{value!r} is not a valid {typ.name}")
        return value
    if typ.name == "number":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise _fail(path, f"{value!r} is not a number")
        return float(value)
    expected = _PY_TYPES.get(typ.name)
    if expected is not None and not isinstance(value, expected):
        raise _fail(path, f"{value!r} is not a {typ.name}")
    return value


def _output_alternate(typ: AlternateType, value: Any, path: str) -> Any:
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    qtype = "number" if is_number else _PY_QTYPES.get(type(value))
    branch = next((b for b in typ.variants if qtype_of(b.type) == qtype), None)
    if branch is None:
        raise _fail(path, f"{value!r} matches no branch of {typ.name}")
    return qobject_output_visit(branch.type, value, path)


_OUTPUT: dict[type, Callable[[Any, Any, str], Any]] = {
    BuiltinType: _output_builtin,
    EnumType: _output_enum,
    ArrayType: _output_list,
    ObjectType: _output_object,
    AlternateType: _output_alternate,
}
