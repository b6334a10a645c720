#!/usr/bin/env python3
"""Run the emulator with cProfile on every thread: ``cprofile_emu.py OUTDIR QEMU-ARGS...``.

cProfile only sees the thread that enables it, so ``threading.Thread.run``
is wrapped: each thread (the main loop, ``IO mon_iothread``, ...) writes its
own ``OUTDIR/<thread name>.prof`` when it ends; the main thread writes
``OUTDIR/main.prof``.  The emulator must exit normally (SIGTERM does that:
the I/O thread is joined at cleanup).  The dispatcher coroutine is a
greenlet of the main thread; its frames are attributed to the main thread,
though cumulative times across greenlet switches are approximate.
"""

from __future__ import annotations

import cProfile
import os
import re
import sys
import threading
from typing import Any


def _path(outdir: str, name: str) -> str:
    return os.path.join(outdir, re.sub(r"[^A-Za-z0-9_.-]+", "_", name) + ".prof")


def main() -> int:
    outdir, argv = sys.argv[1], sys.argv[2:]
    os.makedirs(outdir, exist_ok=True)
    thread_run = threading.Thread.run

    def profiled_run(self: threading.Thread, *args: Any, **kwargs: Any) -> None:
        prof = cProfile.Profile()
        prof.enable()
        try:
            thread_run(self, *args, **kwargs)
        finally:
            prof.disable()
            prof.dump_stats(_path(outdir, self.name))

    threading.Thread.run = profiled_run  # type: ignore[method-assign]
    from system.main import main as emu_main

    prof = cProfile.Profile()
    prof.enable()
    try:
        return emu_main(argv)
    finally:
        prof.disable()
        prof.dump_stats(_path(outdir, "main"))


if __name__ == "__main__":
    sys.exit(main())
