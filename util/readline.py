"""Line editing for the human monitor (util/readline.c, include/qemu/readline.h).

Thread: whichever thread feeds the input; for HMP monitors that is the main
loop thread, holding the BQL, from the chardev read handler.  A
:class:`ReadLineState` has no lock of its own: its owner serialises access
(the monitor reads it only from the main loop, and ``monitor_accept_input``
restarts it under ``mon_lock``).

The terminal sees exactly what QEMU 7.2 sends: after every input byte the
whole line is redrawn when it changed (cursor back to the start of the line
with ``ESC [ D``, the line, ``ESC [ K``), then the cursor is moved to its
place.  Typing ``ab`` therefore echoes ``a ESC[K ESC[D ab ESC[K``.

The line is kept as bytes, since QEMU stores and echoes raw bytes (a UTF-8
character typed byte by byte is redrawn after each byte).  Text handed to
the printf callback and to the line callback is those bytes decoded as
UTF-8 with ``surrogateescape``, so encoding it the same way gives back the
exact bytes, even for a partial or invalid sequence.
"""

from __future__ import annotations

import enum
import re
from typing import Any, Callable, Optional

READLINE_CMD_BUF_SIZE = 4095
READLINE_MAX_CMDS = 64
READLINE_MAX_COMPLETIONS = 256

#: printf_func(opaque, text): append text to the terminal's output
ReadLinePrintfFunc = Callable[[Any, str], None]
#: flush_func(opaque): push buffered output out
ReadLineFlushFunc = Callable[[Any], None]
#: readline_func(opaque, line, readline_opaque): a line was entered
ReadLineFunc = Callable[[Any, str, Any], None]
#: completion_finder(opaque, text_before_cursor): calls readline_add_completion
ReadLineCompletionFunc = Callable[[Any, str], None]

_CURSOR_LEFT = b"\033[D"
_CURSOR_RIGHT = b"\033[C"
_CLEAR_EOL = b"\033[K"

#: bytes that only insert themselves: everything from space up, except DEL
#: (backspace) and 0x9b (the 8-bit CSI introducer)
_PLAIN_RUN = re.compile(rb"[\x20-\x7e\x80-\x9a\x9c-\xff]+")

_ISSPACE = b" \t\n\v\f\r"


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


class EscState(enum.Enum):
    """Where the byte parser is inside an escape sequence."""

    IS_NORM = 0
    IS_ESC = 1
    IS_CSI = 2
    IS_SS3 = 3


class ReadLineState:
    """One terminal's line editor (struct ReadLineState).

    ``cmd_buf`` and ``cmd_buf_index`` are the line and the cursor;
    ``last_cmd_buf``/``last_cmd_buf_index`` are what the terminal shows, so
    an update draws only when something changed.
    """

    def __init__(
        self,
        printf_func: ReadLinePrintfFunc,
        flush_func: ReadLineFlushFunc,
        opaque: Any,
        completion_finder: Optional[ReadLineCompletionFunc],
    ) -> None:
        self.cmd_buf = bytearray()
        self.cmd_buf_index = 0
        self.last_cmd_buf = b""
        self.last_cmd_buf_index = 0
        self.esc_state = EscState.IS_NORM
        self.esc_param = 0
        #: oldest first, each line at most once, READLINE_MAX_CMDS at most
        self.history: list[bytes] = []
        #: the history entry being shown, -1 when editing a new line
        self.hist_entry = -1
        self.completion_finder = completion_finder
        self.completions: list[bytes] = []
        self.completion_index = 0
        self.readline_func: Optional[ReadLineFunc] = None
        self.readline_opaque: Any = None
        self.read_password = False
        self.prompt = ""
        self.printf_func = printf_func
        self.flush_func = flush_func
        self.opaque = opaque

    def __repr__(self) -> str:
        return f"<ReadLineState {bytes(self.cmd_buf)!r} at {self.cmd_buf_index}>"


def readline_init(
    printf_func: ReadLinePrintfFunc,
    flush_func: ReadLineFlushFunc,
    opaque: Any,
    completion_finder: Optional[ReadLineCompletionFunc],
) -> ReadLineState:
    return ReadLineState(printf_func, flush_func, opaque, completion_finder)


