"""``python3 -m guestd [--root DIR]``: serve the protocol on stdin/stdout, log to stderr."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO

from .daemon import Daemon
from .kernel import Kernel
from .protocol import MAX_LINE_BYTES, Output
from .syscalls import LinuxSyscalls


def serve(daemon: Daemon, requests: BinaryIO) -> None:
    """Answer request lines until EOF; the caller closes the daemon."""
    while True:
        line = requests.readline(MAX_LINE_BYTES + 1)
        if not line:
            return
        if len(line) > MAX_LINE_BYTES and not line.endswith(b"\n"):
            _discard_rest_of_line(requests)
            daemon.reject(f"request line longer than {MAX_LINE_BYTES} bytes; ignored")
        else:
            daemon.handle_line(line)


def _discard_rest_of_line(requests: BinaryIO) -> None:
    while True:
        part = requests.readline(MAX_LINE_BYTES)
        if not part or part.endswith(b"\n"):
            return


def install_exit_signals() -> None:
    """SIGTERM and SIGHUP unwind the loop like EOF, so cleanup runs."""
    def leave(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, leave)
    signal.signal(signal.SIGHUP, leave)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="guestd", description=__doc__)
    parser.add_argument("--root", type=Path, default=Path("/"),
                        help="where /sys, /proc and /sys/kernel/tracing are found (a fake tree in tests)")
    parser.add_argument("--kdamonds", type=int, default=8,
                        help="kdamond slots to create when DAMON has none free (default 8)")
    parser.add_argument("--log-level", default="INFO", choices=("DEBUG", "INFO", "WARNING", "ERROR"))
    options = parser.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=options.log_level,
                        format="guestd %(levelname)s %(name)s: %(message)s")
    install_exit_signals()
    daemon = Daemon(Kernel(options.root), LinuxSyscalls(), Output(sys.stdout.buffer), options.kdamonds)
    try:
        serve(daemon, sys.stdin.buffer)
    finally:
        daemon.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
