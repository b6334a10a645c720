"""The null backend (chardev/char-null.c): output is discarded, input never comes.

It is never "open": a frontend on it never gets CHR_EVENT_OPENED.  No I/O,
so no context; creation and removal run in the main loop thread.
"""

from __future__ import annotations

from typing import Any

from chardev.char import Chardev, type_register


@type_register
class NullChardev(Chardev):
    typename = "chardev-null"
    kind = "null"
    abstract = False

    def open(self, data: dict[str, Any]) -> bool:
        return False
