"""The QAPI schema: definitions loaded from ``qapi/schema/*.json``.

Mirrors QEMU's ``scripts/qapi/schema.py`` (and the expression checks of
``scripts/qapi/expr.py``).  QEMU runs that code at build time to generate C;
here it runs once at start-up, in the main thread, and the resulting
:class:`Schema` is read-only afterwards, so any thread may use it.

One source of truth: the argument visitor, the command registry options, the
return/event checks and ``query-qmp-schema`` are all derived from this model.
Nothing about a command's shape is written down anywhere else.

File format: each file is a JSON array of expressions in QAPI's vocabulary
(``include``, ``pragma``, ``enum``, ``struct``, ``union``, ``alternate``,
``command``, ``event``; ``'*name'`` marks an optional member, ``['T']`` a
list of T).  Strict JSON replaces QAPI's Python-ish syntax so the loader needs
no parser of its own; a ``doc`` string may appear on any expression.

Mistakes in the schema are programming errors: they raise
:class:`QAPISemError` at load time, never a :class:`~qapi.error.QapiError`.
"""

from __future__ import annotations

import functools
import json
import os
from typing import Any, Optional, Union

SPECIAL_FEATURES = ("deprecated", "unstable")
DEFAULT_SCHEMA = os.path.join(os.path.dirname(__file__), "schema", "qapi-schema.json")

# Built-in types and the JSON type each travels as (QEMU's _def_predefineds).
_BUILTINS = {
    "str": "string",
    "number": "number",
    "int": "int",
    "int8": "int",
    "int16": "int",
    "int32": "int",
    "int64": "int",
    "uint8": "int",
    "uint16": "int",
    "uint32": "int",
    "uint64": "int",
    "size": "int",
    "bool": "boolean",
    "null": "null",
    "any": "value",
}
_META_KEYS = ("enum", "struct", "union", "alternate", "command", "event")

Expr = dict[str, Any]


class QAPISemError(Exception):
    """A schema definition is inconsistent (a bug in the .json files)."""


# ---------------------------------------------------------------------------
# Entities
#
# Plain classes rather than dataclasses: a dataclass compiles its methods
# when its module is imported (about 0.2 ms each), and these are imported by
# every start-up.  They compare by identity, like QEMU's schema objects.


class SchemaType:
    """A type; compared by identity, like QEMU's schema objects."""

    def __init__(self, name: str) -> None:
        self.name = name

    def json_type(self) -> str:
        raise NotImplementedError


class BuiltinType(SchemaType):
    def __init__(self, name: str, json_type_name: str) -> None:
        super().__init__(name)
        self.json_type_name = json_type_name

    def json_type(self) -> str:
        return self.json_type_name


class EnumMember:
    def __init__(self, name: str, features: Optional[list[str]] = None) -> None:
        self.name = name
        self.features: list[str] = [] if features is None else features


class EnumType(SchemaType):
    def __init__(
        self,
        name: str,
        members: Optional[list[EnumMember]] = None,
        features: Optional[list[str]] = None,
    ) -> None:
        super().__init__(name)
        self.members: list[EnumMember] = [] if members is None else members
        self.features: list[str] = [] if features is None else features

    def json_type(self) -> str:
        return "string"

    @property
    def values(self) -> list[str]:
        return [m.name for m in self.members]

    @functools.cached_property
    def value_set(self) -> frozenset[str]:
        """``values`` for the visitors' membership tests on every request.

        Computed on first use, which must come after loading: the loader
        fills ``members`` after creating the type.
        """
        return frozenset(m.name for m in self.members)


class ArrayType(SchemaType):
    def __init__(self, name: str, element_type: SchemaType) -> None:
        super().__init__(name)
        self.element_type = element_type

    def json_type(self) -> str:
        return "array"


