"""Bind schema commands to Python handlers and register them.

Mirrors what QEMU generates into ``qapi-commands-*.c`` and
``qapi-init-commands.c``: one ``qmp_marshal_FOO`` per command (visit the
arguments, call ``qmp_FOO``, visit the result) and ``qmp_init_marshal()``,
which registers them all with the options the schema gives.  Binding happens
once, in the main thread, at start-up; the marshal functions then run in the
dispatching thread.

Handler contract (what monitor/, chardev/ and system/ implement):

* One callable per schema command, named by QEMU's convention
  ``qmp_`` + the command name with ``-`` turned into ``_`` (``qmp_chardev_add``,
  ``qmp_query_status``); :func:`qmp_collect_handlers` finds them on modules or
  objects by that name.
* Arguments arrive as keyword arguments named the same way (``command-line``
  becomes ``command_line``; a Python keyword gets a ``q_`` prefix, as QEMU's
  ``c_name`` does for C keywords).  Every member of the argument type is
  passed: an absent optional member is passed as ``None``, mirroring QEMU's
  ``has_FOO = false``, so a handler picks its own default explicitly.  Nested
  objects are dicts keyed by wire names, absent optional members left out.
* A ``boxed`` command's handler gets one positional argument: the whole
  argument object as a dict.
* The handler returns the result as plain data (``None`` when the schema
  declares no ``returns``), or raises :class:`~qapi.error.QapiError`.  The
  result is checked against the schema and its objects rebuilt in schema
  order; a mismatch is an emulator bug and raises ``AssertionError``.

Binding fails loudly when a declared command has no handler, a handler names
no declared command, or a handler's parameters do not match the schema: there
are no stubs.
"""

from __future__ import annotations

import keyword
from collections.abc import Mapping
from types import FunctionType, MethodType
from typing import Any, Callable, Optional

from qapi.qmp_registry import (
    QCO_ALLOW_OOB,
    QCO_ALLOW_PRECONFIG,
    QCO_COROUTINE,
    QCO_NO_OPTIONS,
    QCO_NO_SUCCESS_RESP,
    QapiSpecialFeature,
    QmpCommandFunc,
    QmpCommandList,
    QmpCommandOptions,
    qmp_register_command,
)
from qapi.qobject_input_visitor import qmp_input_command_args
from qapi.qobject_output_visitor import qobject_output_visit
from qapi.schema import Command, Schema, c_name

Handler = Callable[..., Any]


class QmpBindError(Exception):
    """Handlers and schema disagree (a programming error, found at start-up)."""


def py_name(member: str) -> str:
    """Keyword-argument name for a schema member (QEMU's ``c_name`` for Python)."""
    name = c_name(member)
    return "q_" + name if keyword.iskeyword(name) else name


def handler_name(command: str) -> str:
    """The conventional handler name for a command, e.g. ``qmp_query_status``."""
    return "qmp_" + c_name(command)


def qmp_command_options(cmd: Command) -> QmpCommandOptions:
    """Registry options from the schema's command flags."""
    options = QCO_NO_OPTIONS
    if not cmd.success_response:
        options |= QCO_NO_SUCCESS_RESP
    if cmd.allow_oob:
        options |= QCO_ALLOW_OOB
    if cmd.allow_preconfig:
        options |= QCO_ALLOW_PRECONFIG
    if cmd.coroutine:
        options |= QCO_COROUTINE
    return options


def qmp_special_features(features: list[str]) -> QapiSpecialFeature:
    flags = QapiSpecialFeature.NONE
    if "deprecated" in features:
        flags |= QapiSpecialFeature.QAPI_DEPRECATED
    if "unstable" in features:
        flags |= QapiSpecialFeature.QAPI_UNSTABLE
    return flags


#: ``co_flags`` bits for ``*args`` and ``**kwargs`` (CPython's CO_VARARGS,
#: CO_VARKEYWORDS)
_CO_VARIADIC = 0x04 | 0x08

#: Function attributes that make ``inspect.signature`` look elsewhere.
_SIGNATURE_OVERRIDES = ("__wrapped__", "__signature__", "__partialmethod__")


def _code_params(handler: Handler) -> Optional[tuple[list[str], int, list[str], bool]]:
    """A plain function's or bound method's parameters, as ``inspect.signature``
    reports them, read off its code object: ``(positional names, how many of
    those are positional-only, keyword-only names, whether it has *args or
    **kwargs)``.  ``None`` for any other callable.

    Importing ``inspect`` would cost every start-up a few milliseconds.
    """
    bound = isinstance(handler, MethodType)
    func = handler.__func__ if bound else handler  # type: ignore[attr-defined]
    if type(func) is not FunctionType or any(a in func.__dict__ for a in _SIGNATURE_OVERRIDES):
        return None
    code = func.__code__
    argcount = code.co_argcount
    if bound and argcount == 0:
        return None  # let inspect decide what such a method looks like
    skip = 1 if bound else 0  # a bound method hides ``self``
    names = code.co_varnames[: argcount + code.co_kwonlyargcount]
    return (
        list(names[skip:argcount]),
        max(code.co_posonlyargcount - skip, 0),
        list(names[argcount:]),
        bool(code.co_flags & _CO_VARIADIC),
    )


