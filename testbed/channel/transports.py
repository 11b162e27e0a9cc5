"""Line channels to a guest daemon: what the client needs of one, and a local child process as one.

An SSH exec channel (:mod:`testbed.ssh`) is the other transport; it shares :class:`LineBuffer`.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Protocol

from testbed.channel.errors import ChannelClosed


class Transport(Protocol):
    """One bidirectional line channel to a guest daemon."""

    def send_line(self, line: bytes) -> None:
        """Send one line (a trailing newline is added if missing); raises when the channel is gone."""

    def recv_line(self, timeout: float) -> bytes | None:
        """The next line; None at end of stream; raises TimeoutError when none came within ``timeout``."""

    def close(self) -> None: ...



class LineBuffer:
    """Bytes from a stream handed out a line at a time: the common part of line transports."""

    def __init__(self) -> None:
        self._data = b""

    def next_line(self, receive: Callable[[float], bytes], timeout: float) -> bytes | None:
        """The next line without its newline, None at end of stream, TimeoutError after ``timeout``.

        ``receive(seconds)`` returns what arrived (b"" at end of stream) or raises TimeoutError.
        """
        deadline = time.monotonic() + timeout
        while b"\n" not in self._data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line from the guest daemon within {timeout:.1f} s")
            with contextlib.suppress(TimeoutError):
                chunk = receive(remaining)
                if not chunk:
                    return None
                self._data += chunk
        line, _, self._data = self._data.partition(b"\n")
        return line


class SubprocessTransport:
    """A guest daemon as a local child process: for tests, and for running guestd on the host itself."""

    def __init__(self, argv: Sequence[str], stderr: IO[bytes] | int | None = None) -> None:
        self._process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin = self._process.stdin
        self._stdout_fd = self._process.stdout.fileno()
        self._lines = LineBuffer()

    @classmethod
    def guestd(cls, root: Path | None = None, stderr: IO[bytes] | int | None = None) -> SubprocessTransport:
        """``python -m guest.guestd`` from this checkout, on ``root`` (a fake tree) or the real machine."""
        argv = [sys.executable, "-m", "guest.guestd", *(["--root", str(root)] if root else [])]
        return cls(argv, stderr)

    @property
    def pid(self) -> int:
        return self._process.pid

    def send_line(self, line: bytes) -> None:
        try:
            self._stdin.write(line.rstrip(b"\n") + b"\n")
            self._stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise ChannelClosed(f"guestd (pid {self._process.pid}) is gone: {error}") from None

    def recv_line(self, timeout: float) -> bytes | None:
        return self._lines.next_line(self._receive, timeout)

    def _receive(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self._stdout_fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        return os.read(self._stdout_fd, 1 << 16)

    def close(self) -> None:
        """Close stdin (the daemon cleans up on EOF), then wait for it, killing it if it hangs."""
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