class ObjectMember:
    def __init__(
        self,
        name: str,
        type: SchemaType,
        optional: bool = False,
        features: Optional[list[str]] = None,
    ) -> None:
        self.name = name
        self.type = type
        self.optional = optional
        self.features: list[str] = [] if features is None else features


class Variant:
    def __init__(self, name: str, type: SchemaType) -> None:
        self.name = name
        self.type = type


class Variants:
    def __init__(self, tag_member: ObjectMember, variants: list[Variant]) -> None:
        self.tag_member = tag_member
        self.variants = variants

    def find(self, case: str) -> Variant:
        return next(v for v in self.variants if v.name == case)


class ObjectType(SchemaType):
    """A struct or union.  ``members`` is flat: the base's members come first."""

    def __init__(
        self,
        name: str,
        members: Optional[list[ObjectMember]] = None,
        base: Optional[ObjectType] = None,
        variants: Optional[Variants] = None,
        implicit: bool = False,
        features: Optional[list[str]] = None,
    ) -> None:
        super().__init__(name)
        self.members: list[ObjectMember] = [] if members is None else members
        self.base = base
        self.variants = variants
        self.implicit = implicit
        self.features: list[str] = [] if features is None else features

    def json_type(self) -> str:
        return "object"


class AlternateType(SchemaType):
    def __init__(
        self,
        name: str,
        variants: Optional[list[Variant]] = None,
        features: Optional[list[str]] = None,
    ) -> None:
        super().__init__(name)
        self.variants: list[Variant] = [] if variants is None else variants
        self.features: list[str] = [] if features is None else features

    def json_type(self) -> str:
        return "value"


class Command:
    def __init__(
        self,
        name: str,
        arg_type: Optional[ObjectType],
        ret_type: Optional[SchemaType],
        boxed: bool = False,
        allow_oob: bool = False,
        allow_preconfig: bool = False,
        coroutine: bool = False,
        success_response: bool = True,
        features: Optional[list[str]] = None,
        gen: bool = True,
    ) -> None:
        self.name = name
        self.arg_type = arg_type
        self.ret_type = ret_type
        self.boxed = boxed
        #: False: the handler gets the raw arguments and checks them itself
        #: ('gen': false, as device_add)
        self.gen = gen
        self.allow_oob = allow_oob
        self.allow_preconfig = allow_preconfig
        self.coroutine = coroutine
        self.success_response = success_response
        self.features: list[str] = [] if features is None else features


class Event:
    def __init__(
        self,
        name: str,
        arg_type: Optional[ObjectType],
        boxed: bool = False,
        features: Optional[list[str]] = None,
    ) -> None:
        self.name = name
        self.arg_type = arg_type
        self.boxed = boxed
        self.features: list[str] = [] if features is None else features


Entity = Union[Command, Event]
_TYPE_KINDS: dict[str, type[Union[EnumType, ObjectType, AlternateType]]] = {
    "enum": EnumType,
    "struct": ObjectType,
    "union": ObjectType,
    "alternate": AlternateType,
}


def c_name(name: str) -> str:
    """QEMU's c_name() without the keyword protection: ``-`` and ``.`` -> ``_``."""
    return name.replace("-", "_").replace(".", "_")


def qtype_of(typ: SchemaType) -> str:
    """The JSON kind that selects ``typ`` as an alternate branch (QEMU's QType)."""
    kind = typ.json_type()
    return "number" if kind == "int" else kind


# ---------------------------------------------------------------------------
# The schema


