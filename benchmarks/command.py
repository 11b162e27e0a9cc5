"""How long the quick commands take: ``llamas --help``, ``llamas ls`` and ``llamas devices``, beside the 0.3 s target.

Each figure is the wall time of a fresh ``llamas`` process, start to exit, as a user
at a shell sees it (interpreter start, imports, the command, exit): the median and
range of ``--runs`` runs, after one unmeasured run that warms the file cache and
the bytecode. What starting costs is mostly imports; ``python -X importtime -m
testbed.cli --help`` shows them.

    .venv/bin/python benchmarks/command.py [--runs 10] [--llamas .venv/bin/llamas]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from testbed.table import render_table

TARGET_S = 0.3
COMMANDS = (("--help",), ("ls",), ("devices",))
# The console script pip installed beside this interpreter: the entry point a user runs, wrapper included.
DEFAULT_LLAMAS = Path(sys.executable).parent / "llamas"


def wall_seconds(argv: Sequence[str]) -> float:
    started = time.perf_counter()
    subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True)
    return time.perf_counter() - started


def row(llamas: Path, command: Sequence[str], runs: int) -> list[object]:
    argv = [str(llamas), *command]
    wall_seconds(argv)
    times = [wall_seconds(argv) for _ in range(runs)]
    median = statistics.median(times)
    return [" ".join(["llamas", *command]), f"{median:.3f}", f"{min(times):.3f}-{max(times):.3f}",
            "ok" if median <= TARGET_S else "over"]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10, help="runs per command (the median is shown)")
    parser.add_argument("--llamas", type=Path, default=DEFAULT_LLAMAS, help="the llamas executable to time")
    args = parser.parse_args(argv)
    rows = [row(args.llamas, command, args.runs) for command in COMMANDS]
    print(render_table(["command", "median s", "range s", f"≤ {TARGET_S:g} s"], rows))
    print(f"\nmedian of {args.runs} runs, each a fresh process; load average {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
