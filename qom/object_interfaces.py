"""User-creatable objects: object-add, object-del, -object (qom/object_interfaces.c).

A type that implements ``user-creatable`` can be made by ``object-add`` or
``-object`` and removed by ``object-del``.  Its class hooks: ``complete``
(after the properties are set; an error undoes the creation),
``can_be_deleted`` and, since QEMU 11.1, ``prepare_delete`` (may refuse
with an error; on success the object is unparented and finalised when its
last reference goes).

Threads: the main loop, under the BQL.
"""

from __future__ import annotations

import json
from typing import Any

from qapi.error import QapiError, error_setg
from qapi.qobject_input_visitor import qobject_input_visit
from qapi.schema import BuiltinType, EnumType, ObjectType, qapi_schema
from qom.object import (
    Object,
    TypeInfo,
    object_class_by_name,
    object_class_dynamic_cast,
    object_get_objects_root,
    object_new,
    object_property_set,
    object_property_try_add_child,
    object_resolve_path_component,
    object_unparent,
    object_unref,
    type_register_static,
)
from util.qemu_option import id_wellformed

TYPE_USER_CREATABLE = "user-creatable"

ID_HINT = "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter."


def user_creatable_complete(obj: Object) -> None:
    complete = obj.klass.complete
    if complete is not None:
        complete(obj)


def user_creatable_add_type(typename: str, id: str, props: dict[str, Any]) -> Object:
    """Create, configure, link under /objects, complete (in QEMU's order).

    A failure at any step leaves nothing behind: the object is unparented
    and its last reference dropped, which finalises it.
    """
    klass = object_class_by_name(typename)
    if klass is None:
        raise error_setg("invalid object type: %s", typename)
    if object_class_dynamic_cast(klass, TYPE_USER_CREATABLE) is None:
        raise error_setg("object type '%s' isn't supported by object-add", typename)
    if klass.abstract:
        raise error_setg("object type '%s' is abstract", typename)
    if not id_wellformed(id):
        raise error_setg("Parameter 'id' expects an identifier")
    obj = object_new(typename)
    try:
        for name, value in props.items():
            object_property_set(obj, name, value)
        object_property_try_add_child(object_get_objects_root(), id, obj)
        try:
            user_creatable_complete(obj)
        except QapiError:
            object_unparent(obj)
            raise
    finally:
        object_unref(obj)
    return obj


def user_creatable_add_qapi(options: dict[str, Any]) -> None:
    """object-add: ObjectOptions, already checked against the schema."""
    props = dict(options)
    typename = props.pop("qom-type")
    id = props.pop("id")
    user_creatable_add_type(typename, id, props)


def user_creatable_del(id: str) -> None:
    """object-del: refuse what the type refuses, then unparent."""
    obj = object_resolve_path_component(object_get_objects_root(), id)
    if obj is None:
        raise error_setg("object '%s' not found", id)
    klass = obj.klass
    if klass.can_be_deleted is not None and not klass.can_be_deleted(obj):
        raise error_setg("object '%s' is in use, can not be deleted", id)
    if klass.prepare_delete is not None:
        klass.prepare_delete(obj)
    object_unparent(obj)


# ---------------------------------------------------------------- -object


def _keyval_parse(optarg: str) -> dict[str, str]:
    """``type,key=value,...`` with ``,,`` for a comma; the first bare word
    is ``qom-type`` (keyval_parse with implied key)."""
    items: list[str] = []
    cur = ""
    i = 0
    while i < len(optarg):
        ch = optarg[i]
        if ch == ",":
            if optarg[i + 1 : i + 2] == ",":
                cur += ","
                i += 2
                continue
            items.append(cur)
            cur = ""
        else:
            cur += ch
        i += 1
    items.append(cur)
    out: dict[str, str] = {}
    for n, item in enumerate(items):
        key, eq, value = item.partition("=")
        if not eq:
            if n != 0:
                raise error_setg("Expected '=' after parameter '%s'", item)
            key, value = "qom-type", item
        out[key] = value
    return out


def _keyval_typed(options: dict[str, str]) -> dict[str, Any]:
    """Convert keyval strings as QEMU's keyval input visitor does."""
    schema = qapi_schema()
    union = schema.lookup_type("ObjectOptions")
    assert isinstance(union, ObjectType) and union.variants is not None
    if "qom-type" not in options:
        raise error_setg("Parameter 'qom-type' is missing")
    qom_type = options["qom-type"]
    tag = union.variants.tag_member.type
    assert isinstance(tag, EnumType)
    if qom_type not in tag.values:
        raise error_setg("Parameter 'qom-type' does not accept value '%s'", qom_type)
    branch = union.variants.find(qom_type).type
    assert isinstance(branch, ObjectType)
    members = {m.name: m for m in union.members + branch.members}
    out: dict[str, Any] = {}
    for key, value in options.items():
        member = members.get(key)
        if member is None:
            raise error_setg("Invalid parameter '%s'", key)
        out[key] = _keyval_value(key, value, member.type)
    for m in members.values():
        if not m.optional and m.name not in out:
            raise error_setg("Parameter '%s' is missing", m.name)
    return out


def _keyval_value(key: str, value: str, typ: Any) -> Any:
    if isinstance(typ, BuiltinType) and typ.name == "bool":
        if value in ("on", "yes", "true", "y"):
            return True
        if value in ("off", "no", "false", "n"):
            return False
        raise error_setg("Parameter '%s' expects 'on' or 'off'", key)
    if isinstance(typ, EnumType) and value not in typ.values:
        raise error_setg("Parameter '%s' does not accept value '%s'", key, value)
    return value


def user_creatable_parse_str(optarg: str) -> dict[str, Any]:
    """-object's argument: JSON (``{...}``) or keyval, as ObjectOptions."""
    if optarg.startswith("{"):
        try:
            value = json.loads(optarg)
        except ValueError:
            raise error_setg("JSON parse error") from None
        union = qapi_schema().lookup_type("ObjectOptions")
        assert union is not None
        result: dict[str, Any] = qobject_input_visit(union, value)
        return result
    return _keyval_typed(_keyval_parse(optarg))


def user_creatable_process_cmdline(optarg: str) -> None:
    """-object: create it now (vl.c creates -object before the monitors)."""
    user_creatable_add_qapi(user_creatable_parse_str(optarg))


type_register_static(TypeInfo(TYPE_USER_CREATABLE, "interface", abstract=True))