class Schema:
    """All definitions, with commands and events in module order."""

    def __init__(self) -> None:
        self._types: dict[str, SchemaType] = {}
        self._entities: list[Entity] = []
        self._commands: dict[str, Command] = {}
        self._events: dict[str, Event] = {}
        for name, json_type in _BUILTINS.items():
            self._types[name] = BuiltinType(name, json_type)
            self.array_of(self._types[name])
        self.the_empty_object_type = ObjectType("q_empty", implicit=True)
        self._types["q_empty"] = self.the_empty_object_type

    def lookup_type(self, name: str) -> SchemaType:
        return self._types[name]

    def array_of(self, element: SchemaType) -> ArrayType:
        """The (unique) list type of ``element``, named as QEMU names it."""
        name = element.name + "List"
        if name not in self._types:
            self._types[name] = ArrayType(name, element)
        typ = self._types[name]
        assert isinstance(typ, ArrayType)
        return typ

    def lookup_command(self, name: str) -> Command:
        return self._commands[name]

    def lookup_event(self, name: str) -> Event:
        return self._events[name]

    def commands(self) -> list[Command]:
        return list(self._commands.values())

    def events(self) -> list[Event]:
        return list(self._events.values())

    def entities(self) -> list[Entity]:
        """Commands and events in definition order (introspection's first pass)."""
        return list(self._entities)

    def _define_type(self, typ: SchemaType) -> None:
        if typ.name in self._types:
            raise QAPISemError(f"type '{typ.name}' is already defined")
        self._types[typ.name] = typ

    def _define_entity(self, ent: Entity) -> None:
        table: dict[str, Any] = self._commands if isinstance(ent, Command) else self._events
        if ent.name in table:
            raise QAPISemError(f"'{ent.name}' is already defined")
        table[ent.name] = ent
        self._entities.append(ent)


def load_schema(path: Union[str, os.PathLike[str]] = DEFAULT_SCHEMA) -> Schema:
    """Load a schema from its top file, following includes."""
    exprs = _read_modules(path)
    return _Builder(exprs).build()


@functools.cache
def qapi_schema() -> Schema:
    """The emulator's own schema, loaded on first use and shared.

    Sharing is safe: a loaded schema is never modified, so it is constant data
    like the tables QEMU generates at build time, not per-run state.
    """
    return load_schema()


# ---------------------------------------------------------------------------
# Reading files
#
# Paths are strings and os.path, not pathlib: loading is on the start-up path,
# where pathlib's import and its per-path objects are measurable.


def _read_modules(top: Union[str, os.PathLike[str]]) -> list[Expr]:
    """Expressions grouped by module, modules in order of first inclusion.

    QEMU's generator visits module by module, so a module's definitions stay
    together even when another module is included from its middle.
    """
    modules: dict[str, list[Expr]] = {}
    _read_module(os.path.realpath(top), modules)
    return [expr for exprs in modules.values() for expr in exprs]


def _read_module(path: str, modules: dict[str, list[Expr]]) -> None:
    if path in modules:
        return
    own: list[Expr] = []
    modules[path] = own
    with open(path, encoding="utf-8") as f:
        exprs = json.load(f)
    if not isinstance(exprs, list):
        raise QAPISemError(f"{path}: a schema file must be a JSON array")
    for expr in exprs:
        if "include" in expr:
            include = os.path.join(os.path.dirname(path), expr["include"])
            _read_module(os.path.realpath(include), modules)
        elif any(key in expr for key in (*_META_KEYS, "pragma")):
            own.append(expr)
        elif set(expr) != {"doc"}:
            raise QAPISemError(f"{path}: unknown expression {sorted(expr)}")


# ---------------------------------------------------------------------------
# Building the model


def _features(expr: Expr) -> list[str]:
    return [f if isinstance(f, str) else f["name"] for f in expr.get("features", [])]


