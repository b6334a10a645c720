"""QMP protocol behaviour, byte for byte: a pytest port of QEMU's tests/qtest/qmp-test.c.

Every test runs against both targets (``target`` fixture).  Expected bytes are
what QEMU 7.2 sends (observed on qemu-system-x86_64 7.2.22); the greeting's
version and event timestamps are the only parts masked (``harness.mask_raw``).

Covered from qmp-test.c: ``test_qmp_protocol`` (greeting, command before
negotiation, ``test_malformed`` before and after negotiation with
``assert_recovered`` after each case, repeated negotiation, ``id``, command
failure with ``id``), ``test_qmp_preconfig`` and ``test_qmp_missing_any_arg``.
The OOB half (``test_qmp_oob``) lives in ``test_qmp_oob.py``.
"""

from __future__ import annotations

import asyncio
import os

import pytest

from tests.integration.conftest import Launcher
from tests.integration.harness import (
    NEGOTIATION_DESC,
    PROBE_REPLY,
    PROBE_REPLY_NEGOTIATING,
    Instance,
    QMPLine,
    assert_timestamp,
    assert_version_info,
    mask_message,
    mask_raw,
    send_with_probe,
)


def generic(desc: bytes, req_id: bytes = b"") -> bytes:
    """QEMU 7.2's GenericError line; *desc* is already JSON-escaped, *req_id* JSON text."""
    head = b'{"id": ' + req_id + b", " if req_id else b"{"
    return head + b'"error": {"class": "GenericError", "desc": "' + desc + b'"}}\r\n'


def not_found(desc: bytes, req_id: bytes = b"") -> bytes:
    """QEMU 7.2's CommandNotFound line (``id`` comes first when present)."""
    head = b'{"id": ' + req_id + b", " if req_id else b"{"
    return head + b'"error": {"class": "CommandNotFound", "desc": "' + desc + b'"}}\r\n'


def crlf(*lines: str) -> bytes:
    """Join *lines*, each terminated by CRLF (pretty-printed output)."""
    return "".join(line + "\r\n" for line in lines).encode()


NOT_AN_OBJECT = generic(b"QMP input must be a JSON object")
NEGOTIATING = NEGOTIATION_DESC.encode()