def _inspect_params(handler: Handler) -> tuple[list[str], int, list[str], bool]:
    """:func:`_code_params` for any other callable, by ``inspect.signature``."""
    import inspect

    kind = inspect.Parameter
    params = inspect.signature(handler).parameters.values()
    return (
        [p.name for p in params if p.kind in (kind.POSITIONAL_ONLY, kind.POSITIONAL_OR_KEYWORD)],
        sum(p.kind is kind.POSITIONAL_ONLY for p in params),
        [p.name for p in params if p.kind is kind.KEYWORD_ONLY],
        any(p.kind in (kind.VAR_POSITIONAL, kind.VAR_KEYWORD) for p in params),
    )


def _check_signature(cmd: Command, handler: Handler) -> None:
    found = _code_params(handler)
    positional, posonly, kwonly, variadic = found or _inspect_params(handler)
    if cmd.boxed or not cmd.gen:
        if len(positional) != 1 or kwonly or variadic:
            import inspect  # only to describe the mistake

            params = list(inspect.signature(handler).parameters.values())
            raise QmpBindError(f"{cmd.name}: a boxed handler takes one argument, not {params}")
        return
    if posonly or variadic:
        raise QmpBindError(f"{cmd.name}: handler must take plain keyword arguments only")
    names = sorted(positional + kwonly)
    expected = sorted(py_name(m.name) for m in cmd.arg_type.members) if cmd.arg_type else []
    if names != expected:
        raise QmpBindError(f"{cmd.name}: handler takes {names}, schema wants {expected}")


def qmp_marshal(cmd: Command, handler: Handler) -> QmpCommandFunc:
    """Wrap ``handler`` into the ``(arguments) -> result`` form the registry holds."""
    _check_signature(cmd, handler)
    members = cmd.arg_type.members if cmd.arg_type and not cmd.boxed else []
    params = [(py_name(m.name), m.name) for m in members]
    # Most requests have no arguments; unless one is required (a union's tag
    # always is), visiting an empty object can only give an empty one.
    arg_type = cmd.arg_type
    visit_empty = arg_type is not None and (
        arg_type.variants is not None or not all(m.optional for m in arg_type.members)
    )

    def marshal(args: dict[str, Any]) -> Any:
        if not cmd.gen:
            handler(args)  # the QDict as it came ('gen': false returns nothing)
            return None
        visited = qmp_input_command_args(cmd, args) if args or visit_empty else {}
        if cmd.boxed:
            ret = handler(visited)
        else:
            ret = handler(**{kw: visited.get(name) for kw, name in params})
        if cmd.ret_type is None:
            if ret is not None:
                raise AssertionError(f"{cmd.name}: handler returned {ret!r}, schema has no returns")
            return None
        return qobject_output_visit(cmd.ret_type, ret, cmd.name)

    marshal.__name__ = marshal.__qualname__ = "qmp_marshal_" + c_name(cmd.name)
    return marshal


def qmp_init_marshal(cmds: QmpCommandList, schema: Schema, handlers: Mapping[str, Handler]) -> None:
    """Register every schema command with its handler, in schema order."""
    declared = [cmd.name for cmd in schema.commands()]
    missing = [name for name in declared if name not in handlers]
    unknown = sorted(set(handlers) - set(declared))
    if missing or unknown:
        raise QmpBindError(f"no handler for {missing}; handlers for undeclared {unknown}")
    for cmd in schema.commands():
        qmp_register_command(
            cmds,
            cmd.name,
            qmp_marshal(cmd, handlers[cmd.name]),
            qmp_command_options(cmd),
            qmp_special_features(cmd.features),
        )


def qmp_collect_handlers(schema: Schema, *providers: object) -> dict[str, Handler]:
    """Find each command's handler by its conventional name on ``providers``.

    Providers are modules or objects (for example a state object whose bound
    methods are handlers).  A name offered by two providers is an error, so
    nobody overrides a handler by accident; missing ones are reported by
    :func:`qmp_init_marshal`.
    """
    found: dict[str, Handler] = {}
    for cmd in schema.commands():
        attr = handler_name(cmd.name)
        offers = [getattr(p, attr) for p in providers if hasattr(p, attr)]
        if len(offers) > 1:
            raise QmpBindError(f"{cmd.name}: {len(offers)} providers define {attr}")
        if offers:
            found[cmd.name] = offers[0]
    return found
