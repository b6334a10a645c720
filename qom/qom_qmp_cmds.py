"""QMP commands on the object tree (qom/qom-qmp-cmds.c).

Threads: the main loop, under the BQL (in-band commands).
"""

from __future__ import annotations

from typing import Any, Optional

from qom.object import (
    object_class_dynamic_cast,
    object_class_get_list,
    object_property_get,
    object_property_list,
    qom_resolve_path,
)
from qom.object_interfaces import user_creatable_add_qapi, user_creatable_del


def qmp_qom_list(path: str) -> list[dict[str, Any]]:
    obj = qom_resolve_path(path)
    out = []
    for prop in object_property_list(obj):
        info: dict[str, Any] = {"name": prop.name, "type": prop.type}
        if prop.description is not None:
            info["description"] = prop.description
        out.append(info)
    return out


def qmp_qom_get(path: str, property: str) -> Any:
    return object_property_get(qom_resolve_path(path), property)


def qmp_qom_list_types(implements: Optional[str], abstract: Optional[bool]) -> list[dict[str, Any]]:
    out = []
    for klass in object_class_get_list():
        if klass.abstract and not abstract:
            continue
        if implements is not None and object_class_dynamic_cast(klass, implements) is None:
            continue
        info: dict[str, Any] = {"name": klass.name}
        if klass.abstract:
            info["abstract"] = True
        if klass.parent is not None:
            info["parent"] = klass.parent.name
        out.append(info)
    return out


def qmp_object_add(options: dict[str, Any]) -> None:
    user_creatable_add_qapi(options)


def qmp_object_del(id: str) -> None:
    user_creatable_del(id)