#: (label, bytes sent, exact replies) -- identical before and after negotiation
#: (negotiated without OOB, so exec-oob is an unexpected member in both).
MALFORMED: list[tuple[str, bytes, list[bytes]]] = [
    # qmp-test.c test_malformed(), in its order
    ("syntax error", b"{]\n", [generic(b"JSON parse error, expecting value")]),
    ("impossible byte outside string", b"{\xff", [generic(b"JSON parse error, stray '\\uFFFD'")]),
    ("control char outside string", b"{\x01", [generic(b"JSON parse error, stray '\\u0001'")]),
    (
        "impossible byte in string",
        b"{'bad \xff",
        [generic(b"JSON parse error, stray ''bad \\uFFFD'")],
    ),
    (
        "control char in string",
        b"{'execute': 'nonexistent', 'id':'\n",
        [generic(b"JSON parse error, stray ''\\n'")],
    ),
    ("interpolation", b"%p", [generic(b"JSON parse error, stray '%'")]),
    ("null", b"null", [NOT_AN_OBJECT]),
    ("no execute", b"{}", [generic(b"QMP input lacks member 'execute'")]),
    (
        "execute not a string",
        b"{ 'execute': true }",
        [generic(b"QMP input member 'execute' must be a string")],
    ),
    (
        "arguments not an object",
        b"{ 'execute': 'no-such-cmd', 'arguments': [] }",
        [generic(b"QMP input member 'arguments' must be an object")],
    ),
    (
        "extra key",
        b"{ 'execute': 'no-such-cmd', 'extra': true }",
        [generic(b"QMP input member 'extra' is unexpected")],
    ),
    # more lexical errors
    ("lone 0xff", b"\xff", [generic(b"JSON parse error, stray '\\uFFFD'")]),
    (
        "control char in top-level string",
        b'"\x01"',
        [generic(b"JSON parse error, stray '\\\"\\u0001'")],
    ),
    ("uppercase keyword", b"True", [generic(b"JSON parse error, stray 'T'")]),
    (
        "leading zero, then a stray }",
        b'{"execute": "query-name", "id": 01}',
        [generic(b"JSON parse error, stray '01'"), generic(b"JSON parse error, expecting value")],
    ),
    (
        "bad number, then a stray }",
        b'{"execute": "query-name", "id": -x}',
        [generic(b"JSON parse error, stray '-x'"), generic(b"JSON parse error, expecting value")],
    ),
    # syntax errors
    ("bare keyword", b"garbage\n", [generic(b"JSON parse error, invalid keyword 'garbage'")]),
    (
        "short keyword",
        b'{"execute": "query-name", "id": nul}',
        [generic(b"JSON parse error, invalid keyword 'nul'")],
    ),
    ("stray }", b"}", [generic(b"JSON parse error, expecting value")]),
    ("duplicate key", b'{"a": 1, "a": 2}', [generic(b"JSON parse error, duplicate key")]),
    ("key not a string", b"{1: 2}", [generic(b"JSON parse error, key is not a string in object")]),
    (
        "missing comma in object",
        b'{"execute": "query-name" "id": 1}',
        [generic(b"JSON parse error, expected separator in dict")],
    ),
    (
        "missing comma in list",
        b'{"execute": "query-name", "id": [1 2]}',
        [generic(b"JSON parse error, expected separator in list")],
    ),
    (
        "invalid UTF-8",
        b'{"execute": "query-name", "id": "\xe9"}',
        [generic(b"JSON parse error, invalid UTF-8 sequence in string")],
    ),
    (
        "invalid escape",
        b'{"execute": "query-name", "id": "\\x"}',
        [generic(b"JSON parse error, invalid escape sequence in string")],
    ),
    (
        "lone surrogate",
        b'{"execute": "query-name", "id": "\\ud800"}',
        [generic(b"JSON parse error, \\\\ud800 is not a valid Unicode character")],
    ),
    # well-formed JSON that is not a request
    ("single-quoted string", b"'garbage'", [NOT_AN_OBJECT]),
    ("string", b'"abc"', [NOT_AN_OBJECT]),
    ("number", b"42 ", [NOT_AN_OBJECT]),
    ("array", b"[]", [NOT_AN_OBJECT]),
    (
        "execute is a number",
        b'{"execute": 1}',
        [generic(b"QMP input member 'execute' must be a string")],
    ),
    (
        "execute not a string, id echoed",
        b"{'execute': true, 'id': [1, {'a': null}]}",
        [generic(b"QMP input member 'execute' must be a string", b'[1, {"a": null}]')],
    ),
    (
        "exec-oob without oob",
        b'{"exec-oob": "query-name"}',
        [generic(b"QMP input member 'exec-oob' is unexpected")],
    ),
    (
        "exec-oob without oob, id echoed",
        b'{"exec-oob": "query-name", "id": 5}',
        [generic(b"QMP input member 'exec-oob' is unexpected", b"5")],
    ),
    (
        "members checked in QDict order",
        b'{"execute": "query-name", "id": 1, "extra": 2, "arguments": []}',
        [generic(b"QMP input member 'extra' is unexpected", b"1")],
    ),
    (
        "two unexpected members",
        b"{'execute': 'query-name', 'id': 'x', 'foo': 1, 'bar': 2}",
        [generic(b"QMP input member 'bar' is unexpected", b'"x"')],
    ),
    (
        "2.12's control member",
        b"{'execute': 'query-name', 'id': 'x', 'control': {}}",
        [generic(b"QMP input member 'control' is unexpected", b'"x"')],
    ),
]


