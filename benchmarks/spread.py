"""Spread of policies over repeats, beside the 2% target; with ``--free``, also with a free-running workload
(no epoch barrier: how runs were made before it).

Each repeat starts from the same saved VM state, the same free memory per node and
the same workload seed. The table gives the median modeled memory time, its range
and the spread ((max - min) / median), and, to find where the spread comes from,
how far the repeats differ in each input of the score: the ground truth
(memtouch's counts, seeded), the residency the score charges (sampled pages), the
bytes the policy moved, the DAMON regions it saw, and the workload's bytes on each
node at the start. Late epochs are those whose accesses took longer than the
interval.

    .venv/bin/python benchmarks/spread.py [--spec smoke] [--policies first-touch,hot-cold] [--repeats 5] [--free]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from policies.registry import make_policy
from testbed.experiment import Experiment, load_experiment
from testbed.image import build_image
from testbed.orchestrator import run_policy
from testbed.score import score_run
from testbed.table import render_table
from testbed.timeline import RunStatus, Timeline, read_timeline
from testbed.vms import booter

TARGET_SPREAD = 0.02  # (max - min) / median between repeats that would let a report rank small gaps


def repeats(experiment: Experiment, policy: str, count: int, barrier: bool, out: Path) -> list[Timeline]:
    image = build_image(log=lambda line: None)
    boot = booter(experiment.system, experiment.catalog, image, lambda line: None)
    timelines = []
    for repeat in range(1, count + 1):
        run_dir = out / f"{'barrier' if barrier else 'free'}-r{repeat}"
        end = run_policy(experiment, make_policy(policy), repeat, run_dir, lambda line: None, boot, barrier=barrier)
        if end.status != RunStatus.OK:
            raise SystemExit(f"{policy} repeat {repeat} failed: {end.reason}")
        timelines.append(read_timeline(run_dir / "timeline.jsonl"))
    return timelines


def distinct(values: list[object]) -> str:
    """How many different values the repeats gave: 1 means the input is the same in every repeat."""
    return str(len({repr(value) for value in values}))


def row(label: str, experiment: Experiment, timelines: list[Timeline]) -> list[object]:
    throughput = experiment.migration_throughput or 0.0
    times = [score_run(timeline, experiment.system, throughput).modeled_time_s for timeline in timelines]
    median = statistics.median(times)
    moved = [sum(epoch.migrated_bytes for epoch in timeline.epochs) for timeline in timelines]
    return [label, f"{median:.3f}", f"{min(times):.3f}-{max(times):.3f}", f"{(max(times) - min(times)) / median:.1%}",
            distinct([[(e.reads, e.writes) for e in t.epochs] for t in timelines]),
            distinct([[e.residency for e in t.epochs] for t in timelines]),
            f"{min(moved) / 2**20:.0f}-{max(moved) / 2**20:.0f}",
            f"{statistics.median(e.regions_seen for t in timelines for e in t.epochs):.0f}",
            " ".join(f"{min(w) / 2**20:.0f}-{max(w) / 2**20:.0f}"
                     for w in zip(*([n.workload_bytes for n in t.start.nodes] for t in timelines), strict=True)),
            sum(e.late for t in timelines for e in t.epochs)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--spec", default="smoke")
    parser.add_argument("--policies", default="first-touch,hot-cold", help="comma-separated")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--free", action="store_true", help="also run each policy without the epoch barrier")
    parser.add_argument("--out", type=Path, help="keep the runs here (default: a temporary directory)")
    args = parser.parse_args()
    experiment = load_experiment(args.spec)
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        rows = [[policy, *row(label, experiment, repeats(experiment, policy, args.repeats, barrier, out / policy))]
                for policy in args.policies.split(",")
                for label, barrier in ((("free-running", False),) if args.free else ()) + (("epoch barrier", True),)]
    print(f"{args.spec}, {args.repeats} repeats each; target: a spread under {TARGET_SPREAD:.0%}\n")
    print(render_table(("policy", "workload", "median s", "range s", "spread", "truths", "residencies", "moved MiB",
                        "DAMON regions", "start MiB per node", "late epochs"), rows))


if __name__ == "__main__":
    main()
