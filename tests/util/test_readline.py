"""util/readline.py: the bytes a terminal sees, compared with QEMU 7.2.22.

The expected transcripts were recorded from ``qemu-system-x86_64 -machine
none -monitor unix:...`` by sending the same input over the socket; the
lines QEMU printed for the commands (``unknown command: ...``) are left
out, since no monitor runs here.  The harness turns ``\\n`` into CRLF and
shows the prompt after each line, as the monitor does.
"""

from __future__ import annotations

from typing import Any, Optional

from hypothesis import given
from hypothesis import strategies as st

from util.readline import (
    READLINE_CMD_BUF_SIZE,
    READLINE_MAX_CMDS,
    ReadLineState,
    readline_add_completion,
    readline_get_history,
    readline_handle_byte,
    readline_handle_bytes,
    readline_init,
    readline_set_completion_index,
    readline_show_prompt,
    readline_start,
)

PROMPT = b"(qemu) "


class Terminal:
    """A readline state wired to a byte sink, like an HMP monitor."""

    def __init__(self, completions: Optional[list[str]] = None, password: bool = False) -> None:
        self.out = bytearray()
        self.lines: list[str] = []
        self.flushes = 0
        self.completions = completions or []
        self.rs = readline_init(self.printf, self.flush, self, self.find_completion)
        readline_start(self.rs, "(qemu) ", password, self.line, None)

    def printf(self, opaque: Any, text: str) -> None:
        assert opaque is self
        self.out += text.replace("\n", "\r\n").encode("utf-8", "surrogateescape")

    def flush(self, opaque: Any) -> None:
        self.flushes += 1

    def line(self, opaque: Any, text: str, readline_opaque: Any) -> None:
        self.lines.append(text)

    def find_completion(self, opaque: Any, before_cursor: str) -> None:
        word = before_cursor.split(" ")[-1]
        readline_set_completion_index(self.rs, len(word))
        for candidate in self.completions:
            if candidate.startswith(word):
                readline_add_completion(self.rs, candidate)

    def type(self, data: bytes) -> bytes:
        """Feed ``data`` as the monitor does; show the prompt after each line."""
        start = len(self.out)
        pos = 0
        while pos < len(data):
            before = len(self.lines)
            pos = readline_handle_bytes(self.rs, data, pos)
            if len(self.lines) > before:
                readline_show_prompt(self.rs)
        return bytes(self.out[start:])


def echo(*steps: bytes) -> bytes:
    return b"".join(steps)


L, K = b"\x1b[D", b"\x1b[K"
R = b"\x1b[C"


def test_typing_redraws_the_whole_line_after_each_byte() -> None:
    term = Terminal()
    assert term.type(b"foo\r") == echo(b"f", K, L, b"fo", K, L * 2, b"foo", K, b"\r\n", PROMPT)
    assert term.lines == ["foo"]


def test_backspace_del_and_ctrl_h() -> None:
    term = Terminal()
    assert term.type(b"abc\x7f\x7fd\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"abc", K, L * 3, b"ab", K, L * 2, b"a", K, L, b"ad",
        K, b"\r\n", PROMPT,
    )  # fmt: skip
    assert term.type(b"ab\x08c\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"a", K, L, b"ac", K, b"\r\n", PROMPT
    )
    assert term.lines == ["ad", "ac"]


def test_ctrl_a_ctrl_e_and_ignored_ctrl_k_ctrl_u() -> None:
    term = Terminal()
    assert term.type(b"bc\x01a\r") == echo(
        b"b", K, L, b"bc", K, L * 2, b"abc", K, L * 2, b"\r\n", PROMPT
    )
    assert term.type(b"xy\x01\x05z\r") == echo(
        b"x", K, L, b"xy", K, L * 2, R * 2, L * 2, b"xyz", K, b"\r\n", PROMPT
    )
    # QEMU has no ^K or ^U: they are dropped like other control bytes
    assert term.type(b"ab\x0bc\x15d\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"abc", K, L * 3, b"abcd", K, b"\r\n", PROMPT
    )
    assert term.lines == ["abc", "xyz", "abcd"]


