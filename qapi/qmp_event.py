"""Build QMP event messages from the schema.

Mirrors ``qapi/qmp-event.c`` (``qmp_event_build_dict``, ``timestamp_put``)
and the generated ``qapi_event_send_FOO`` functions up to the point where
they hand the message to the monitor: emitting, throttling and broadcasting
belong to monitor/.  Runs in whatever thread raises the event.

An event message is ``{"event": NAME, "timestamp": {"seconds", "microseconds"},
"data": {...}}``.  As in QEMU, ``data`` is left out when it would be empty,
whether the event has no data type at all (STOP) or none of its optional
members are present.  The dict is built in QEMU's insertion order (event,
timestamp, data; seconds before microseconds) so the JSON writer produces the
same bytes.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from qapi.qobject_input_visitor import qobject_input_visit
from qapi.qobject_output_visitor import qobject_output_visit
from qapi.schema import Schema
from util.timer import g_get_real_time

_USEC_PER_SEC = 1_000_000


def qapi_event_timestamp(real_time_us: Callable[[], int] = g_get_real_time) -> dict[str, int]:
    """The ``timestamp`` member of an event (timestamp_put)."""
    now = real_time_us()
    return {"seconds": now // _USEC_PER_SEC, "microseconds": now % _USEC_PER_SEC}


def qapi_event_build(
    schema: Schema,
    name: str,
    data: Optional[dict[str, Any]] = None,
    real_time_us: Callable[[], int] = g_get_real_time,
) -> dict[str, Any]:
    """Return the message for event ``name`` carrying ``data``.

    ``data`` comes from emulator code, so a mismatch with the schema is a bug
    and raises ``AssertionError``; client-supplied data must go through
    :func:`qapi_event_input_data` first.  ``real_time_us`` is injectable so
    tests need no real clock.
    """
    event = schema.lookup_event(name)
    if event.arg_type is None and data is not None:
        raise AssertionError(f"event {name} carries no data, got {data!r}")
    message: dict[str, Any] = {"event": name, "timestamp": qapi_event_timestamp(real_time_us)}
    if event.arg_type is not None:
        body = qobject_output_visit(event.arg_type, data if data is not None else {}, name)
        if body:
            message["data"] = body
    return message


def qapi_event_input_data(schema: Schema, name: str, data: Optional[Any]) -> dict[str, Any]:
    """Check event data a *client* supplied (``x-debug-emit-event``).

    Errors are :class:`~qapi.error.QapiError` with the argument visitor's
    wording, paths starting at ``data`` (``Parameter 'data.offset' is
    missing``).  Absent data counts as ``{}``.
    """
    arg_type = schema.lookup_event(name).arg_type or schema.the_empty_object_type
    converted: dict[str, Any] = qobject_input_visit(arg_type, {} if data is None else data, "data")
    return converted
