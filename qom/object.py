"""The QEMU Object Model, as much of it as monitors need (qom/object.c).

Types form a single-inheritance tree rooted at ``object``, plus interfaces
(``user-creatable``).  A type's class is built on first use: the parent's
class is copied, then the type's ``class_init`` adds properties and hooks,
as ``type_initialize`` does.  Objects are instances of a Python class that
names its QOM type in ``TYPE``; they carry a reference count, a parent and
their own properties (``child<...>`` ones: the composition tree under
``/``).  The last ``object_unref`` finalises the object, running each
class's ``instance_finalize`` from the most derived type up.

Threads: like QEMU, the tree and the properties belong to the main loop
under the BQL.  Only the reference count is touched from other threads (a
monitor takes a reference in the I/O thread when its client closes), so it
is a QAtomic.
"""

from __future__ import annotations

from typing import Any, Callable, ClassVar, Optional

from qapi.error import ErrorClass, QapiError, error_setg
from util.atomic import QAtomic, qatomic_dec_fetch, qatomic_inc, qatomic_read

TYPE_OBJECT = "object"
TYPE_INTERFACE = "interface"
TYPE_CONTAINER = "container"

PropertyGetter = Callable[["Object"], Any]
PropertySetter = Callable[["Object", Any], None]


class ObjectProperty:
    """One property (struct ObjectProperty): a name, a type string, accessors.

    ``get`` returns the value as QMP shows it; ``set`` takes a value already
    checked against the QAPI type by the visitor and may raise QapiError.
    ``child`` is the object a ``child<...>`` property holds.
    """

    def __init__(
        self,
        name: str,
        type: str,
        get: Optional[PropertyGetter] = None,
        set: Optional[PropertySetter] = None,
        description: Optional[str] = None,
        child: Optional[Object] = None,
    ) -> None:
        self.name = name
        self.type = type
        self.get = get
        self.set = set
        self.description = description
        self.child = child


class TypeInfo:
    """What a type registers (struct TypeInfo)."""

    def __init__(
        self,
        name: str,
        parent: Optional[str],
        abstract: bool = False,
        interfaces: tuple[str, ...] = (),
        class_init: Optional[Callable[[ObjectClass], None]] = None,
        instance_finalize: Optional[Callable[[Any], None]] = None,
    ) -> None:
        self.name = name
        self.parent = parent
        self.abstract = abstract
        self.interfaces = interfaces
        self.class_init = class_init
        self.instance_finalize = instance_finalize


class ObjectClass:
    """A type's class (TypeImpl and ObjectClass in one).

    Hooks of the interfaces a type implements live here too, as QEMU's
    UserCreatableClass does inside the class: ``complete``,
    ``can_be_deleted`` and ``prepare_delete`` (None when not provided).
    """

    def __init__(self, info: TypeInfo, parent: Optional[ObjectClass]) -> None:
        self.info = info
        self.name = info.name
        self.parent = parent
        self.abstract = info.abstract
        self.interfaces: set[str] = set(parent.interfaces) if parent else set()
        self.interfaces.update(info.interfaces)
        #: class properties, parent's first (the order qom-list shows)
        self.properties: dict[str, ObjectProperty] = dict(parent.properties) if parent else {}
        self.complete: Optional[Callable[[Any], None]] = parent.complete if parent else None
        self.can_be_deleted: Optional[Callable[[Any], bool]] = (
            parent.can_be_deleted if parent else None
        )
        self.prepare_delete: Optional[Callable[[Any], None]] = (
            parent.prepare_delete if parent else None
        )


class _TypeTable:
    """The registered types (type_table) and their classes, built lazily."""

    def __init__(self) -> None:
        self.infos: dict[str, TypeInfo] = {}
        self.classes: dict[str, ObjectClass] = {}


_types = _TypeTable()


def type_register_static(info: TypeInfo) -> None:
    """Register a type; done once per type, when its module is imported."""
    assert info.name not in _types.infos, f"type {info.name} registered twice"
    _types.infos[info.name] = info


def object_class_by_name(typename: str) -> Optional[ObjectClass]:
    """The class of ``typename`` (initialised on first use), or None."""
    klass = _types.classes.get(typename)
    if klass is not None:
        return klass
    info = _types.infos.get(typename)
    if info is None:
        return None
    parent = object_class_by_name(info.parent) if info.parent else None
    klass = ObjectClass(info, parent)
    if info.class_init is not None:
        info.class_init(klass)
    _types.classes[typename] = klass
    return klass


def object_class_get_list() -> list[ObjectClass]:
    """Every registered type's class, in registration order."""
    out = []
    for name in list(_types.infos):
        klass = object_class_by_name(name)
        assert klass is not None
        out.append(klass)
    return out