class _Builder:
    """Three passes: declare every named type, resolve references, then
    define commands and events (which may name any type)."""

    def __init__(self, exprs: list[Expr]) -> None:
        self.exprs = exprs
        self.schema = Schema()
        self.pending: list[SchemaType] = []
        self.exprs_of: dict[int, Expr] = {}
        self.resolved: set[int] = set()
        self.in_progress: set[int] = set()
        self.event_enums: list[str] = []

    def build(self) -> Schema:
        for expr in self.exprs:
            self._declare(expr)
        for typ in self.pending:
            self._resolve_type(typ)
        for expr in self.exprs:
            self._define_entity(expr)
        self._check_event_enums()
        return self.schema

    # -- pass 1

    def _declare(self, expr: Expr) -> None:
        if "pragma" in expr:
            self.event_enums += expr["pragma"].get("event-enums", [])
            return
        for meta, cls in _TYPE_KINDS.items():
            if meta in expr:
                typ = cls(expr[meta], features=_features(expr))
                self.schema._define_type(typ)
                self.exprs_of[id(typ)] = expr
                self.pending.append(typ)

    # -- pass 2: types

    def _resolve_type(self, typ: SchemaType) -> None:
        """Fill in ``typ``; an object's base is resolved first, on demand."""
        if id(typ) in self.resolved:
            return
        self.resolved.add(id(typ))
        expr = self.exprs_of[id(typ)]
        if isinstance(typ, EnumType):
            typ.members = [self._enum_member(m) for m in expr["data"]]
        elif isinstance(typ, AlternateType):
            typ.variants = self._alternate_variants(typ, expr["data"])
        elif isinstance(typ, ObjectType):
            self.in_progress.add(id(typ))
            self._resolve_object(typ, expr)
            self.in_progress.discard(id(typ))

    @staticmethod
    def _enum_member(member: Union[str, Expr]) -> EnumMember:
        if isinstance(member, str):
            return EnumMember(member)
        return EnumMember(member["name"], _features(member))

    def _resolve_object(self, typ: ObjectType, expr: Expr) -> None:
        base = expr.get("base")
        if isinstance(base, dict):
            base = self._implicit_object(f"q_obj_{typ.name}-base", base)
        if base is not None:
            typ.base = self._object_type(base, f"base of '{typ.name}'")
            if typ.base.variants:
                raise QAPISemError(f"base of '{typ.name}' must not be a union")
        own = self._members(expr.get("data", {})) if "struct" in expr else []
        typ.members = list(typ.base.members if typ.base else []) + own
        if "union" in expr:
            typ.variants = self._union_variants(typ, expr)
        self._check_clashes(typ)

    def _object_type(self, ref: Union[str, ObjectType], what: str) -> ObjectType:
        typ = ref if isinstance(ref, ObjectType) else self._lookup(ref, what)
        if not isinstance(typ, ObjectType):
            raise QAPISemError(f"{what} must be an object type")
        if id(typ) in self.in_progress:
            raise QAPISemError(f"{what}: '{typ.name}' depends on itself")
        if id(typ) in self.exprs_of:
            self._resolve_type(typ)
        return typ

    def _implicit_object(self, name: str, members: Expr) -> ObjectType:
        typ = ObjectType(name, members=self._members(members), implicit=True)
        self.schema._define_type(typ)
        return typ

    def _members(self, data: Expr) -> list[ObjectMember]:
        members = []
        for key, spec in data.items():
            features: list[str] = []
            if isinstance(spec, dict):
                features = _features(spec)
                spec = spec["type"]
            name = key[1:] if key.startswith("*") else key
            typ = self._type_ref(spec, f"member '{name}'")
            members.append(ObjectMember(name, typ, key.startswith("*"), features))
        return members

    def _type_ref(self, spec: Union[str, list[str]], what: str) -> SchemaType:
        if isinstance(spec, list):
            if len(spec) != 1:
                raise QAPISemError(f"{what}: a list type has exactly one element type")
            return self.schema.array_of(self._lookup(spec[0], what))
        return self._lookup(spec, what)

    def _lookup(self, name: str, what: str) -> SchemaType:
        try:
            return self.schema.lookup_type(name)
        except KeyError:
            raise QAPISemError(f"{what} uses undefined type '{name}'") from None

    def _union_variants(self, typ: ObjectType, expr: Expr) -> Variants:
        tag_name = expr["discriminator"]
        tag = next((m for m in typ.members if m.name == tag_name), None)
        if tag is None or tag.optional or not isinstance(tag.type, EnumType):
            raise QAPISemError(f"discriminator of '{typ.name}' must be a required enum member")
        variants = []
        for case, ref in expr["data"].items():
            if case not in tag.type.values:
                raise QAPISemError(f"'{typ.name}': '{case}' is not a value of the discriminator")
            variants.append(Variant(case, self._object_type(ref, f"branch '{case}'")))
        covered = set(expr["data"])
        empty = self.schema.the_empty_object_type
        variants += [Variant(v, empty) for v in tag.type.values if v not in covered]
        return Variants(tag, variants)

    def _alternate_variants(self, typ: AlternateType, data: Expr) -> list[Variant]:
        variants = [
            Variant(case, self._type_ref(ref, f"branch '{case}'")) for case, ref in data.items()
        ]
        qtypes = [qtype_of(v.type) for v in variants]
        if "value" in qtypes or len(set(qtypes)) != len(qtypes):
            raise QAPISemError(f"branches of alternate '{typ.name}' must differ in JSON type")
        return variants

    @staticmethod
    def _check_clashes(typ: ObjectType) -> None:
        names = [c_name(m.name) for m in typ.members]
        for variant in typ.variants.variants if typ.variants else []:
            assert isinstance(variant.type, ObjectType)
            branch = [c_name(m.name) for m in variant.type.members]
            if set(branch) & set(names):
                raise QAPISemError(f"branch '{variant.name}' of '{typ.name}' clashes with a member")
        if len(set(names)) != len(names):
            raise QAPISemError(f"'{typ.name}' has clashing member names")

    # -- pass 3: commands and events

    def _define_entity(self, expr: Expr) -> None:
        if "command" in expr:
            self.schema._define_entity(self._command(expr))
        elif "event" in expr:
            self.schema._define_entity(self._event(expr))

    def _arg_type(self, owner: str, expr: Expr) -> Optional[ObjectType]:
        data = expr.get("data")
        if data is None:
            if expr.get("boxed"):
                raise QAPISemError(f"'{owner}': 'boxed' needs a named 'data' type")
            return None
        if isinstance(data, dict):
            if expr.get("boxed"):
                raise QAPISemError(f"'{owner}': 'boxed' needs a named 'data' type")
            return self._implicit_object(f"q_obj_{owner}-arg", data)
        typ = self._object_type(data, f"'data' of '{owner}'")
        if typ.variants and not expr.get("boxed"):
            raise QAPISemError(f"'{owner}': a union as 'data' needs 'boxed'")
        return typ

    def _command(self, expr: Expr) -> Command:
        name = expr["command"]
        returns = expr.get("returns")
        cmd = Command(
            name,
            self._arg_type(name, expr),
            self._type_ref(returns, f"'returns' of '{name}'") if returns is not None else None,
            boxed=expr.get("boxed", False),
            allow_oob=expr.get("allow-oob", False),
            allow_preconfig=expr.get("allow-preconfig", False),
            coroutine=expr.get("coroutine", False),
            success_response=expr.get("success-response", True),
            features=_features(expr),
            gen=expr.get("gen", True),
        )
        if cmd.allow_oob and cmd.coroutine:
            raise QAPISemError(f"'{name}': 'allow-oob' and 'coroutine' are incompatible")
        return cmd

    def _event(self, expr: Expr) -> Event:
        name = expr["event"]
        arg_type = self._arg_type(name, expr)
        return Event(name, arg_type, expr.get("boxed", False), _features(expr))

    def _check_event_enums(self) -> None:
        for enum_name in self.event_enums:
            typ = self._lookup(enum_name, "pragma 'event-enums'")
            assert isinstance(typ, EnumType)
            for value in typ.values:
                if value not in self.schema._events:
                    raise QAPISemError(f"'{enum_name}' value '{value}' is not an event")