def test_ctrl_w_deletes_the_previous_word() -> None:
    term = Terminal()
    assert term.type(b"foo bar\x17baz\r") == echo(
        b"f", K, L, b"fo", K, L * 2, b"foo", K, L * 3, b"foo ", K, L * 4, b"foo b", K,
        L * 5, b"foo ba", K, L * 6, b"foo bar", K, L * 7, b"foo ", K, L * 4, b"foo b", K,
        L * 5, b"foo ba", K, L * 6, b"foo baz", K, b"\r\n", PROMPT,
    )  # fmt: skip
    assert term.lines == ["foo baz"]


def test_cursor_keys_insert_in_the_middle() -> None:
    term = Terminal()
    assert term.type(b"abc\x1b[D\x1b[Dx\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"abc", K, L, L, L, b"axbc", K, L * 2, b"\r\n",
        PROMPT,
    )  # fmt: skip
    assert term.type(b"abc\x1b[D\x1b[D\x1b[Cx\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"abc", K, L, L, R, L * 2, b"abxc", K, L, b"\r\n",
        PROMPT,
    )  # fmt: skip
    assert term.lines == ["axbc", "abxc"]


def test_history_up_and_down() -> None:
    term = Terminal()
    term.type(b"axbc\rabxc\r")
    assert term.type(b"\x1b[A") == echo(b"abxc", K)
    assert term.type(b"\x1b[A") == echo(L * 4, b"axbc", K)
    assert term.type(b"\x1b[A") == b""  # nothing older
    assert term.type(b"\x1b[B") == echo(L * 4, b"abxc", K)
    assert term.type(b"\x1b[B\x1b[B") == echo(L * 4, K)
    assert term.type(b"\x1b[A\r") == echo(b"abxc", K, b"\r\n", PROMPT)
    assert term.lines == ["axbc", "abxc", "abxc"]
    assert [readline_get_history(term.rs, i) for i in range(3)] == ["axbc", "abxc", None]


def test_history_moves_a_repeated_line_to_the_end_and_is_bounded() -> None:
    term = Terminal()
    term.type(b"one\rtwo\rone\r\r")
    assert term.rs.history == [b"two", b"one"]
    for i in range(READLINE_MAX_CMDS + 3):
        term.type(b"c%d\r" % i)
    assert len(term.rs.history) == READLINE_MAX_CMDS
    assert readline_get_history(term.rs, 0) == "c3"
    assert readline_get_history(term.rs, READLINE_MAX_CMDS - 1) == f"c{READLINE_MAX_CMDS + 2}"


def test_empty_line_keeps_the_history_position() -> None:
    """An empty line is not recorded and does not reset browsing (QEMU)."""
    term = Terminal()
    term.type(b"a\rb\rc\r")
    term.type(b"\x1b[A\x1b[A\x01\x04\r")  # shows "b", then deletes it
    assert term.lines[-1] == ""
    assert term.type(b"\x1b[A") == echo(b"a", K)


def test_home_end_delete_escapes_and_ctrl_d() -> None:
    term = Terminal()
    assert term.type(b"abc\x1b[1~x\x1b[4~y\x1b[D\x1b[3~\x04\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"abc", K, L * 3, b"xabc", K, L * 3, R * 3, L * 4,
        b"xabcy", K, L * 5, b"xabc", K, b"\r\n", PROMPT,
    )  # fmt: skip
    assert term.type(b"ab\x1bOHx\x1bOFy\r") == echo(
        b"a", K, L, b"ab", K, L * 2, b"xab", K, L * 2, R * 2, L * 3, b"xaby", K, b"\r\n",
        PROMPT,
    )  # fmt: skip
    assert term.lines == ["xabc", "xaby"]