def _check_malformed(client: QMPLine, probe_reply: bytes) -> None:
    """Send every MALFORMED case followed by the probe; report all mismatches at once."""
    failures = []
    for label, data, expected in MALFORMED:
        try:
            got, probe = send_with_probe(client, data)
        except (TimeoutError, EOFError) as e:
            failures.append(f"{label}: sent {data!r}, expected {expected!r}; no probe reply: {e}")
            break  # the session's state is unknown from here on
        if got != expected or probe != probe_reply:
            failures.append(f"{label}: sent {data!r}\n  expected {expected!r}\n  got      {got!r}")
            if probe != probe_reply:
                failures.append(f"  and did not recover: probe got {probe!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("phase", ["negotiation", "command"])
def test_malformed_input_and_recovery(inst: Instance, phase: str) -> None:
    """Every malformed input gets its exact error (no id unless a JSON object had one),
    and the next request is answered normally."""
    client = inst.connect()
    client.recv_greeting()
    probe_reply = PROBE_REPLY_NEGOTIATING
    if phase == "command":
        client.send(b'{"execute": "qmp_capabilities"}\n')
        assert client.recv_msg()[0] == b'{"return": {}}\r\n'
        probe_reply = PROBE_REPLY
    _check_malformed(client, probe_reply)


def test_greeting(inst: Instance) -> None:
    """One CRLF-terminated line: ``{"QMP": {"version": ..., "capabilities": ["oob"]}}``."""
    client = inst.connect()
    raw, greeting = client.recv_greeting()
    assert raw.endswith(b"}\r\n") and raw.count(b"\n") == 1
    assert mask_raw(raw) == (
        b'{"QMP": {"version": {"qemu": {"micro": "M", "minor": "M", "major": "M"}, '
        b'"package": "<masked>"}, "capabilities": ["oob"]}}\r\n'
    )
    assert mask_message(greeting) == {
        "QMP": {
            "version": {
                "qemu": {"micro": "<masked>", "minor": "<masked>", "major": "<masked>"},
                "package": "<masked>",
            },
            "capabilities": ["oob"],
        }
    }
    assert_version_info(greeting["QMP"]["version"])
    # The greeting's version is query-version's result.
    client.send(b'{"execute": "qmp_capabilities"}\n')
    client.recv_reply()
    assert client.ok("query-version") == greeting["QMP"]["version"]


def test_greeting_and_version_via_legacy_client(inst: Instance) -> None:
    """The stock synchronous client (qemu.qmp.legacy) connects, negotiates and queries."""
    qmp = inst.legacy()
    greeting = qmp.connect(negotiate=True)
    assert greeting is not None and greeting["QMP"]["capabilities"] == ["oob"]
    version = qmp.cmd("query-version")
    assert_version_info(version)
    assert version == greeting["QMP"]["version"]
    assert qmp.cmd_raw("query-name") == {"return": {}}
    reply = qmp.cmd_obj({"execute": "no-such-cmd", "id": "x"})
    assert reply == {
        "id": "x",
        "error": {"class": "CommandNotFound", "desc": "The command no-such-cmd has not been found"},
    }


@pytest.mark.parametrize(
    ("request_bytes", "reply"),
    [
        (b"{ 'execute': 'query-version' }", not_found(NEGOTIATING)),
        (b'{"execute": "query-version", "id": 1}', not_found(NEGOTIATING, b"1")),
        (b'{"execute": "no-such-cmd", "id": "a"}', not_found(NEGOTIATING, b'"a"')),
        # the command is looked up before its arguments are checked
        (
            b'{"execute": "query-name", "arguments": {"x": 1}, "id": 2}',
            not_found(NEGOTIATING, b"2"),
        ),
        (b'{"execute": "query-commands", "id": 3}', not_found(NEGOTIATING, b"3")),
    ],
)
def test_command_before_negotiation(inst: Instance, request_bytes: bytes, reply: bytes) -> None:
    """Anything but qmp_capabilities fails with CommandNotFound and the negotiation hint."""
    client = inst.connect()
    client.recv_greeting()
    client.send(request_bytes)
    assert client.recv_msg()[0] == reply
    # still negotiating
    client.send(b'{"execute": "query-status", "id": "again"}')
    assert client.recv_msg()[0] == not_found(NEGOTIATING, b'"again"')


def test_capabilities_negotiation_errors(inst: Instance) -> None:
    """Bad qmp_capabilities arguments fail and leave the session negotiating."""
    client = inst.connect()
    client.recv_greeting()
    cases = [
        (
            b"{'execute': 'qmp_capabilities', 'arguments': {'enable': ['cap-does-not-exist']}}",
            generic(b"Parameter 'null' does not accept value 'cap-does-not-exist'"),
        ),
        (
            b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "bogus"]}, "id": 1}',
            generic(b"Parameter 'null' does not accept value 'bogus'", b"1"),
        ),
        (
            b'{"execute": "qmp_capabilities", "arguments": {"enable": "oob"}, "id": 2}',
            generic(b"Invalid parameter type for 'enable', expected: array", b"2"),
        ),
        (
            b'{"execute": "qmp_capabilities", "arguments": {"bogus": 1}, "id": 3}',
            generic(b"Parameter 'bogus' is unexpected", b"3"),
        ),
    ]
    for request_bytes, reply in cases:
        client.send(request_bytes)
        assert client.recv_msg()[0] == reply, request_bytes
        client.send(b'{"execute": "query-name", "id": "still"}')
        assert client.recv_msg()[0] == not_found(NEGOTIATING, b'"still"'), request_bytes
    # Listing a capability twice is harmless.
    client.send(
        b'{"execute": "qmp_capabilities", "arguments": {"enable": ["oob", "oob"]}, "id": 4}'
    )
    assert client.recv_msg()[0] == b'{"return": {}, "id": 4}\r\n'


