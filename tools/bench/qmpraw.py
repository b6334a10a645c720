"""The benchmark's raw QMP client: one blocking UNIX socket, one line per message.

The same code drives every target (QEMU, the emulator, the floor), so client
overhead is identical on both sides of every ratio.  Every read has a
deadline: the socket timeout bounds each ``recv`` and the loops check an
absolute end time.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any, Optional

#: Deadline (seconds) for anything the client waits on.
DEADLINE = 10.0

#: The pause between two attempts to connect to a socket that is not there yet.
CONNECT_PAUSE = 0.0005


class QMPRaw:
    """A raw QMP session: send bytes, receive parsed messages (compact mode)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self.sock.settimeout(DEADLINE)
        self.buf = b""
        #: events received while waiting for something else, in arrival order
        self.events: list[dict[str, Any]] = []
        #: replies received while waiting for another id
        self.stashed: dict[Any, dict[str, Any]] = {}

    @classmethod
    def connect(cls, path: str, deadline: float = DEADLINE) -> QMPRaw:
        """Connect to *path*, retrying while it does not exist or listen yet."""
        end = time.monotonic() + deadline
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(path)
                return cls(sock)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() >= end:
                    raise
                time.sleep(CONNECT_PAUSE)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)

    def fill(self, end: float) -> None:
        """Append one more chunk to the buffer; EOFError on hang-up."""
        if time.monotonic() >= end:
            raise TimeoutError(f"no complete message; buffered {self.buf[-200:]!r}")
        chunk = self.sock.recv(65536)
        if not chunk:
            raise EOFError(f"EOF; buffered {self.buf[-200:]!r}")
        self.buf += chunk

    def take_lines(self) -> list[dict[str, Any]]:
        """Parse and remove every complete line already buffered."""
        buf = self.buf
        cut = buf.rfind(b"\n")
        if cut < 0:
            return []
        self.buf = buf[cut + 1 :]
        return [json.loads(line) for line in buf[:cut].split(b"\n") if line.strip()]

    def recv_msg(self, end: Optional[float] = None) -> dict[str, Any]:
        """The next message (event, reply or greeting)."""
        if end is None:
            end = time.monotonic() + DEADLINE
        while True:
            nl = self.buf.find(b"\n")
            if nl >= 0:
                line, self.buf = self.buf[: nl + 1], self.buf[nl + 1 :]
                return json.loads(line)
            self.fill(end)

    def recv_reply(self, req_id: Any = None, end: Optional[float] = None) -> dict[str, Any]:
        """The reply carrying *req_id* (any reply if None); events are stashed."""
        if req_id is not None and req_id in self.stashed:
            return self.stashed.pop(req_id)
        if end is None:
            end = time.monotonic() + DEADLINE
        while True:
            msg = self.recv_msg(end)
            if "event" in msg:
                self.events.append(msg)
            elif req_id is None or msg.get("id") == req_id:
                return msg
            else:
                self.stashed[msg.get("id")] = msg

    def send_cmd(
        self, name: str, arguments: Any = None, req_id: Any = "x", oob: bool = False
    ) -> None:
        """Send one command without waiting for its reply."""
        msg: dict[str, Any] = {("exec-oob" if oob else "execute"): name}
        if arguments is not None:
            msg["arguments"] = arguments
        msg["id"] = req_id
        self.send(json.dumps(msg).encode() + b"\n")

    def execute(
        self, name: str, arguments: Any = None, req_id: Any = "x", oob: bool = False
    ) -> Any:
        """One command; returns the whole reply (``return`` or ``error``)."""
        self.send_cmd(name, arguments, req_id, oob)
        return self.recv_reply(req_id)

    def greeting(self) -> dict[str, Any]:
        msg = self.recv_msg()
        if set(msg) != {"QMP"}:
            raise AssertionError(f"not a greeting: {msg!r}")
        return msg

    def negotiate(self, oob: bool) -> None:
        """Greeting, then ``qmp_capabilities`` (with ``enable: [oob]`` if *oob*)."""
        self.greeting()
        reply = self.execute("qmp_capabilities", {"enable": ["oob"]} if oob else None, "caps")
        if reply.get("return") != {}:
            raise AssertionError(f"negotiation failed: {reply!r}")

    def close(self) -> None:
        self.sock.close()


def connect_negotiated(path: str, oob: bool) -> QMPRaw:
    client = QMPRaw.connect(path)
    try:
        client.negotiate(oob)
    except BaseException:
        client.close()
        raise
    return client