def test_unknown_escape_drops_the_next_byte() -> None:
    term = Terminal()
    assert term.type(b"ab\x1bxc\r") == echo(b"a", K, L, b"ab", K, L * 2, b"abc", K, b"\r\n", PROMPT)


def test_8bit_csi_and_utf8_bytes() -> None:
    term = Terminal()
    assert term.type(b"\x9bD") == b""
    assert term.type("é\r".encode()) == echo(b"\xc3", K, L, b"\xc3\xa9", K, b"\r\n", PROMPT)
    assert term.lines == ["é"]


def test_completion_lists_candidates_then_redraws() -> None:
    """QEMU 7.2 has ``stop`` and ``stopcapture``: ``sto<Tab>``."""
    term = Terminal(["stop", "stopcapture"])
    assert term.type(b"sto\t") == echo(
        b"s", K, L, b"st", K, L * 2, b"sto", K, b"\r\nstop         stopcapture  \r\n", PROMPT,
        b"stop", K,
    )  # fmt: skip


def test_completion_columns_and_unique_match() -> None:
    term = Terminal(["stats", "status"])
    assert term.type(b"info sta\t").endswith(b"\r\nstats     status    \r\n(qemu) info stat" + K)
    term = Terminal(["version"])
    assert term.type(b"info v\t").endswith(L * 6 + b"info version " + K)
    words = [f"w{i:02d}" for i in range(9)]
    term = Terminal(words)
    listing = term.type(b"\t").split(b"\r\n")[1:-1]
    assert listing == [b"".join(w.encode().ljust(10) for w in words[:8]), b"w08".ljust(10)]


def test_password_mode_echoes_stars_and_keeps_no_history() -> None:
    term = Terminal(password=True)
    assert term.type(b"pw\r") == echo(b"*", K, L, b"**", K, b"\r\n", PROMPT)
    assert term.lines == ["pw"]
    assert term.rs.history == []


def test_line_length_is_bounded() -> None:
    term = Terminal()
    term.type(b"x" * (READLINE_CMD_BUF_SIZE + 10))
    assert len(term.rs.cmd_buf) == READLINE_CMD_BUF_SIZE


def test_handle_bytes_stops_after_each_line() -> None:
    term = Terminal()
    data = b"ab\rcd\r"
    assert readline_handle_bytes(term.rs, data) == 3
    assert readline_handle_bytes(term.rs, data, 3) == 6
    assert term.lines == ["ab", "cd"]


def _per_byte(data: bytes) -> tuple[bytes, list[str], ReadLineState]:
    term = Terminal(["stop", "stopcapture", "system_reset"])
    for ch in data:
        readline_handle_byte(term.rs, ch)
    return bytes(term.out), term.lines, term.rs


_keys = st.sampled_from(
    [b"a", b"b", b" ", b"\xc3", b"\xa9", b"\x7f", b"\x08", b"\x01", b"\x04", b"\x05",
     b"\x09", b"\x17", b"\r", b"\x1b[A", b"\x1b[B", b"\x1b[C", b"\x1b[D", b"\x1b[3~",
     b"\x1bOH", b"\x1b", b"\x9b", b"[", b"1", b"~", b"st", b"hello world"]
)  # fmt: skip


@given(st.lists(_keys, max_size=40))
def test_fast_path_matches_the_per_byte_machine(keys: list[bytes]) -> None:
    data = b"".join(keys)
    expected_out, expected_lines, expected_rs = _per_byte(data)
    term = Terminal(["stop", "stopcapture", "system_reset"])
    pos = 0
    while pos < len(data):
        pos = readline_handle_bytes(term.rs, data, pos)
    assert bytes(term.out) == expected_out
    assert term.lines == expected_lines
    assert term.rs.history == expected_rs.history
    assert bytes(term.rs.cmd_buf) == bytes(expected_rs.cmd_buf)