def test_repeated_negotiation(inst: Instance) -> None:
    """A second qmp_capabilities fails with CommandNotFound; the session keeps working."""
    client = inst.connect()
    client.recv_greeting()
    client.send(b"{ 'execute': 'qmp_capabilities' }")
    assert client.recv_msg()[0] == b'{"return": {}}\r\n'
    client.send(b"{ 'execute': 'qmp_capabilities' }")
    assert client.recv_msg()[0] == not_found(
        b"Capabilities negotiation is already complete, command ignored"
    )
    client.send(b'{"execute": "qmp_capabilities", "id": null}')
    assert client.recv_msg()[0] == not_found(
        b"Capabilities negotiation is already complete, command ignored", b"null"
    )
    client.send(b'{"execute": "query-name", "id": "ok"}')
    assert client.recv_msg()[0] == b'{"return": {}, "id": "ok"}\r\n'


#: (id as sent, id as QEMU 7.2 writes it back)
IDS: list[tuple[bytes, bytes]] = [
    (b"1", b"1"),
    (b"-1", b"-1"),
    (b"0", b"0"),
    (b"9223372036854775807", b"9223372036854775807"),
    (b"9223372036854775808", b"9223372036854775808"),
    (b"18446744073709551616", b"1.8446744073709552e+19"),
    (b"-9223372036854775809", b"-9.2233720368547758e+18"),
    (b"0.1", b"0.10000000000000001"),
    (b"1.5e300", b"1.5000000000000001e+300"),
    (b"-0.0", b"-0"),
    (b"1e2", b"100"),
    (b"true", b"true"),
    (b"false", b"false"),
    (b"null", b"null"),
    (b"'cookie#1'", b'"cookie#1"'),
    (b'""', b'""'),
    (b'"a/b"', b'"a/b"'),
    (b"'\\'q\\' \"d\"'", b'"\'q\' \\"d\\""'),
    (b'"\\u00e9\xc3\xa9\\n\\t"', b'"\\u00E9\\u00E9\\n\\t"'),
    (b'"\x7f\xf0\x9f\x98\x80\\u0000"', b'"\\u007F\\uD83D\\uDE00\\u0000"'),
    (b"[]", b"[]"),
    (b"{}", b"{}"),
    (b"[1, 'two', null, [true]]", b'[1, "two", null, [true]]'),
    (b"{'b': [1, {}], 'a': 'x'}", b'{"a": "x", "b": [1, {}]}'),
    (b'{"id": {"id": 1}}', b'{"id": {"id": 1}}'),
]


def test_id_of_every_json_type_is_echoed(inst: Instance) -> None:
    """``id`` may be any JSON value; it comes back re-serialised, in success and error replies."""
    client = inst.connect()
    client.recv_greeting()
    failures = []
    for sent, echoed in IDS:
        # before negotiation: an error, id first
        client.send(b'{"execute": "query-name", "id": ' + sent + b"}")
        got = client.recv_msg()[0]
        if got != not_found(NEGOTIATING, echoed):
            failures.append(f"negotiating, id {sent!r}: got {got!r}")
    client.send(b'{"execute": "qmp_capabilities"}')
    client.recv_reply()
    for sent, echoed in IDS:
        client.send(b'{"execute": "query-name", "id": ' + sent + b"}")
        got = client.recv_msg()[0]
        if got != b'{"return": {}, "id": ' + echoed + b"}\r\n":
            failures.append(f"success, id {sent!r}: got {got!r}")
        client.send(b'{"execute": "no-such-cmd", "id": ' + sent + b"}")
        got = client.recv_msg()[0]
        if got != not_found(b"The command no-such-cmd has not been found", echoed):
            failures.append(f"error, id {sent!r}: got {got!r}")
    assert not failures, "\n".join(failures)


