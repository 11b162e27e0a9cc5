"""The ``llamas`` command: one sub-command per task, user errors as one line and exit 2."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from testbed.cli import catalog, experiment, guest, llm, report, vm
from testbed.errors import UserError

COMMAND_GROUPS = (catalog, vm, guest, experiment, llm, report)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="llamas", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in COMMAND_GROUPS:
        group.register(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except UserError as error:
        print(f"llamas: {error}", file=sys.stderr)
        return error.exit_code
    except KeyboardInterrupt:
        print("llamas: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