def readline_start(
    rs: ReadLineState,
    prompt: str,
    read_password: bool,
    readline_func: ReadLineFunc,
    opaque: Any,
) -> None:
    """Ask for a new line; ``readline_func`` gets it when it is entered.

    The prompt is not shown here: the caller shows it when the terminal is
    ready (HMP does so when it accepts input again).
    """
    rs.prompt = prompt
    rs.readline_func = readline_func
    rs.readline_opaque = opaque
    rs.read_password = read_password
    readline_restart(rs)


def readline_restart(rs: ReadLineState) -> None:
    """Forget the line being typed (the display is left alone)."""
    rs.cmd_buf.clear()
    rs.cmd_buf_index = 0


def readline_show_prompt(rs: ReadLineState) -> None:
    """Print the prompt; what follows it on the terminal is now empty."""
    rs.printf_func(rs.opaque, rs.prompt)
    rs.flush_func(rs.opaque)
    rs.last_cmd_buf = b""
    rs.last_cmd_buf_index = 0
    rs.esc_state = EscState.IS_NORM


def readline_get_history(rs: ReadLineState, index: int) -> Optional[str]:
    if 0 <= index < len(rs.history):
        return _text(rs.history[index])
    return None


# ---------------------------------------------------------------- display


def _redraw(rs: ReadLineState) -> bytes:
    """The bytes that bring the terminal in line with the buffer."""
    out = bytearray()
    line = bytes(rs.cmd_buf)
    if line != rs.last_cmd_buf:
        out += _CURSOR_LEFT * rs.last_cmd_buf_index
        out += b"*" * len(line) if rs.read_password else line
        out += _CLEAR_EOL
        rs.last_cmd_buf = line
        rs.last_cmd_buf_index = len(line)
    delta = rs.cmd_buf_index - rs.last_cmd_buf_index
    if delta:
        out += _CURSOR_RIGHT * delta if delta > 0 else _CURSOR_LEFT * -delta
        rs.last_cmd_buf_index = rs.cmd_buf_index
    return bytes(out)


def readline_update(rs: ReadLineState) -> None:
    out = _redraw(rs)
    if out:
        rs.printf_func(rs.opaque, _text(out))
    rs.flush_func(rs.opaque)


# ---------------------------------------------------------------- editing


def readline_insert_char(rs: ReadLineState, ch: int) -> None:
    """Insert at the cursor; a full line silently drops the byte."""
    if rs.cmd_buf_index < READLINE_CMD_BUF_SIZE:
        rs.cmd_buf.insert(rs.cmd_buf_index, ch)
        rs.cmd_buf_index += 1


def readline_backward_char(rs: ReadLineState) -> None:
    if rs.cmd_buf_index > 0:
        rs.cmd_buf_index -= 1


def readline_forward_char(rs: ReadLineState) -> None:
    if rs.cmd_buf_index < len(rs.cmd_buf):
        rs.cmd_buf_index += 1


def readline_delete_char(rs: ReadLineState) -> None:
    if rs.cmd_buf_index < len(rs.cmd_buf):
        del rs.cmd_buf[rs.cmd_buf_index]


def readline_backspace(rs: ReadLineState) -> None:
    if rs.cmd_buf_index > 0:
        readline_backward_char(rs)
        readline_delete_char(rs)


def readline_backword(rs: ReadLineState) -> None:
    """Ctrl-W: delete the word before the cursor and the blanks after it.

    As in QEMU, the scan stops at index 0 without checking that byte, so a
    leading blank is deleted with the first word.
    """
    index = rs.cmd_buf_index
    if index == 0 or index > len(rs.cmd_buf):
        return
    start = index - 1
    while start > 0 and rs.cmd_buf[start] in _ISSPACE:
        start -= 1
    while start > 0:
        if rs.cmd_buf[start] in _ISSPACE:
            start += 1
            break
        start -= 1
    if start < index:
        del rs.cmd_buf[start:index]
        rs.cmd_buf_index = start


def readline_bol(rs: ReadLineState) -> None:
    rs.cmd_buf_index = 0


def readline_eol(rs: ReadLineState) -> None:
    rs.cmd_buf_index = len(rs.cmd_buf)