def object_class_dynamic_cast(klass: ObjectClass, typename: str) -> Optional[ObjectClass]:
    """``klass`` if it is ``typename``, derives from it or implements it."""
    if typename in klass.interfaces:
        return klass
    k: Optional[ObjectClass] = klass
    while k is not None:
        if k.name == typename:
            return klass
        k = k.parent
    return None


def object_class_property_add(klass: ObjectClass, prop: ObjectProperty) -> None:
    assert prop.name not in klass.properties, f"{klass.name}.{prop.name} added twice"
    klass.properties[prop.name] = prop


def object_class_property_add_str(
    klass: ObjectClass, name: str, get: PropertyGetter, set: PropertySetter
) -> None:
    object_class_property_add(klass, ObjectProperty(name, "string", get, set))


def object_class_property_add_bool(
    klass: ObjectClass, name: str, get: PropertyGetter, set: PropertySetter
) -> None:
    object_class_property_add(klass, ObjectProperty(name, "bool", get, set))


def object_class_property_add_enum(
    klass: ObjectClass, name: str, typename: str, get: PropertyGetter, set: PropertySetter
) -> None:
    """An enum property; its type string is the QAPI enum's name, as in QEMU."""
    object_class_property_add(klass, ObjectProperty(name, typename, get, set))


# ---------------------------------------------------------------- objects


class Object:
    """An instance (struct Object).  Subclasses name their type in ``TYPE``.

    The constructor is QEMU's instance_init chain; ``object_new`` is the
    way to make one by type name.
    """

    TYPE: ClassVar[str] = TYPE_OBJECT

    def __init__(self) -> None:
        #: main loop (BQL): the parent in the composition tree, if any
        self.parent: Optional[Object] = None
        #: main loop (BQL): this object's own properties (children)
        self.properties: dict[str, ObjectProperty] = {}
        #: taken and dropped from any thread
        self.ref: QAtomic[int] = QAtomic(1, "object_ref")

    @property
    def klass(self) -> ObjectClass:
        klass = object_class_by_name(self.TYPE)
        assert klass is not None, f"type {self.TYPE} is not registered"
        return klass


def object_get_typename(obj: Object) -> str:
    return obj.TYPE


def object_new(typename: str) -> Object:
    """A new object of ``typename`` with one reference (the caller's)."""
    klass = object_class_by_name(typename)
    assert klass is not None and not klass.abstract, typename
    cls = _instance_classes[typename]
    obj = cls()
    assert obj.TYPE == typename
    return obj


#: TYPE name -> the Python class object_new instantiates
_instance_classes: dict[str, type[Object]] = {}


def type_register_instance_class(cls: type[Object]) -> None:
    """Tell object_new which Python class makes instances of ``cls.TYPE``."""
    _instance_classes[cls.TYPE] = cls


def object_ref(obj: Object) -> Object:
    qatomic_inc(obj.ref)
    return obj


def object_unref(obj: Object) -> None:
    """Drop a reference; the last one finalises the object."""
    if qatomic_dec_fetch(obj.ref) == 0:
        object_finalize(obj)


def object_finalize(obj: Object) -> None:
    """Delete the object's own properties, then run instance_finalize from
    the most derived type up (object_deinit)."""
    assert obj.parent is None, "finalising an object that still has a parent"
    for name in list(obj.properties):
        object_property_del(obj, name)
    k: Optional[ObjectClass] = obj.klass
    while k is not None:
        if k.info.instance_finalize is not None:
            k.info.instance_finalize(obj)
        k = k.parent


def object_property_find(obj: Object, name: str) -> Optional[ObjectProperty]:
    prop = obj.klass.properties.get(name)
    return prop if prop is not None else obj.properties.get(name)


def object_property_find_err(obj: Object, name: str) -> ObjectProperty:
    prop = object_property_find(obj, name)
    if prop is None:
        raise error_setg("Property '%s.%s' not found", object_get_typename(obj), name)
    return prop


def object_property_list(obj: Object) -> list[ObjectProperty]:
    """Class properties (the root's ``type`` first), then the object's own."""
    return [*obj.klass.properties.values(), *obj.properties.values()]


def object_property_get(obj: Object, name: str) -> Any:
    prop = object_property_find_err(obj, name)
    if prop.get is None:
        raise error_setg("Insufficient permission to perform this operation")
    return prop.get(obj)


def object_property_set(obj: Object, name: str, value: Any) -> None:
    prop = object_property_find_err(obj, name)
    if prop.set is None:
        raise error_setg("Insufficient permission to perform this operation")
    prop.set(obj, value)


def object_property_try_add_child(parent: Object, name: str, child: Object) -> None:
    """Make ``child`` the child ``name`` of ``parent``; the parent takes a ref."""
    if object_property_find(parent, name) is not None:
        raise error_setg(
            "attempt to add duplicate property '%s' to object (type '%s')",
            name,
            object_get_typename(parent),
        )
    assert child.parent is None, "an object has one parent"
    parent.properties[name] = ObjectProperty(
        name, f"child<{object_get_typename(child)}>", _child_path_getter(child), child=child
    )
    child.parent = parent
    object_ref(child)


