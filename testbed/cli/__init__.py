"""The ``llamas`` command: one sub-command per task, user errors as one line and exit 2."""

from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from collections.abc import Sequence

from testbed.cli import catalog, experiment, guest, llm, report, vm
from testbed.errors import UserError

# Every start builds every command's parser (`--help` lists them all), so a group module imports at its top
# only the modules its parser needs; each handler imports the rest of what it runs. numpy, scipy, matplotlib,
# paramiko, the LLM client and the run machinery take seconds to load, and `llamas --help`, `ls` or `devices`
# must answer at once (benchmarks/command.py; tests/test_cli.py checks what starting loads).
COMMAND_GROUPS = (catalog, vm, guest, experiment, llm, report)
# What a shell reports for a process killed by SIGPIPE, as `yes | head -1` does.
CLOSED_STDOUT_EXIT = 128 + signal.SIGPIPE


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamas", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command. Output read only in part (``llamas render X | head -1``) ends it quietly.

    SIGPIPE stays ignored (Python's default): the experiment runner's own pipes and sockets must
    raise errors, not kill it; only a BrokenPipeError while stdout is closed means "stop quietly".
    """
    try:
        try:
            return _run(argv)
        finally:
            if sys.stdout is not None:  # None when started with stdout closed (`>&-`)
                sys.stdout.flush()  # a closed stdout shows here, not in the interpreter's final flush
    except BrokenPipeError:
        if not stdout_closed():
            raise
        # The interpreter flushes stdout again at exit; let that write go nowhere.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return CLOSED_STDOUT_EXIT


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"llamas: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("llamas: interrupted", file=sys.stderr)
        return 130


def stdout_closed() -> bool:
    """Whether stdout is a pipe or socket whose reading end has gone."""
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # replaced (tests) or closed
        return False
    poller = select.poll()
    poller.register(descriptor, select.POLLOUT)
    return any(events & (select.POLLERR | select.POLLHUP) for _, events in poller.poll(0))