def test_unknown_command(inst: Instance) -> None:
    """An unknown command is CommandNotFound, naming the command, id echoed."""
    client = inst.connect_negotiated()
    client.send(b'{"execute": "foo", "id": "u"}')
    assert client.recv_msg()[0] == not_found(b"The command foo has not been found", b'"u"')
    client.send(b'{"execute": "query_name"}')  # names are exact
    assert client.recv_msg()[0] == not_found(b"The command query_name has not been found")


def test_qmp_protocol_sequence(inst: Instance) -> None:
    """qmp-test.c's test_qmp_protocol as one session, in its order."""
    client = inst.connect()
    _, greeting = client.recv_greeting()
    assert_version_info(greeting["QMP"]["version"])
    assert isinstance(greeting["QMP"]["capabilities"], list)
    client.send(b"{ 'execute': 'query-version' }")
    assert client.recv_msg()[1]["error"]["class"] == "CommandNotFound"
    _check_malformed(client, PROBE_REPLY_NEGOTIATING)
    client.send(b"{ 'execute': 'qmp_capabilities' }")
    assert client.recv_msg()[1] == {"return": {}}
    client.send(b"{ 'execute': 'qmp_capabilities' }")
    assert client.recv_msg()[1]["error"]["class"] == "CommandNotFound"
    client.send(b"{ 'execute': 'query-version' }")
    assert_version_info(client.recv_msg()[1]["return"])
    _check_malformed(client, PROBE_REPLY)
    client.send(b"{ 'execute': 'query-name', 'id': 'cookie#1' }")
    assert client.recv_msg()[0] == b'{"return": {}, "id": "cookie#1"}\r\n'
    client.send(b"{ 'execute': 'human-monitor-command', 'id': 2 }")
    assert client.recv_msg()[0] == generic(b"Parameter 'command-line' is missing", b"2")


def test_missing_any_arg(inst: Instance) -> None:
    """qmp-test.c test_qmp_missing_any_arg: qom-set without its 'any' value.

    QOM commands are not among the emulated ones, so only QEMU runs this.
    """
    if inst.target != "qemu":
        pytest.skip("qom-set is not emulated (no QOM tree under -machine none here)")
    client = inst.connect_negotiated()
    client.send(
        b"{'execute': 'qom-set', 'arguments': { 'path': '/machine', 'property': 'rtc-time' },"
        b" 'id': 1}"
    )
    assert client.recv_msg()[0] == generic(b"Parameter 'value' is missing", b"1")


# ---------------------------------------------------------------------------
# Queries and run state


@pytest.mark.parametrize(
    ("extra_args", "reply"),
    [
        ([], b'{"return": {}, "id": 1}\r\n'),
        (["-name", "vm1"], b'{"return": {"name": "vm1"}, "id": 1}\r\n'),
        (
            ["-name", "guest=\xe9t\xe9,debug-threads=on"],
            b'{"return": {"name": "\\u00E9t\\u00E9"}, "id": 1}\r\n',
        ),
    ],
    ids=["no-name", "name", "name-option"],
)
def test_query_name(launcher: Launcher, extra_args: list[str], reply: bytes) -> None:
    """query-name returns {} without -name, {"name": ...} with it."""
    client = launcher(extra_args).connect_negotiated()
    client.send(b'{"execute": "query-name", "id": 1}')
    assert client.recv_msg()[0] == reply


def test_query_version(inst: Instance) -> None:
    """query-version has VersionInfo's shape (values may differ between targets)."""
    client = inst.connect_negotiated()
    client.send(b'{"execute": "query-version", "id": "v"}')
    raw, msg = client.recv_msg()
    assert raw.startswith(b'{"return": {"qemu": {"micro": ') and raw.endswith(b', "id": "v"}\r\n')
    assert_version_info(msg["return"])


