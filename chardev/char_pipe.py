"""The pipe backend (chardev/char-pipe.c): ``PATH.in`` and ``PATH.out`` (FIFOs
or files), or ``PATH`` for both directions.  Runs as FDChardev.
"""

from __future__ import annotations

import os
from typing import Any

from chardev.char import type_register
from chardev.char_fd import FDChardev, qmp_chardev_open_file_source
from qapi.error import error_setg
from util.qemu_option import QemuOpts, qemu_opt_get


@type_register
class PipeChardev(FDChardev):
    typename = "chardev-pipe"
    kind = "pipe"
    abstract = False

    @classmethod
    def parse(cls, opts: QemuOpts, data: dict[str, Any]) -> None:
        device = qemu_opt_get(opts, "path")
        if device is None:
            raise error_setg("chardev: pipe: no device path given")
        data["device"] = device

    def open(self, data: dict[str, Any]) -> bool:
        path = data["device"]
        fds = [_try_open(f"{path}.in"), _try_open(f"{path}.out")]
        if -1 in fds:
            for fd in fds:
                if fd >= 0:
                    os.close(fd)
            fd = qmp_chardev_open_file_source(path, os.O_RDWR)
            fds = [fd, fd]
        self.open_fd(fds[0], fds[1])
        return True


def _try_open(path: str) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CLOEXEC)
    except OSError:
        return -1
