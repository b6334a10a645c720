"""``query-qmp-schema`` and ``query-commands`` data, derived from the schema.

Mirrors QEMU's ``scripts/qapi/introspect.py`` (the generator of
``qapi-introspect.c``) and the list building of ``qmp_query_commands()`` in
``monitor/qmp-cmds-control.c``.  QEMU computes the introspection data at build
time; here :func:`qmp_schema_info` computes it from the loaded schema, once per
call, in the main loop thread (``query-qmp-schema`` is an in-band command).

The order of entries and the masked names are part of what a client sees, so
the generator's algorithm is copied step for step:

1. visit every command and event in schema (module) order;
2. each type a visit *uses* goes onto a work list, which is then walked in
   order, each type using further types as it is visited;
3. every non-builtin, non-array type gets the next number ("0", "1", ...) the
   first time it is used; arrays are called ``[N]`` after their element, and
   every integer type shows up as ``int``.

The entries come out as plain dicts with keys in no particular order: the
marshaller's output visitor puts them in ``SchemaInfo`` member order, which is
what QEMU 7.2 does too (its command is generated code, not a raw QLit).
"""

from __future__ import annotations

from typing import Any

from qapi.qmp_registry import QmpCommand, QmpCommandList, qmp_for_each_command
from qapi.schema import (
    AlternateType,
    ArrayType,
    BuiltinType,
    Command,
    EnumType,
    Event,
    ObjectMember,
    ObjectType,
    Schema,
    SchemaType,
)

SchemaInfo = dict[str, Any]


class _IntrospectionGenerator:
    """One run of QEMU's QAPISchemaGenIntrospectVisitor."""

    def __init__(self, schema: Schema, unmask: bool) -> None:
        self._schema = schema
        self._unmask = unmask
        self._trees: list[SchemaInfo] = []
        self._used_types: list[SchemaType] = []
        self._name_map: dict[str, str] = {}

    def generate(self) -> list[SchemaInfo]:
        for entity in self._schema.entities():
            if isinstance(entity, Command):
                self._visit_command(entity)
            else:
                self._visit_event(entity)
        for typ in self._used_types:  # grows while it is walked, on purpose
            self._visit_type(typ)
        return self._trees

    def _name(self, name: str) -> str:
        if self._unmask:
            return name
        if name not in self._name_map:
            self._name_map[name] = str(len(self._name_map))
        return self._name_map[name]

    def _use_type(self, typ: SchemaType) -> str:
        if typ.json_type() == "int":
            typ = self._schema.lookup_type("int")
        elif isinstance(typ, ArrayType) and typ.element_type.json_type() == "int":
            typ = self._schema.array_of(self._schema.lookup_type("int"))
        if typ not in self._used_types:
            self._used_types.append(typ)
        if isinstance(typ, BuiltinType):
            return typ.name
        if isinstance(typ, ArrayType):
            return "[" + self._use_type(typ.element_type) + "]"
        return self._name(typ.name)

    def _gen_tree(self, name: str, meta_type: str, obj: SchemaInfo, features: list[str]) -> None:
        if meta_type not in ("command", "event", "builtin", "array"):
            name = self._name(name)
        obj["name"] = name
        obj["meta-type"] = meta_type
        if features:
            obj["features"] = list(features)
        self._trees.append(obj)

    def _visit_command(self, cmd: Command) -> None:
        empty = self._schema.the_empty_object_type
        obj: SchemaInfo = {
            "arg-type": self._use_type(cmd.arg_type or empty),
            "ret-type": self._use_type(cmd.ret_type or empty),
        }
        if cmd.allow_oob:
            obj["allow-oob"] = True
        self._gen_tree(cmd.name, "command", obj, cmd.features)

    def _visit_event(self, event: Event) -> None:
        arg_type = event.arg_type or self._schema.the_empty_object_type
        self._gen_tree(event.name, "event", {"arg-type": self._use_type(arg_type)}, event.features)

    def _visit_type(self, typ: SchemaType) -> None:
        if isinstance(typ, BuiltinType):
            self._gen_tree(typ.name, "builtin", {"json-type": typ.json_type()}, [])
        elif isinstance(typ, EnumType):
            self._visit_enum(typ)
        elif isinstance(typ, ArrayType):
            element = self._use_type(typ.element_type)
            self._gen_tree("[" + element + "]", "array", {"element-type": element}, [])
        elif isinstance(typ, ObjectType):
            self._visit_object(typ)
        else:
            assert isinstance(typ, AlternateType)
            members = [{"type": self._use_type(v.type)} for v in typ.variants]
            self._gen_tree(typ.name, "alternate", {"members": members}, typ.features)

    def _visit_enum(self, typ: EnumType) -> None:
        members: list[SchemaInfo] = []
        for member in typ.members:
            info: SchemaInfo = {"name": member.name}
            if member.features:
                info["features"] = list(member.features)
            members.append(info)
        self._gen_tree(typ.name, "enum", {"members": members, "values": typ.values}, typ.features)

    def _visit_object(self, typ: ObjectType) -> None:
        obj: SchemaInfo = {"members": [self._gen_member(m) for m in typ.members]}
        if typ.variants:
            obj["tag"] = typ.variants.tag_member.name
            obj["variants"] = [
                {"case": v.name, "type": self._use_type(v.type)} for v in typ.variants.variants
            ]
        self._gen_tree(typ.name, "object", obj, typ.features)

    def _gen_member(self, member: ObjectMember) -> SchemaInfo:
        info: SchemaInfo = {"name": member.name, "type": self._use_type(member.type)}
        if member.optional:
            info["default"] = None
        if member.features:
            info["features"] = list(member.features)
        return info


def qmp_schema_info(schema: Schema) -> list[SchemaInfo]:
    """The ``query-qmp-schema`` result for ``schema``, masked as QEMU masks it."""
    return _IntrospectionGenerator(schema, unmask=False).generate()


def qmp_schema_info_unmasked(schema: Schema) -> list[SchemaInfo]:
    """The same entries with real type names, for reading and for tests.

    QEMU's generator has the same switch (``--unmask-non-abi-names``).
    """
    return _IntrospectionGenerator(schema, unmask=True).generate()


def query_commands_list(cmds: QmpCommandList) -> list[dict[str, str]]:
    """``query-commands`` data: enabled commands, newest registration first.

    QEMU prepends each name to a list while walking the registry, hence the
    reversed order; disabled commands are left out.
    """
    names: list[dict[str, str]] = []

    def add(cmd: QmpCommand) -> None:
        if cmd.enabled:
            names.insert(0, {"name": cmd.name})

    qmp_for_each_command(cmds, add)
    return names