RUNNING = b'"return": {"status": "running", "singlestep": false, "running": true}'
PAUSED = b'"return": {"status": "paused", "singlestep": false, "running": false}'
PRELAUNCH = b'"return": {"status": "prelaunch", "singlestep": false, "running": false}'
STOP = b'{"timestamp": {"seconds": "S", "microseconds": "US"}, "event": "STOP"}\r\n'
RESUME = b'{"timestamp": {"seconds": "S", "microseconds": "US"}, "event": "RESUME"}\r\n'


def _query_status(client: QMPLine) -> bytes:
    client.send(b'{"execute": "query-status", "id": "qs"}')
    raw = client.recv_msg()[0]
    assert raw.endswith(b', "id": "qs"}\r\n'), raw
    return raw[1 : -len(b', "id": "qs"}\r\n')]


def _exchange(client: QMPLine, request: bytes) -> list[bytes]:
    """Send *request* (which must carry an id) and return every message up to its reply, masked."""
    client.send(request)
    out = []
    while True:
        raw, msg = client.recv_msg()
        if "event" in msg:
            assert_timestamp(msg)
        out.append(mask_raw(raw))
        if "event" not in msg:
            return out


def test_stop_cont_events_precede_replies(inst: Instance) -> None:
    """stop: STOP then the reply; cont: RESUME then the reply; repeats are silent no-ops."""
    client = inst.connect_negotiated()
    assert _query_status(client) == RUNNING
    assert _exchange(client, b'{"execute": "stop", "id": 1}') == [
        STOP,
        b'{"return": {}, "id": 1}\r\n',
    ]
    assert _query_status(client) == PAUSED
    assert _exchange(client, b'{"execute": "stop", "id": 2}') == [b'{"return": {}, "id": 2}\r\n']
    assert _exchange(client, b'{"execute": "cont", "id": 3}') == [
        RESUME,
        b'{"return": {}, "id": 3}\r\n',
    ]
    assert _query_status(client) == RUNNING
    assert _exchange(client, b'{"execute": "cont", "id": 4}') == [b'{"return": {}, "id": 4}\r\n']


def test_prelaunch_with_S(launcher: Launcher) -> None:
    """-S: prelaunch until cont, which sends RESUME."""
    client = launcher(["-S"]).connect_negotiated()
    assert _query_status(client) == PRELAUNCH
    assert _exchange(client, b'{"execute": "cont", "id": 1}') == [
        RESUME,
        b'{"return": {}, "id": 1}\r\n',
    ]
    assert _query_status(client) == RUNNING


def test_system_reset_event(inst: Instance) -> None:
    """system_reset: RESET {guest: false, reason: host-qmp-system-reset} before the reply."""
    client = inst.connect_negotiated()
    assert _exchange(client, b'{"execute": "system_reset", "id": "r"}') == [
        b'{"timestamp": {"seconds": "S", "microseconds": "US"}, "event": "RESET", '
        b'"data": {"guest": false, "reason": "host-qmp-system-reset"}}\r\n',
        b'{"return": {}, "id": "r"}\r\n',
    ]
    assert _query_status(client) == RUNNING


def test_events_with_async_qmp_client(inst: Instance) -> None:
    """The asyncio QMPClient (which enables OOB itself) sees STOP/RESUME and replies."""
    from qemu.qmp import QMPClient

    async def scenario() -> None:
        qmp = QMPClient("it")
        await qmp.connect(inst.mon_path)
        try:
            with qmp.listener() as listener:
                assert await qmp.execute("stop") == {}
                event = await asyncio.wait_for(listener.get(), 10)
                assert event["event"] == "STOP" and "data" not in event
                assert_timestamp(event)
                assert await qmp.execute("query-status") == {
                    "status": "paused",
                    "singlestep": False,
                    "running": False,
                }
                await qmp.execute("cont")
                event = await asyncio.wait_for(listener.get(), 10)
                assert event["event"] == "RESUME"
        finally:
            await qmp.disconnect()

    asyncio.run(scenario())