def _load_history(rs: ReadLineState) -> None:
    rs.cmd_buf[:] = rs.history[rs.hist_entry][:READLINE_CMD_BUF_SIZE]
    rs.cmd_buf_index = len(rs.cmd_buf)


def readline_up_char(rs: ReadLineState) -> None:
    """Show the previous history entry; nothing before the oldest."""
    if rs.hist_entry == 0:
        return
    if rs.hist_entry == -1:
        rs.hist_entry = len(rs.history)
    rs.hist_entry -= 1
    if rs.hist_entry >= 0:
        _load_history(rs)


def readline_down_char(rs: ReadLineState) -> None:
    """Show the next history entry; past the newest, an empty line."""
    if rs.hist_entry == -1:
        return
    if rs.hist_entry < READLINE_MAX_CMDS - 1:
        rs.hist_entry += 1
        if rs.hist_entry < len(rs.history):
            _load_history(rs)
            return
    rs.cmd_buf.clear()
    rs.cmd_buf_index = 0
    rs.hist_entry = -1


def readline_hist_add(rs: ReadLineState, cmdline: bytes) -> None:
    """Make ``cmdline`` the newest entry, moving it if already present.

    An empty line is not recorded and, as in QEMU, leaves ``hist_entry``
    where history browsing left it.
    """
    if not cmdline:
        return
    if cmdline in rs.history:
        rs.history.remove(cmdline)
    elif len(rs.history) == READLINE_MAX_CMDS:
        del rs.history[0]
    rs.history.append(cmdline)
    rs.hist_entry = -1


# ---------------------------------------------------------------- completion


def readline_add_completion(rs: ReadLineState, text: str) -> None:
    """Offer ``text`` as a completion (called by the completion finder)."""
    if len(rs.completions) < READLINE_MAX_COMPLETIONS:
        rs.completions.append(_bytes(text))


def readline_set_completion_index(rs: ReadLineState, index: int) -> None:
    """How many bytes of each completion the user has already typed."""
    rs.completion_index = index


def _common_prefix_len(words: list[bytes]) -> int:
    first = words[0]
    prefix = len(first)
    for word in words[1:]:
        prefix = min(prefix, len(word))
        for j in range(prefix):
            if word[j] != first[j]:
                prefix = j
                break
    return prefix


def readline_completion(rs: ReadLineState) -> None:
    """Tab: complete a unique match (plus a space), or list the matches in
    columns of an 80-column terminal and insert their common prefix."""
    rs.completions = []
    if rs.completion_finder is None:
        return
    rs.completion_finder(rs.opaque, _text(bytes(rs.cmd_buf[: rs.cmd_buf_index])))
    completions, rs.completions = rs.completions, []
    if not completions:
        return
    if len(completions) == 1:
        word = completions[0]
        for ch in word[rs.completion_index :]:
            readline_insert_char(rs, ch)
        if word and not word.endswith(b"/"):
            readline_insert_char(rs, ord(" "))
        return
    rs.printf_func(rs.opaque, "\n")
    max_prefix = _common_prefix_len(completions)
    for ch in completions[0][rs.completion_index : max_prefix]:
        readline_insert_char(rs, ch)
    max_width = min(max(max(len(word) for word in completions) + 2, 10), 80)
    nb_cols = 80 // max_width
    rows = []
    for first in range(0, len(completions), nb_cols):
        row = completions[first : first + nb_cols]
        rows.append(b"".join(word.ljust(max_width) for word in row) + b"\n")
    rs.printf_func(rs.opaque, _text(b"".join(rows)))
    readline_show_prompt(rs)


# ---------------------------------------------------------------- input


def _enter_line(rs: ReadLineState) -> None:
    """CR or LF: record the line, move to a fresh one, hand the line over."""
    line = bytes(rs.cmd_buf)
    if not rs.read_password:
        readline_hist_add(rs, line)
    rs.printf_func(rs.opaque, "\n")
    rs.cmd_buf.clear()
    rs.cmd_buf_index = 0
    rs.last_cmd_buf = b""
    rs.last_cmd_buf_index = 0
    assert rs.readline_func is not None, "readline_start() was not called"
    rs.readline_func(rs.opaque, _text(line), rs.readline_opaque)


