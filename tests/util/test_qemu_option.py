"""QemuOpts parsing, with QEMU 7.2's error texts (captured from its stderr)."""

from __future__ import annotations

import pytest

from util.qemu_option import (
    QEMU_OPT_BOOL,
    QEMU_OPT_NUMBER,
    QEMU_OPT_SIZE,
    QEMU_OPT_STRING,
    QemuOptDesc,
    QemuOptsError,
    QemuOptsHelpWanted,
    QemuOptsList,
    qemu_opt_find,
    qemu_opt_get,
    qemu_opt_get_bool,
    qemu_opt_get_number,
    qemu_opt_get_size,
    qemu_opt_set,
    qemu_opts_create,
    qemu_opts_do_parse,
    qemu_opts_id,
    qemu_opts_parse,
    qemu_opts_print_help,
    qemu_strtosz,
)

DESC = (
    QemuOptDesc("backend", QEMU_OPT_STRING),
    QemuOptDesc("path", QEMU_OPT_STRING),
    QemuOptDesc("server", QEMU_OPT_BOOL),
    QemuOptDesc("delay", QEMU_OPT_BOOL),
    QemuOptDesc("reconnect", QEMU_OPT_NUMBER),
    QemuOptDesc("size", QEMU_OPT_SIZE),
    QemuOptDesc("tight", QEMU_OPT_BOOL, def_value_str="on"),
)


def new_list() -> QemuOptsList:
    return QemuOptsList("chardev", DESC, implied_opt_name="backend")


def parse(params: str, warnings: list[tuple[str, str]] | None = None):
    def warn(msg: str, hint: str) -> None:
        assert warnings is not None, f"unexpected warning {msg}"
        warnings.append((msg, hint))

    return qemu_opts_parse(new_list(), params, True, warn)


def error_of(params: str) -> str:
    with pytest.raises(QemuOptsError) as exc:
        parse(params, [])
    return exc.value.msg


def test_implied_first_option_and_id():
    opts = parse("socket,id=c0,path=/tmp/x.sock,server=on")
    assert qemu_opts_id(opts) == "c0"
    assert qemu_opt_get(opts, "backend") == "socket"
    assert qemu_opt_get(opts, "path") == "/tmp/x.sock"
    assert qemu_opt_get_bool(opts, "server", False) is True
    assert qemu_opt_get(opts, "id") is None  # id is not an option


def test_double_comma_escapes_a_comma():
    opts = parse("socket,id=c,path=/tmp/a,,b.sock")
    assert qemu_opt_get(opts, "path") == "/tmp/a,b.sock"
    assert qemu_opt_get(parse("null,,x,id=c"), "backend") == "null,x"


def test_last_value_wins_and_defaults():
    opts = parse("null,id=c,server=on,server=off")
    assert qemu_opt_get_bool(opts, "server", True) is False
    assert qemu_opt_get(opts, "tight") == "on"
    assert qemu_opt_get_bool(opts, "tight", False) is True
    assert qemu_opt_find(opts, "tight") is None
    assert qemu_opt_get_number(opts, "reconnect", 7) == 7


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[("on", True), ("yes", True), ("true", True), ("y", True)],
        *[("off", False), ("no", False), ("false", False), ("n", False)],
    ],
)
def test_bool_spellings(text, value):
    assert qemu_opt_get_bool(parse(f"null,id=c,server={text}"), "server", not value) is value


@pytest.mark.parametrize("text", ["TRUE", "", "1", "On"])
def test_bool_error(text):
    assert error_of(f"null,id=c,server={text}") == "Parameter 'server' expects 'on' or 'off'"


def test_short_form_booleans_warn_as_qemu_does():
    warnings: list[tuple[str, str]] = []
    opts = parse("null,id=c,server,nodelay", warnings)
    assert qemu_opt_get_bool(opts, "server", False) is True
    assert qemu_opt_get_bool(opts, "delay", True) is False
    assert warnings == [
        ("short-form boolean option 'server' deprecated", "Please use server=on instead\n"),
        ("short-form boolean option 'nodelay' deprecated", "Please use nodelay=on instead\n"),
    ]


def test_short_form_delay_hint_names_nodelay():
    warnings: list[tuple[str, str]] = []
    parse("null,id=c,delay", warnings)
    assert warnings[0][1] == "Please use nodelay=off instead\n"


def test_unknown_option_errors():
    assert error_of("socket,id=c,path=/x,x=1") == "Invalid parameter 'x'"
    assert error_of("null,id=c,=x") == "Invalid parameter ''"
    with pytest.raises(QemuOptsError, match="Invalid parameter 'x'"):
        parse("null,id=c,nox", [])


def test_id_must_be_an_identifier():
    with pytest.raises(QemuOptsError) as exc:
        parse("null,id=1c")
    assert exc.value.msg == "Parameter 'id' expects an identifier"
    assert exc.value.hint == (
        "Identifiers consist of letters, digits, '-', '.', '_', starting with a letter.\n"
    )
    assert error_of("null,id=") == "Parameter 'id' expects an identifier"
    assert error_of("null,id=c,,d") == "Parameter 'id' expects an identifier"


