"""A minimal QMP client: one unix socket, synchronous commands, events ignored."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from testbed.errors import UserError


class QmpError(UserError):
    pass


class Qmp:
    def __init__(self, path: Path, timeout: float = 30.0) -> None:
        self._socket = _connect(path, timeout)
        self._reader = self._socket.makefile("rb")
        self._read_message()  # the greeting
        self.execute("qmp_capabilities")

    def execute(self, command: str, **arguments: Any) -> Any:
        request: dict[str, Any] = {"execute": command}
        if arguments:
            request["arguments"] = arguments
        self._socket.sendall(json.dumps(request).encode() + b"\n")
        while True:
            message = self._read_message()
            if "return" in message:
                return message["return"]
            if "error" in message:
                raise QmpError(f"QMP {command}: {message['error'].get('desc', message['error'])}")

    def close(self) -> None:
        self._reader.close()
        self._socket.close()

    def __enter__(self) -> Qmp:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _read_message(self) -> dict[str, Any]:
        line = self._reader.readline()
        if not line:
            raise QmpError("QMP connection closed (QEMU exited?)")
        return dict(json.loads(line))


def _connect(path: Path, timeout: float) -> socket.socket:
    """QEMU creates the socket shortly after it starts; wait for it."""
    deadline = time.monotonic() + timeout
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(timeout)
        try:
            sock.connect(str(path))
            return sock
        except (FileNotFoundError, ConnectionRefusedError):
            sock.close()
            if time.monotonic() > deadline:
                raise QmpError(f"no QMP socket at {path} after {timeout:.0f} s") from None
            time.sleep(0.02)