_NORM_KEYS: dict[int, Callable[[ReadLineState], None]] = {
    1: readline_bol,  # ^A
    4: readline_delete_char,  # ^D
    5: readline_eol,  # ^E
    9: readline_completion,  # Tab
    10: _enter_line,
    13: _enter_line,
    23: readline_backword,  # ^W
    8: readline_backspace,  # ^H
    127: readline_backspace,  # DEL
}

_CSI_KEYS: dict[int, Callable[[ReadLineState], None]] = {
    ord("A"): readline_up_char,
    ord("F"): readline_up_char,
    ord("B"): readline_down_char,
    ord("E"): readline_down_char,
    ord("D"): readline_backward_char,
    ord("C"): readline_forward_char,
}

#: ESC [ n ~
_CSI_TILDE_KEYS: dict[int, Callable[[ReadLineState], None]] = {
    1: readline_bol,  # Home
    3: readline_delete_char,  # Delete
    4: readline_eol,  # End
}

_SS3_KEYS: dict[int, Callable[[ReadLineState], None]] = {
    ord("F"): readline_eol,
    ord("H"): readline_bol,
}


def _handle_norm(rs: ReadLineState, ch: int) -> None:
    action = _NORM_KEYS.get(ch)
    if action is not None:
        action(rs)
    elif ch == 27:
        rs.esc_state = EscState.IS_ESC
    elif ch == 155:
        rs.esc_state = EscState.IS_CSI
    elif ch >= 32:
        readline_insert_char(rs, ch)


def _handle_csi(rs: ReadLineState, ch: int) -> None:
    if 0x30 <= ch <= 0x39:
        rs.esc_param = rs.esc_param * 10 + (ch - 0x30)
        return
    action = _CSI_KEYS.get(ch)
    if action is None and ch == ord("~"):
        action = _CSI_TILDE_KEYS.get(rs.esc_param)
    if action is not None:
        action(rs)
    rs.esc_state = EscState.IS_NORM


def readline_handle_byte(rs: ReadLineState, ch: int) -> None:
    """Feed one input byte, then update the display."""
    state = rs.esc_state
    if state is EscState.IS_NORM:
        _handle_norm(rs, ch)
    elif state is EscState.IS_ESC:
        if ch == ord("["):
            rs.esc_state = EscState.IS_CSI
            rs.esc_param = 0
        elif ch == ord("O"):
            rs.esc_state = EscState.IS_SS3
            rs.esc_param = 0
        else:
            rs.esc_state = EscState.IS_NORM
    elif state is EscState.IS_CSI:
        _handle_csi(rs, ch)
    else:
        action = _SS3_KEYS.get(ch)
        if action is not None:
            action(rs)
        rs.esc_state = EscState.IS_NORM
    readline_update(rs)


def _insert_run(rs: ReadLineState, run: bytes) -> None:
    """Insert bytes that only insert themselves, echoing what QEMU would.

    QEMU redraws after each byte; the redraws are computed the same way
    and printed together, so the terminal gets the same bytes.
    """
    out = bytearray()
    for ch in run:
        readline_insert_char(rs, ch)
        out += _redraw(rs)
    if out:
        rs.printf_func(rs.opaque, _text(bytes(out)))
    rs.flush_func(rs.opaque)


def readline_handle_bytes(rs: ReadLineState, data: bytes, start: int = 0) -> int:
    """Feed ``data[start:]`` up to and including the first line end; returns
    the offset after the last byte taken.

    The caller decides whether to go on: the line callback may have
    suspended the terminal (HMP stops reading while a command runs), and
    QEMU would not have read the following bytes yet.  Runs of plain
    characters take a fast path with the same output as one byte at a time.
    """
    pos = start
    end = len(data)
    while pos < end:
        if rs.esc_state is EscState.IS_NORM:
            run = _PLAIN_RUN.match(data, pos)
            if run is not None:
                _insert_run(rs, run.group())
                pos = run.end()
                continue
        ch = data[pos]
        pos += 1
        line_end = rs.esc_state is EscState.IS_NORM and ch in (10, 13)
        readline_handle_byte(rs, ch)
        if line_end:
            break
    return pos
