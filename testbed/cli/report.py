"""The report command: re-render an experiment's summary, report and plots from its run directory."""

from __future__ import annotations

import argparse
from pathlib import Path


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = commands.add_parser("report", help="recompute summary.json, report.md and plots/ of a run directory "
                                 "from its files alone, and print the result table")
    report.add_argument("run_dir", metavar="DIR", type=Path, help="a run directory (llamas run writes one)")
    report.add_argument("--no-plots", action="store_true", help="skip the PNG plots (faster)")
    report.set_defaults(handler=report_command)


def report_command(args: argparse.Namespace) -> int:
    from testbed.report import result_table, write_results
    from testbed.rundir import PLOTS_DIR, REPORT_FILE, SUMMARY_FILE
    from testbed.score import BOUNDS

    summary = write_results(args.run_dir, with_plots=not args.no_plots)
    print(result_table(summary))
    solved = [f"{name} {bound.usage['solve_seconds']:.2f} s" for name in BOUNDS
              if (bound := summary.policies.get(name)) is not None and "solve_seconds" in bound.usage]
    if solved:
        print(f"\nsolved: {', '.join(solved)}")
    print(f"\nwritten: {args.run_dir / SUMMARY_FILE}, {args.run_dir / REPORT_FILE}"
          + ("" if args.no_plots else f", {args.run_dir / PLOTS_DIR}/"))
    return 0
