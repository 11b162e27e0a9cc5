"""``python3 -m guestd [--root DIR]``: serve the protocol on stdin/stdout, log to stderr."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from .daemon import Daemon, install_exit_signals, serve
from .kernel import Kernel
from .protocol import Output
from .syscalls import LinuxSyscalls


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
