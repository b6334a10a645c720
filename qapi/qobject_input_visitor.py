"""Check and convert QMP arguments against the schema, with QEMU's exact errors.

Mirrors ``qapi/qobject-input-visitor.c`` (the visitor), the input half of
``qapi/qapi-visit-core.c`` (sized integers, enums), and what QEMU generates
into ``qapi-visit-*.c`` / ``qapi-commands-*.c`` (the walk over a type's
members).  Runs in the thread that dispatches the command: the main loop for
in-band commands, the monitor I/O thread for OOB ones.  A visitor is used once
and owned by one thread.

What a client can observe, and therefore what is copied exactly:

* which problem is reported first.  Members are visited in schema order (base
  members, own members, then the chosen variant's members), each nested
  object is checked for leftovers as soon as its members are done, and the
  leftover reported is the first one glib's hash table yields
  (:mod:`qapi._ghash`), filled in QDict order (:func:`qapi.json_writer.qdict_keys`);
* the wording.  "Missing", "unexpected" and wrong-JSON-type errors name the
  member by its full path (``backend.data.addr``, ``instances[1].id``);
  enum and sized-integer errors use the bare member name, and ``null`` for a
  list element, because that is what QEMU's visit core has at hand.

The result is plain data: objects become dicts whose keys are the wire names
in schema order (absent optional members are left out), enums stay strings,
``uint64`` wraps negative input as QEMU does, ``number`` becomes ``float``.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Union

from qapi._ghash import GStrHashSet
from qapi.error import error_setg
from qapi.json_writer import qdict_keys
from qapi.schema import (
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    ObjectType,
    SchemaType,
    qtype_of,
)

_ABSENT: Any = object()  # "no such member"; None is JSON null
_INT64 = (-(2**63), 2**63 - 1)
_UINT64_MAX = 2**64 - 1

# Sized integers: range and the C type QEMU names in its complaint.
_SIZED_INTS = {
    "int8": (-(2**7), 2**7 - 1, "int8_t"),
    "int16": (-(2**15), 2**15 - 1, "int16_t"),
    "int32": (-(2**31), 2**31 - 1, "int32_t"),
    "uint8": (0, 2**8 - 1, "uint8_t"),
    "uint16": (0, 2**16 - 1, "uint16_t"),
    "uint32": (0, 2**32 - 1, "uint32_t"),
}


def _is_qnum(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _as_int64(value: Any) -> Optional[int]:
    """``qnum_get_try_int``: an integer that fits int64, else None.

    Integers beyond uint64 would have been doubles in QEMU's parser, so they
    are rejected here even if the Python parser kept them exact.
    """
    if isinstance(value, int) and not isinstance(value, bool):
        if _INT64[0] <= value <= _INT64[1]:
            return value
    return None


class _StackObject:
    """One open container: a dict with the members visited so far, or a list
    and a cursor."""

    __slots__ = ("index", "name", "obj", "visited")

    def __init__(self, name: Optional[str], obj: Union[dict[str, Any], list[Any]]) -> None:
        self.name = name
        self.obj = obj
        #: dicts: members consumed, in visit order (an ordered set)
        self.visited: dict[str, None] = {}
        #: lists: index of the element consumed last
        self.index = -1


class QObjectInputVisitor:
    """The visitor proper: a stack of open containers over one JSON value."""

    def __init__(self, root: Any) -> None:
        self._root = root
        self._stack: list[_StackObject] = []

    # -- naming

    def full_name(self, name: Optional[str]) -> str:
        """Path of ``name`` in the open containers (QEMU's ``full_name``).

        Dict members are joined with ``.``, list elements get ``[i]``, and an
        unnamed root contributes nothing.
        """
        path = ""
        for so in reversed(self._stack):
            if isinstance(so.obj, dict):
                path = "." + (name if name is not None else "<anonymous>") + path
            else:
                path = f"[{so.index}]" + path
            name = so.name
        if name is not None:
            return name + path
        if path.startswith("."):
            return path[1:]
        return path or "<anonymous>"

    # -- fetching values

    def _try_get_object(self, name: Optional[str], consume: bool) -> Any:
        if not self._stack:
            return self._root
        tos = self._stack[-1]
        if isinstance(tos.obj, dict):
            assert name is not None
            value = tos.obj.get(name, _ABSENT)
            if consume and value is not _ABSENT:
                tos.visited[name] = None
            return value
        assert name is None
        nxt = tos.index + 1
        value = tos.obj[nxt] if nxt < len(tos.obj) else _ABSENT
        if consume:
            tos.index = nxt
        return value

    def _get_object(self, name: Optional[str], consume: bool = True) -> Any:
        value = self._try_get_object(name, consume)
        if value is _ABSENT:
            raise error_setg("Parameter '%s' is missing", self.full_name(name))
        return value

    def _invalid_type(self, name: Optional[str], expected: str) -> Exception:
        return error_setg(
            "Invalid parameter type for '%s', expected: %s", self.full_name(name), expected
        )

    # -- containers

    def start_struct(self, name: Optional[str]) -> None:
        value = self._get_object(name)
        if not isinstance(value, dict):
            raise self._invalid_type(name, "object")
        self._stack.append(_StackObject(name, value))

    def check_struct(self) -> None:
        """Complain about the first member nobody visited, in glib's order.

        QEMU puts the members in a GHashTable (in QDict order) when the
        struct starts and removes each one it visits; the leftover it names
        depends on that table's layout.  Leftovers are rare, so the table is
        built only when there is one, replaying the same insertions and
        removals (removing a member twice changes nothing, hence the set).
        """
        so = self._stack[-1]
        if len(so.visited) == len(so.obj):
            return  # only present members are recorded: all were visited
        assert isinstance(so.obj, dict)
        unvisited = GStrHashSet()
        for key in qdict_keys(so.obj):
            unvisited.add(key)
        for key in so.visited:
            unvisited.discard(key)
        leftover = next(iter(unvisited))
        raise error_setg("Parameter '%s' is unexpected", self.full_name(leftover))

    def end_struct(self) -> None:
        assert isinstance(self._stack.pop().obj, dict)

    def start_list(self, name: Optional[str]) -> None:
        value = self._get_object(name)
        if not isinstance(value, list):
            raise self._invalid_type(name, "array")
        self._stack.append(_StackObject(name, value))

    def has_next(self) -> bool:
        tos = self._stack[-1]
        assert isinstance(tos.obj, list)
        return tos.index + 1 < len(tos.obj)

    def end_list(self) -> None:
        assert isinstance(self._stack.pop().obj, list)

    def start_alternate(self, name: Optional[str]) -> Any:
        """Peek at an alternate's value without consuming it; the branch will."""
        return self._get_object(name, consume=False)

    def optional(self, name: str) -> bool:
        return self._try_get_object(name, consume=False) is not _ABSENT

    # -- scalars

    def type_int64(self, name: Optional[str]) -> int:
        value = _as_int64(self._get_object(name))
        if value is None:
            raise self._invalid_type(name, "integer")
        return value

    def type_uint64(self, name: Optional[str]) -> int:
        value = self._get_object(name)
        if isinstance(value, int) and not isinstance(value, bool):
            if 0 <= value <= _UINT64_MAX:
                return value
            if _as_int64(value) is not None:
                return value & _UINT64_MAX  # negative input wraps, for compatibility
        raise error_setg("Parameter '%s' expects uint64", self.full_name(name))

    def type_bool(self, name: Optional[str]) -> bool:
        value = self._get_object(name)
        if not isinstance(value, bool):
            raise self._invalid_type(name, "boolean")
        return value

    def type_str(self, name: Optional[str]) -> str:
        value = self._get_object(name)
        if not isinstance(value, str):
            raise self._invalid_type(name, "string")
        return value

    def type_number(self, name: Optional[str]) -> float:
        value = self._get_object(name)
        if not _is_qnum(value):
            raise self._invalid_type(name, "number")
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf

    def type_null(self, name: Optional[str]) -> None:
        if self._get_object(name) is not None:
            raise self._invalid_type(name, "null")

    def type_any(self, name: Optional[str]) -> Any:
        return self._get_object(name)


# ---------------------------------------------------------------------------
# The schema walk (what QEMU generates as visit_type_FOO)


def visit_type(v: QObjectInputVisitor, typ: SchemaType, name: Optional[str]) -> Any:
    """Visit one value of type ``typ`` named ``name`` in the current container.

    Picks the generated function by the type's class (one dict lookup, no
    isinstance chain: the schema's type classes have no subclasses).
    """
    return _VISIT_TYPE[type(typ)](v, typ, name)


def _visit_object(v: QObjectInputVisitor, typ: ObjectType, name: Optional[str]) -> dict[str, Any]:
    v.start_struct(name)
    result = visit_members(v, typ)
    v.check_struct()
    v.end_struct()
    return result


def visit_members(v: QObjectInputVisitor, typ: ObjectType) -> dict[str, Any]:
    """Visit an object's members in the open struct: base, own, then variant."""
    result: dict[str, Any] = {}
    for member in typ.members:
        if member.optional and not v.optional(member.name):
            continue
        result[member.name] = visit_type(v, member.type, member.name)
    if typ.variants:
        case = result[typ.variants.tag_member.name]
        branch = typ.variants.find(case).type
        assert isinstance(branch, ObjectType)
        result.update(visit_members(v, branch))
    return result


_SCALARS: dict[str, Callable[[QObjectInputVisitor, Optional[str]], Any]] = {
    "int": QObjectInputVisitor.type_int64,
    "int64": QObjectInputVisitor.type_int64,
    "uint64": QObjectInputVisitor.type_uint64,
    "size": QObjectInputVisitor.type_uint64,
    "str": QObjectInputVisitor.type_str,
    "bool": QObjectInputVisitor.type_bool,
    "number": QObjectInputVisitor.type_number,
    "null": QObjectInputVisitor.type_null,
    "any": QObjectInputVisitor.type_any,
}


def _visit_builtin(v: QObjectInputVisitor, typ: BuiltinType, name: Optional[str]) -> Any:
    sized = _SIZED_INTS.get(typ.name)
    if sized is not None:
        low, high, c_type = sized
        value = v.type_int64(name) if low < 0 else v.type_uint64(name)
        if not low <= value <= high:
            raise error_setg("Parameter '%s' expects %s", name or "null", c_type)
        return value
    return _SCALARS[typ.name](v, name)


def _visit_enum(v: QObjectInputVisitor, typ: EnumType, name: Optional[str]) -> str:
    value = v.type_str(name)
    if value not in typ.value_set:
        raise error_setg("Parameter '%s' does not accept value '%s'", name or "null", value)
    return value


def _visit_list(v: QObjectInputVisitor, typ: ArrayType, name: Optional[str]) -> list[Any]:
    v.start_list(name)
    result = []
    while v.has_next():
        result.append(visit_type(v, typ.element_type, None))
    v.end_list()
    return result


_QTYPES = {bool: "boolean", str: "string", dict: "object", list: "array", type(None): "null"}


def _visit_alternate(v: QObjectInputVisitor, typ: AlternateType, name: Optional[str]) -> Any:
    """Pick the branch by the value's JSON type, as the generated switch on QType does."""
    value = v.start_alternate(name)
    qtype = "number" if _is_qnum(value) else _QTYPES.get(type(value))
    branch = next((b for b in typ.variants if qtype_of(b.type) == qtype), None)
    if branch is None:
        raise error_setg("Invalid parameter type for '%s', expected: %s", name or "null", typ.name)
    return visit_type(v, branch.type, name)


_VISIT_TYPE: dict[type, Callable[[QObjectInputVisitor, Any, Optional[str]], Any]] = {
    BuiltinType: _visit_builtin,
    EnumType: _visit_enum,
    ArrayType: _visit_list,
    ObjectType: _visit_object,
    AlternateType: _visit_alternate,
}


# ---------------------------------------------------------------------------
# Entry points


def qobject_input_visit(typ: SchemaType, value: Any, name: Optional[str] = None) -> Any:
    """Check and convert a whole value; ``name`` prefixes every error path."""
    return visit_type(QObjectInputVisitor(value), typ, name)


def qmp_input_command_args(cmd: Command, args: dict[str, Any]) -> dict[str, Any]:
    """Visit a command's ``arguments`` as its generated marshaller would.

    The root object has no name, so errors say ``'id'``, not ``'arguments.id'``.
    A command without arguments still opens and checks the object, which is
    how QEMU rejects ``{"execute": "stop", "arguments": {"x": 1}}``.
    """
    v = QObjectInputVisitor(args)
    v.start_struct(None)
    result = visit_members(v, cmd.arg_type) if cmd.arg_type else {}
    v.check_struct()
    v.end_struct()
    return result
