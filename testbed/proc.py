"""Running host commands: argv lists only, and failures that say what ran and what it printed."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path

from testbed.errors import UserError


class CommandFailed(UserError):
    def __init__(self, argv: Sequence[str], returncode: int, output: str) -> None:
        tail = "\n".join(output.strip().splitlines()[-15:])
        super().__init__(f"command failed (exit {returncode}): {' '.join(argv)}\n{tail}")
        self.returncode = returncode


def run_bytes(argv: Sequence[str], cwd: Path | None = None, input_bytes: bytes | None = None,
              timeout: float | None = None) -> bytes:
    """Run ``argv``; return its stdout, or raise CommandFailed with its stderr tail."""
    try:
        done = subprocess.run(list(argv), cwd=cwd, input=input_bytes, capture_output=True, timeout=timeout,
                              check=False)
    except FileNotFoundError:
        raise UserError(f"{argv[0]} is not installed (run `make setup`)") from None
    if done.returncode != 0:
        raise CommandFailed(argv, done.returncode, (done.stderr or done.stdout).decode(errors="replace"))
    return done.stdout


def run(argv: Sequence[str], cwd: Path | None = None, input_bytes: bytes | None = None,
        timeout: float | None = None) -> str:
    return run_bytes(argv, cwd, input_bytes, timeout).decode(errors="replace")