def test_events_not_sent_before_negotiation(launcher: Launcher) -> None:
    """Events raised while a monitor negotiates are dropped for it, not queued."""
    inst = launcher(aux=True)
    client = inst.connect()
    client.recv_greeting()
    aux = inst.connect_negotiated(inst.path("aux.sock"))
    assert aux.ok("stop") == {}
    aux.recv_event("STOP")  # raised and delivered to the negotiated monitor...
    client.assert_silent()  # ...but not to the negotiating one
    client.send(b'{"execute": "qmp_capabilities", "id": "neg"}')
    assert client.recv_msg()[0] == b'{"return": {}, "id": "neg"}\r\n'  # no late STOP
    assert aux.ok("cont") == {}
    assert mask_raw(client.recv_msg()[0]) == RESUME  # now events flow
    assert aux.recv_event("RESUME")


def test_quit(inst: Instance) -> None:
    """quit: the reply and SHUTDOWN in either order, then EOF; exit 0, socket removed."""
    client = inst.connect_negotiated()
    client.send(b'{"execute": "quit", "id": "q"}')
    msgs = client.recv_until_eof()
    shutdown = (
        b'{"timestamp": {"seconds": "S", "microseconds": "US"}, "event": "SHUTDOWN", '
        b'"data": {"guest": false, "reason": "host-qmp-quit"}}\r\n'
    )
    assert sorted(mask_raw(raw) for raw, _ in msgs) == sorted(
        [shutdown, b'{"return": {}, "id": "q"}\r\n']
    )
    assert inst.wait_exit() == 0
    assert not os.path.exists(inst.mon_path), "the listening socket's path was not unlinked"


# ---------------------------------------------------------------------------
# human-monitor-command

#: (command line, exact returned text), run in this order in one session.
HMP: list[tuple[str, str]] = [
    ("info status", "VM status: running\r\n"),
    ("  info   status  ", "VM status: running\r\n"),
    ("", ""),
    ("info name", ""),
    ("foo", "unknown command: 'foo'\r\n"),
    ("info bogus", "unknown command: 'info bogus'\r\n"),
    ("stop", ""),
    ("info status", "VM status: paused\r\n"),
    ("c", ""),
    ("info status", "VM status: running\r\n"),
]


def test_human_monitor_command(inst: Instance) -> None:
    """HMP through QMP: output text with CRLF line ends; unknown commands still succeed."""
    client = inst.connect_negotiated()
    for command_line, text in HMP:
        reply = client.execute("human-monitor-command", {"command-line": command_line})
        assert reply.get("return") == text, (command_line, reply)
    # 'stop' and 'c' (cont) raised their events
    assert [msg["event"] for _, msg in client.events] == ["STOP", "RESUME"]


def test_human_monitor_command_errors(launcher: Launcher) -> None:
    """Missing command-line and a bad cpu-index are QMP errors with the id echoed."""
    client = launcher(["-name", "vm1"]).connect_negotiated()
    client.send(b'{"execute": "human-monitor-command", "id": 2}')
    assert client.recv_msg()[0] == generic(b"Parameter 'command-line' is missing", b"2")
    client.send(
        b'{"execute": "human-monitor-command",'
        b' "arguments": {"command-line": "info status", "cpu-index": 5}, "id": 3}'
    )
    assert client.recv_msg()[0] == generic(b"Parameter 'cpu-index' expects a CPU number", b"3")
    client.send(
        b'{"execute": "human-monitor-command", "arguments": {"command-line": "info name"}, "id": 4}'
    )
    assert client.recv_msg()[0] == b'{"return": "vm1\\r\\n", "id": 4}\r\n'


#: Commands this tier uses; the emulator must list all of them too.
USED_COMMANDS = {
    "qmp_capabilities",
    "query-version",
    "query-commands",
    "query-name",
    "query-status",
    "stop",
    "cont",
    "system_reset",
    "quit",
    "human-monitor-command",
    "migrate-pause",
    "x-exit-preconfig",
}


def test_query_commands(inst: Instance) -> None:
    """query-commands lists each command once, as {"name": ...}, including ours."""
    client = inst.connect_negotiated()
    commands = client.ok("query-commands")
    assert all(isinstance(c, dict) and list(c) == ["name"] for c in commands), commands
    names = [c["name"] for c in commands]
    assert len(names) == len(set(names))
    assert USED_COMMANDS <= set(names), USED_COMMANDS - set(names)


# ---------------------------------------------------------------------------
# --preconfig