def _child_path_getter(child: Object) -> PropertyGetter:
    """qom-get of a child property gives the child's canonical path."""
    return lambda _parent: object_get_canonical_path(child)


def object_property_del(obj: Object, name: str) -> None:
    """Remove an own property; a child loses its parent and the parent's ref."""
    prop = obj.properties.pop(name)
    child = prop.child
    if child is not None:
        child.parent = None
        object_unref(child)


def object_children(obj: Object) -> list[Object]:
    """The children of ``obj``, in the order they were added."""
    return [p.child for p in obj.properties.values() if p.child is not None]


def object_unparent(obj: Object) -> None:
    """Take ``obj`` out of the tree (dropping its parent's reference)."""
    parent = obj.parent
    if parent is None:
        return
    name = object_get_canonical_path_component(obj)
    assert name is not None
    object_property_del(parent, name)


def object_get_canonical_path_component(obj: Object) -> Optional[str]:
    """The name ``obj`` has in its parent, or None when it has no parent."""
    parent = obj.parent
    if parent is None:
        return None
    for name, prop in parent.properties.items():
        if prop.child is obj:
            return name
    raise AssertionError("an object's parent does not hold it")


def object_get_canonical_path(obj: Object) -> Optional[str]:
    """``/a/b`` for an object in the tree; None for one outside it."""
    parts: list[str] = []
    while obj is not _root.get():
        name = object_get_canonical_path_component(obj)
        if name is None:
            return None
        parts.append(name)
        assert obj.parent is not None
        obj = obj.parent
    return "/" + "/".join(reversed(parts))


# ---------------------------------------------------------------- the tree


class Container(Object):
    TYPE = TYPE_CONTAINER


class _Root:
    """The root container and its ``objects`` child, made on first use.

    ``object_root_reset`` gives a test a fresh tree.
    """

    def __init__(self) -> None:
        self.root: Optional[Object] = None

    def get(self) -> Object:
        if self.root is None:
            self.root = Container()
            objects = Container()
            object_property_try_add_child(self.root, "objects", objects)
            object_unref(objects)
        return self.root


_root = _Root()


def object_get_root() -> Object:
    return _root.get()


def object_get_objects_root() -> Object:
    """``/objects``, where user-creatable objects live."""
    prop = object_get_root().properties["objects"]
    assert prop.child is not None
    return prop.child


def object_root_reset() -> None:
    """Forget the tree (tests); objects still in it are not finalised."""
    _root.root = None


def object_resolve_path_component(parent: Object, part: str) -> Optional[Object]:
    prop = parent.properties.get(part)
    return prop.child if prop is not None else None


def _resolve_abs(parent: Object, parts: list[str]) -> Optional[Object]:
    obj: Optional[Object] = parent
    for part in parts:
        if obj is None:
            return None
        obj = object_resolve_path_component(obj, part)
    return obj


def _resolve_partial(parent: Object, parts: list[str]) -> tuple[Optional[Object], bool]:
    """Match ``parts`` below every object of the tree; (match, ambiguous)."""
    found = _resolve_abs(parent, parts)
    ambiguous = False
    for prop in parent.properties.values():
        if prop.child is None:
            continue
        match, amb = _resolve_partial(prop.child, parts)
        if amb:
            return None, True
        if match is not None:
            if found is not None and found is not match:
                return None, True
            found = match
    return found, ambiguous


def object_resolve_path(path: str) -> tuple[Optional[Object], bool]:
    """(object, ambiguous): an absolute path from ``/``, or a partial path
    matched anywhere in the tree, which must match exactly one object."""
    parts = [p for p in path.split("/") if p]
    if path.startswith("/"):
        return _resolve_abs(object_get_root(), parts), False
    return _resolve_partial(object_get_root(), parts)


def qom_resolve_path(path: str) -> Object:
    """The object at ``path`` for a QMP command (qom-qmp-cmds.c's errors)."""
    obj, ambiguous = object_resolve_path(path)
    if obj is None:
        if ambiguous:
            raise error_setg("Path '%s' is ambiguous", path)
        raise QapiError(ErrorClass.DEVICE_NOT_FOUND, f"Device '{path}' not found")
    return obj


def _object_class_init(klass: ObjectClass) -> None:
    object_class_property_add(klass, ObjectProperty("type", "string", object_get_typename))


def object_is_alive(obj: Object) -> bool:
    """True while someone holds a reference (tests check finalisation)."""
    return bool(qatomic_read(obj.ref))


type_register_static(TypeInfo(TYPE_OBJECT, None, abstract=True, class_init=_object_class_init))
type_register_static(TypeInfo(TYPE_INTERFACE, None, abstract=True))
type_register_static(TypeInfo(TYPE_CONTAINER, TYPE_OBJECT))
type_register_instance_class(Container)
