"""The stdio backend (chardev/char-stdio.c): the emulator's own stdin/stdout.

Only one stdio chardev may exist.  On a terminal, input is switched to raw
mode without echo (echo returns when a frontend asks, as HMP's readline
does for passwords); ``signal=off`` also stops Ctrl-C from raising SIGINT.
The terminal settings and fd flags are restored when the chardev goes away.
Runs as FDChardev; creation and removal in the main loop thread.
"""

from __future__ import annotations

import fcntl
import termios
from typing import Any, Optional

from chardev.char import qemu_chr_state, type_register
from chardev.char_fd import FDChardev
from qapi.error import error_setg
from util.qemu_option import QemuOpts, qemu_opt_get_bool

_TermAttrs = list[Any]


@type_register
class StdioChardev(FDChardev):
    typename = "chardev-stdio"
    kind = "stdio"
    abstract = False

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.old_tty: Optional[_TermAttrs] = None
        self.old_flags: tuple[int, int] = (0, 0)
        self.allow_signal = True
        self.in_use = False

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        data["signal"] = qemu_opt_get_bool(opts, "signal", True)

    def open(self, data: dict[str, Any]) -> bool:
        state = qemu_chr_state()
        if state.stdio_in_use:
            raise error_setg("cannot use stdio by multiple character devices")
        state.stdio_in_use = self.in_use = True
        self.old_flags = (fcntl.fcntl(0, fcntl.F_GETFL), fcntl.fcntl(1, fcntl.F_GETFL))
        try:
            self.old_tty = termios.tcgetattr(0)
        except termios.error:
            self.old_tty = None  # not a terminal: nothing to set or restore
        self.borrowed_fds = (0, 1)
        self.open_fd(0, 1)
        self.allow_signal = data.get("signal", True)
        self.chr_set_echo(False)
        return True

    def chr_set_echo(self, echo: bool) -> None:
        """Raw input without echo, or the original settings (qemu_chr_set_echo_stdio)."""
        if self.old_tty is None:
            return
        iflag, oflag, cflag, lflag, ispeed, ospeed, cc = self.old_tty
        cc = list(cc)
        if not echo:
            iflag &= ~(
                termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON
            )  # fmt: skip
            oflag |= termios.OPOST
            lflag &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.IEXTEN)
            cflag = (cflag & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
            cc[termios.VMIN] = 1
            cc[termios.VTIME] = 0
        if not self.allow_signal:
            lflag &= ~termios.ISIG
        termios.tcsetattr(0, termios.TCSANOW, [iflag, oflag, cflag, lflag, ispeed, ospeed, cc])

    def finalize(self) -> None:
        super().finalize()
        if not self.in_use:
            return
        if self.old_tty is not None:
            termios.tcsetattr(0, termios.TCSANOW, self.old_tty)
        fcntl.fcntl(0, fcntl.F_SETFL, self.old_flags[0])
        fcntl.fcntl(1, fcntl.F_SETFL, self.old_flags[1])
        qemu_chr_state().stdio_in_use = False
