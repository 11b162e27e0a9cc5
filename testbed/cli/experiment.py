"""Commands that run experiments: run, demo."""

from __future__ import annotations

import argparse
from pathlib import Path

DEMO_EXPERIMENT = "demo"


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = commands.add_parser("run", help="run an experiment: every policy on the same machine and workload")
    run.add_argument("spec", help="a name in experiments/ or a path to an experiment YAML")
    run.add_argument("--policies", help="comma-separated policies to run instead of the spec's "
                     "(each LLM policy's text-blind twin is added)")
    run.add_argument("--repeats", type=int, help="runs of each policy (default: the spec's)")
    run.add_argument("--out", type=Path, help="run directory (default: runs/<name>-<time>)")
    run.set_defaults(handler=run_command)
    demo = commands.add_parser("demo", help="the main job: the demo experiment with the embedded LLM")
    demo.add_argument("--out", type=Path, help="run directory (default: runs/demo-<time>)")
    demo.set_defaults(handler=demo_command, spec=DEMO_EXPERIMENT, policies=None, repeats=None)


def run_command(args: argparse.Namespace) -> int:
    from testbed.experiment import load_experiment
    from testbed.runner import default_run_dir, run_experiment

    experiment = load_experiment(args.spec)
    if args.policies:
        experiment = experiment.with_policies(tuple(name.strip() for name in args.policies.split(",")))
    if args.repeats is not None:
        experiment = experiment.with_repeats(args.repeats)
    run_dir = args.out or default_run_dir(experiment)
    run_experiment(experiment, run_dir)
    print(f"\nrun directory: {run_dir} (report.md, summary.json, plots/)")
    return 0


def demo_command(args: argparse.Namespace) -> int:
    return run_command(args)
