"""The file backend (chardev/char-file.c): output to a file, input optionally
from another file (QMP's ``in``; QEMU 7.2's command line has no option for it).

Regular files cannot be watched by epoll; the chardev's sources treat them as
always readable, as glib's poll() does.  Runs as FDChardev.
"""

from __future__ import annotations

import os
from typing import Any

from chardev.char import type_register
from chardev.char_fd import FDChardev, qmp_chardev_open_file_source
from qapi.error import error_setg
from util.qemu_option import QemuOpts, qemu_opt_get, qemu_opt_get_bool


@type_register
class FileChardev(FDChardev):
    typename = "chardev-file"
    kind = "file"
    abstract = False

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        path = qemu_opt_get(opts, "path")
        if path is None:
            raise error_setg("chardev: file: no filename given")
        data["out"] = path
        data["append"] = qemu_opt_get_bool(opts, "append", False)

    def open(self, data: dict[str, Any]) -> bool:
        flags = os.O_WRONLY | os.O_CREAT
        flags |= os.O_APPEND if data.get("append") else os.O_TRUNC
        out = qmp_chardev_open_file_source(data["out"], flags)
        fd_in = -1
        if data.get("in") is not None:
            try:
                fd_in = qmp_chardev_open_file_source(data["in"], os.O_RDONLY)
            except BaseException:
                os.close(out)
                raise
        self.open_fd(fd_in, out)
        return True