def test_duplicate_id_and_nothing_added_on_error():
    lst = new_list()
    qemu_opts_parse(lst, "null,id=c", True)
    with pytest.raises(QemuOptsError, match=r"^Duplicate ID 'c' for chardev$"):
        qemu_opts_parse(lst, "null,id=c", True)
    with pytest.raises(QemuOptsError):
        qemu_opts_parse(lst, "null,id=d,bogus=1", True)
    assert [o.id for o in lst.head] == ["c"]


def test_first_id_is_the_id():
    assert qemu_opts_id(parse("null,id=c,id=d")) == "c"


def test_numbers():
    assert qemu_opt_get_number(parse("null,id=c,reconnect=0x10"), "reconnect", 0) == 16
    assert qemu_opt_get_number(parse("null,id=c,reconnect=010"), "reconnect", 0) == 8
    assert qemu_opt_get_number(parse("null,id=c,reconnect=-1"), "reconnect", 0) == 2**64 - 1
    assert error_of("null,id=c,reconnect=abc") == "Parameter 'reconnect' expects a number"
    assert error_of("null,id=c,reconnect=") == "Parameter 'reconnect' expects a number"
    assert error_of("null,id=c,reconnect=99999999999999999999999") == (
        "Value '99999999999999999999999' is too large for parameter 'reconnect'"
    )


def test_sizes():
    assert qemu_opt_get_size(parse("null,id=c,size=1.5k"), "size", 0) == 1536
    assert qemu_opt_get_size(parse("null,id=c,size=4M"), "size", 0) == 4 << 20
    with pytest.raises(QemuOptsError) as exc:
        parse("null,id=c,size=-4")
    assert exc.value.msg == "Parameter 'size' expects a non-negative number below 2^64"
    assert exc.value.hint == (
        "Optional suffix k, M, G, T, P or E means kilo-, mega-, giga-, tera-, peta-\n"
        "and exabytes, respectively.\n"
    )
    assert error_of("null,id=c,size=16E") == "Value '16E' is out of range for parameter 'size'"


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("0", 0),
        ("1.k", 1024),
        ("1.", 1),
        ("1.5e", 3 << 59),
        ("8E", 1 << 63),
        ("0.5k", 512),
        ("  12", 12),
        ("1B", 1),
        ("0X1f", 31),
    ],
)
def test_strtosz_values(text, value):
    assert qemu_strtosz(text) == value


@pytest.mark.parametrize("text", ["1.5", "1.5e3", "0x1.5", "0x", " -0", "", "12x"])
def test_strtosz_rejects(text):
    with pytest.raises(ValueError):
        qemu_strtosz(text)


def test_strtosz_hex_with_suffix_is_deprecated(capsys):
    assert qemu_strtosz("0x10k") == 16384
    assert (
        "Using a multiplier suffix on hex numbers is deprecated: 0x10k" in capsys.readouterr().err
    )


def test_help_is_reported_not_parsed():
    with pytest.raises(QemuOptsHelpWanted) as exc:
        parse("null,id=c,help")
    lines = exc.value.help_text.splitlines()
    assert lines[0] == "chardev options:"
    assert lines[1:] == sorted(lines[1:])
    assert "  server=<bool (on/off)>" in lines and "  size=<size>" in lines
    assert qemu_opt_get(parse("help"), "backend") == "help"  # the implied option


def test_print_help_with_descriptions():
    lst = QemuOptsList("x", (QemuOptDesc("a", QEMU_OPT_NUMBER, help="the a"),))
    assert qemu_opts_print_help(lst) == "x options:\n" + "  a=<num>".ljust(24) + " - the a\n"
    assert qemu_opts_print_help(QemuOptsList("y")) == "There are no options for y.\n"


def test_do_parse_with_implied_name_and_set():
    opts = qemu_opts_create(new_list(), "c", True)
    qemu_opts_do_parse(opts, "/tmp/p,server,nodelay", "path")
    assert qemu_opt_get(opts, "path") == "/tmp/p"
    assert qemu_opt_get_bool(opts, "server", False) is True
    qemu_opt_set(opts, "reconnect", "3")
    assert qemu_opt_get_number(opts, "reconnect", 0) == 3
    with pytest.raises(QemuOptsError, match="expects a number"):
        qemu_opt_set(opts, "reconnect", "x")


def test_lists_without_descriptions_take_anything():
    lst = QemuOptsList("any")
    opts = qemu_opts_parse(lst, "a=1,b", False)
    assert qemu_opt_get(opts, "a") == "1"
    assert qemu_opt_get(opts, "b") == "on"


def test_merged_lists_refuse_ids_and_merge():
    lst = QemuOptsList("trace", (QemuOptDesc("enable", QEMU_OPT_STRING),), "enable", True)
    first = qemu_opts_parse(lst, "a*", True)
    second = qemu_opts_parse(lst, "b*", True)
    assert first is second
    assert [o.str for o in first.head] == ["a*", "b*"]
    with pytest.raises(QemuOptsError, match=r"^Invalid parameter 'id'$"):
        qemu_opts_parse(lst, "x,id=t", True)