def test_preconfig(launcher: Launcher) -> None:
    """qmp-test.c test_qmp_preconfig, with 7.2's exact texts."""
    client = launcher(["--preconfig"]).connect_negotiated()
    assert client.execute("query-commands").get("return")
    assert _query_status(client) == PRELAUNCH
    for name in ("stop", "cont", "system_reset", "human-monitor-command"):
        client.send(b'{"execute": "' + name.encode() + b'", "id": 1}')
        assert client.recv_msg()[0] == generic(
            b"The command '" + name.encode() + b"' is permitted only after machine "
            b"initialization has completed",
            b"1",
        )
    client.send(b'{"execute": "query-name", "id": 2}')  # allowed in preconfig
    assert client.recv_msg()[0] == b'{"return": {}, "id": 2}\r\n'
    assert _exchange(client, b'{"execute": "x-exit-preconfig", "id": "x"}') == [
        RESUME,
        b'{"return": {}, "id": "x"}\r\n',
    ]
    assert _query_status(client) == RUNNING
    client.send(b'{"execute": "x-exit-preconfig", "id": "again"}')
    assert client.recv_msg()[0] == generic(
        b"The command is permitted only before machine initialization", b'"again"'
    )
    assert _exchange(client, b'{"execute": "stop", "id": 3}') == [
        STOP,
        b'{"return": {}, "id": 3}\r\n',
    ]


# ---------------------------------------------------------------------------
# Pretty printing


def test_pretty_output(launcher: Launcher) -> None:
    """pretty=on: 4-space indent, CRLF after every line, empty containers still broken."""
    client = launcher(["-name", "vm1"], pretty=True).connect()
    raw, _ = client.recv_greeting()
    assert mask_raw(raw) == crlf(
        "{",
        '    "QMP": {',
        '        "version": {',
        '            "qemu": {',
        '                "micro": "M",',
        '                "minor": "M",',
        '                "major": "M"',
        "            },",
        '            "package": "<masked>"',
        "        },",
        '        "capabilities": [',
        '            "oob"',
        "        ]",
        "    }",
        "}",
    )
    client.send(b'{"execute": "query-name"}')
    assert client.recv_msg()[0] == crlf(
        "{",
        '    "error": {',
        '        "class": "CommandNotFound",',
        '        "desc": "Expecting capabilities negotiation with \'qmp_capabilities\'"',
        "    }",
        "}",
    )
    client.send(b'{"execute": "qmp_capabilities"}')
    assert client.recv_msg()[0] == crlf("{", '    "return": {', "    }", "}")
    client.send(b'{"execute": "query-name", "id": "n"}')
    assert client.recv_msg()[0] == crlf(
        "{", '    "return": {', '        "name": "vm1"', "    },", '    "id": "n"', "}"
    )
    client.send(b'{"execute": "query-status", "id": 1}')
    assert client.recv_msg()[0] == crlf(
        "{",
        '    "return": {',
        '        "status": "running",',
        '        "singlestep": false,',
        '        "running": true',
        "    },",
        '    "id": 1',
        "}",
    )
    client.send(b'{"execute": "stop", "id": "s"}')
    assert mask_raw(client.recv_msg()[0]) == crlf(
        "{",
        '    "timestamp": {',
        '        "seconds": "S",',
        '        "microseconds": "US"',
        "    },",
        '    "event": "STOP"',
        "}",
    )
    assert client.recv_msg()[0] == crlf("{", '    "return": {', "    },", '    "id": "s"', "}")
    client.send(b'{"execute": "nope", "id": "e"}')
    assert client.recv_msg()[0] == crlf(
        "{",
        '    "id": "e",',
        '    "error": {',
        '        "class": "CommandNotFound",',
        '        "desc": "The command nope has not been found"',
        "    }",
        "}",
    )
    client.send(b'{"execute": "query-name", "id": [1, {"a": [], "b": {}}]}')
    assert client.recv_msg()[0] == crlf(
        "{",
        '    "return": {',
        '        "name": "vm1"',
        "    },",
        '    "id": [',
        "        1,",
        "        {",
        '            "a": [',
        "            ],",
        '            "b": {',
        "            }",
        "        }",
        "    ]",
        "}",
    )
    client.send(b"{]\n")
    assert client.recv_msg()[0] == crlf(
        "{",
        '    "error": {',
        '        "class": "GenericError",',
        '        "desc": "JSON parse error, expecting value"',
        "    }",
        "}",
    )
