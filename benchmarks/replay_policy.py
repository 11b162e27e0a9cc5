"""Replay a run's recorded observations through a policy, offline: what it would decide each interval.

Each epoch of a timeline records what the policy saw (free memory per node, the
DAMON regions with their access rate, age, written fraction and residency).
This feeds those observations, in order, to a policy set up as in the run, and
prints for each interval what the workload's buffers looked like to it, the
moves it would make (each checked by the orchestrator's validator) and what
the recorded run did. Placements do not change in a replay — every interval
sees what the recorded run saw — so it shows decisions, not their outcomes:
use it to see why a policy waits, moves too little, or is refused.

With ``--what-if`` placements do change, in a model: the workload's pages move
as the policy says (within the validator's checks and the budget, each 2 MiB
chunk taken to hold its pages evenly), the policy sees the recorded DAMON
regions with that residency, and the recorded ground truth scores the result
as ``testbed.score`` does. The kernel's own migrations in the recorded run are
left out (a backend policy turns the kernel's NUMA balancing off). An estimate,
good for comparing settings and versions of a policy in seconds; a run in the
VM says what really happens.

    .venv/bin/python benchmarks/replay_policy.py RUN_DIR [--policy llamas] [--source hot-cold]
        [--epochs 0:10] [--set horizon_intervals=5 --set margin=0.2] [--quiet] [--what-if]

RUN_DIR is what ``llamas run ... --out RUN_DIR`` wrote. The observations come
from ``runs/<source>`` (default: the policy's own run). The policy's context
(nodes, HMAT, tiers, budget, intervals) comes from the run's manifest and its
copy of the system. ``llamas`` gets the device profiles its run recorded in
``llamas-setup.json`` (no LLM call; replay ``--source`` another policy's
observations with them all the same); other policies are set up from scratch.
A policy that asks an LLM every interval (``llamas-direct``) cannot be replayed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from policies.base import Policy
from policies.cost_model import NodeModel
from policies.device_profile import DataKind, DeviceProfile
from policies.llamas import SETUP_RECORD, LlamasPolicy
from policies.llamas_direct import LlamasDirectPolicy
from policies.registry import make_policy
from testbed.catalog import Catalog
from testbed.hmat import expected_tier, hmat_targets, local_entry
from testbed.memtouch import RegionLayout
from testbed.model import MemoryNode, System
from testbed.score import RunData, run_data, score_data, score_run
from testbed.timeline import EpochRecord, Timeline, read_timeline
from testbed.units import MIB
from testbed.validate import validate
from testbed.values import Action, Migrate, NodeView, Observation, PolicyContext, RegionView

Array = npt.NDArray[np.float64]


@dataclass(frozen=True)
class RecordedRun:
    """What a replay needs from a run directory."""

    directory: Path  # the run of the policy whose observations are replayed (runs/<source>)
    experiment: dict[str, Any]  # the manifest's resolved experiment
    system: System
    timeline: Timeline


def load_run(run_dir: Path, source: str) -> RecordedRun:
    """The experiment, system and timeline of ``source``'s run in ``run_dir``."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    experiment = manifest["experiment"]
    system = Catalog(run_dir / "catalog").load_system(experiment["system"])
    directory = run_dir / "runs" / source
    if not (directory / "timeline.jsonl").exists():
        runs = sorted(path.name for path in (run_dir / "runs").glob("*") if (path / "timeline.jsonl").exists())
        raise SystemExit(f"{run_dir}: no run of {source!r} (give --source, one of: {', '.join(runs) or 'none'})")
    timeline = read_timeline(directory / "timeline.jsonl")
    if not any(record.observation for record in timeline.epochs):
        raise SystemExit(f"{directory}: its timeline records no observations (recorded before they were kept)")
    return RecordedRun(directory, experiment, system, timeline)


def node_view(node: MemoryNode, system: System, total: int, free: int) -> NodeView:
    """The node as the guest reports it: its size, free memory, CPUs, memory tier and HMAT (access0)."""
    tier = expected_tier(system, node)
    if node not in hmat_targets(system):
        return NodeView(node.id, total, free, node.cpus, tier, None, None, None, None)
    entry = local_entry(system, node)
    return NodeView(node.id, total, free, node.cpus, tier, entry.read_latency_ns, entry.write_latency_ns,
                    entry.read_bandwidth_mib * float(MIB), entry.write_bandwidth_mib * float(MIB))


def context_for(run: RecordedRun) -> PolicyContext:
    experiment, system = run.experiment, run.system
    start = {node.id: node for node in run.timeline.start.nodes}
    nodes = tuple(node_view(node, system, start[node.id].total_bytes, start[node.id].free_bytes)
                  for node in system.nodes if node.id in start)
    return PolicyContext(
        system_description=system.description,
        device_descriptions={node.id: node.device.description for node in system.nodes},
        nodes=nodes, interval_s=experiment["interval_s"], migration_budget=experiment["migration_budget"],
        damon_sample_s=experiment["damon"]["sample_us"] / 1e6,
        hints=(), run_dir=run.directory,
        decision_deadline_s=experiment["decision_deadline_s"])


def observation_at(record: EpochRecord, context: PolicyContext) -> Observation:
    """The observation an epoch recorded (see testbed.orchestrator.observation_summary)."""
    seen = record.observation or {"free": {}, "regions": []}
    regions = tuple(RegionView(index, start, end, rate, age, written, {int(n): size for n, size in nodes.items()})
                    for index, (start, end, rate, age, written, nodes) in enumerate(seen["regions"]))
    free = {int(node): size for node, size in seen["free"].items()}
    nodes = tuple(replace(view, free_bytes=free.get(view.id, view.free_bytes)) for view in context.nodes)
    resident: dict[int, int] = {}
    for region in regions:
        for node, size in region.nodes.items():
            resident[node] = resident.get(node, 0) + size
    return Observation(record.epoch, record.epoch * context.interval_s, context.interval_s, nodes, regions,
                       resident, {})


class WhatIf:
    """Where the workload's chunks would be had the replayed policy's moves been made, and only they (the
    kernel's own migrations in the recorded run are left out), from the first recorded residency on.

    Each interval, the policy sees the recorded DAMON regions and free memory with this residency in place
    of the recorded one; its moves are checked by the validator and made within the budget, each chunk
    taken to hold its pages evenly. The ground truth of the recorded run then scores the result."""

    def __init__(self, run: RecordedRun) -> None:
        self.data = run_data(run.timeline, len(run.system.nodes))
        layout = run.timeline.start.regions
        starts = np.concatenate([b.address + np.arange(b.chunks) * b.chunk for b in layout])
        self.order = np.argsort(starts)  # chunks by address (the layout lists buffers in the workload's order)
        self.starts = starts[self.order]
        self.ends = self.starts + self.data.chunk_bytes[self.order].astype(np.int64)
        self.shares = self.data.residency[0].copy()  # [chunk, node]
        self.history: list[Array] = []
        self.moved: list[float] = []

    def observe(self, recorded: Observation) -> Observation:
        """The next interval's observation: ``recorded`` with this residency (which the score charges the
        interval with). Each region's bytes over the chunks it covers are split as the chunks are here, and
        free memory changes by what the workload holds here rather than there."""
        self.history.append(self.shares.copy())
        difference = self.shares - self.data.residency[min(recorded.epoch, self.data.epochs - 1)]
        held = difference * self.data.chunk_bytes[:, None]
        regions = tuple(replace(region, nodes=self._nodes(region, held)) for region in recorded.regions)
        nodes = tuple(replace(node, free_bytes=round(node.free_bytes - held[:, node.id].sum()))
                      for node in recorded.nodes)
        return replace(recorded, regions=regions, nodes=nodes)

    def _nodes(self, region: RegionView, held: Array) -> dict[int, int]:
        rows, overlap = self._chunks(region.start, region.end)
        if rows.size == 0 or not region.nodes:
            return region.nodes
        change = (held[rows] * (overlap / self.data.chunk_bytes[rows])[:, None]).sum(axis=0)
        density = sum(region.nodes.values()) / region.size  # resident bytes per byte of the region
        nodes = {node: region.nodes.get(node, 0) + density * change[node] for node in range(held.shape[1])}
        return {node: round(size) for node, size in nodes.items() if size >= 1}

    def _chunks(self, start: int, end: int) -> tuple[npt.NDArray[np.intp], Array]:
        """The chunks [start, end) overlaps (indices in the run's order) and the bytes of each it covers."""
        by_address = slice(int(np.searchsorted(self.ends, start, side="right")),
                           int(np.searchsorted(self.starts, end, side="left")))
        overlap = np.minimum(self.ends[by_address], end) - np.maximum(self.starts[by_address], start)
        return self.order[by_address], overlap.astype(np.float64)

    def make(self, actions: Sequence[Action], observation: Observation, budget: int) -> None:
        """The moves the validator accepts, in order, each up to the budget left (as the guest is told)."""
        left = float(budget)
        for action in validate(list(actions), observation, budget).accepted:
            if isinstance(action, Migrate) and left >= 1:
                left -= self._move(action, left)
        self.moved.append(budget - left)

    def _move(self, move: Migrate, limit: float) -> float:
        """Move the window's pages off ``move.node`` (all, or the share ``limit`` allows); the bytes moved."""
        rows, overlap = self._chunks(move.start, move.end)
        before = self.shares[rows, move.node].copy()
        off = float((overlap * (1 - before)).sum())
        allowed = min(1.0, limit / max(off, 1.0))
        taken = overlap / self.data.chunk_bytes[rows] * allowed  # of each chunk's pages, those off the node move
        self.shares[rows] *= (1 - taken)[:, None]
        self.shares[rows, move.node] = before + taken * (1 - before)
        return off * allowed

    def result(self) -> RunData:
        """The recorded run as arrays, with this residency and these moves."""
        return replace(self.data, residency=np.stack(self.history), migrated_bytes=np.array(self.moved))


def recorded_profiles(run_dir: Path) -> dict[int, DeviceProfile]:
    """The device profiles a llamas run used (its frontend's reading with HMAT combined in)."""
    path = run_dir / SETUP_RECORD
    if not path.exists():
        raise SystemExit(f"{path}: missing; replay llamas with the directory of a llamas run (--source llamas "
                         "needs runs/llamas) or give --profiles-from")
    record = json.loads(path.read_text())
    return {entry["node"]: DeviceProfile(**{**entry["profile"],
                                            "suits": frozenset(DataKind(kind) for kind in entry["profile"]["suits"])})
            for entry in record["nodes"]}


def set_up(name: str, options: dict[str, object], context: PolicyContext, profiles_dir: Path) -> Policy:
    """The policy as its run set it up; llamas from its recorded profiles rather than an LLM."""
    policy = make_policy(name, options)
    if isinstance(policy, LlamasDirectPolicy):
        raise SystemExit(f"policy {name!r} asks an LLM every interval: it cannot be replayed offline")
    if isinstance(policy, LlamasPolicy):
        profiles = recorded_profiles(profiles_dir)
        policy.build_backend(context, {node: NodeModel.from_profile(node, profile)
                                       for node, profile in profiles.items()})
    else:
        policy.setup(context)
    return policy


def buffer_lines(observation: Observation, layout: Sequence[RegionLayout]) -> list[str]:
    """Each workload buffer as DAMON showed it: access rate and written fraction (weighted by overlap),
    and its sampled bytes on each node."""
    lines = []
    for buffer in layout:
        start, end = buffer.address, buffer.address + buffer.size
        weight = rate = written = written_weight = 0.0
        held: dict[int, float] = {}
        for region in observation.regions:
            overlap = min(end, region.end) - max(start, region.start)
            if overlap <= 0:
                continue
            weight += overlap
            rate += region.access_rate * overlap
            if region.written_fraction is not None:
                written += region.written_fraction * overlap
                written_weight += overlap
            for node, size in region.nodes.items():
                held[node] = held.get(node, 0.0) + size * overlap / region.size
        if weight:
            shown_written = f"{written / written_weight:.2f}" if written_weight else "?"
            homes = ", ".join(f"node {node} {size / MIB:.0f} MiB" for node, size in sorted(held.items()))
            lines.append(f"    {buffer.name:<12} access rate {rate / weight:.3f}, written {shown_written}; {homes}")
    return lines


def where(start: int, end: int, layout: Sequence[RegionLayout]) -> str:
    """The buffers a range covers, with offsets in MiB."""
    parts = [f"{b.name}[{(max(start, b.address) - b.address) / MIB:.0f}:"
             f"{(min(end, b.address + b.size) - b.address) / MIB:.0f}]"
             for b in layout if start < b.address + b.size and b.address < end]
    return " ".join(parts) or "outside the buffers"


def action_lines(actions: Sequence[Action], observation: Observation, budget: int,
                 layout: Sequence[RegionLayout]) -> list[str]:
    """One line per action: its size, target, the buffers it covers, the policy's reason, the validator's verdict."""
    verdict = validate(list(actions), observation, budget)
    refused = {id(action): reason for action, reason in verdict.rejected}
    lines = []
    for action in actions:
        if not isinstance(action, Migrate):
            lines.append(f"    place on CPUs {list(action.cpus)}")
            continue
        outcome = f"REFUSED: {refused[id(action)]}" if id(action) in refused else "ok"
        lines.append(f"    {action.size / MIB:6.1f} MiB -> node {action.node}  "
                     f"{where(action.start, action.end, layout)}  ({action.reason}) {outcome}")
    return lines


def recorded_line(record: EpochRecord) -> str:
    """What the recorded run did in the interval, and what the kernel moved on its own before it."""
    decision = record.decision
    if decision is None:
        return "    recorded: no decision"
    moved = sum(action.outcome.moved_bytes for action in decision.actions)
    late = ", late" if decision.late else ""
    return (f"    recorded: {len(decision.actions)} actions moved {moved / MIB:.0f} MiB, {len(decision.rejected)} "
            f"refused{late}; the kernel migrated {record.migrated_bytes / MIB:.0f} MiB in the interval before")


def replay(run: RecordedRun, policy: Policy, context: PolicyContext, epochs: range, quiet: bool,
           what_if: WhatIf | None) -> None:
    layout = run.timeline.start.regions
    budget = context.migration_budget
    for record in run.timeline.epochs:
        observation = observation_at(record, context)
        if what_if is not None:
            observation = what_if.observe(observation)
        actions = policy.decide(observation)  # every epoch, so that the policy's memory is as in a run
        if what_if is not None:
            what_if.make(actions, observation, budget)
        if record.epoch not in epochs:
            continue
        free = ", ".join(f"node {node.id} {node.free_bytes / MIB:.0f}" for node in observation.nodes)
        print(f"interval {record.epoch} (phase {record.phase}): {len(observation.regions)} regions; free MiB: {free}")
        if not quiet:
            print("\n".join(buffer_lines(observation, layout)))
        print("\n".join(action_lines(actions, observation, budget, layout) or ["    no moves"]))
        print(recorded_line(record))


def score_lines(run: RecordedRun, what_if: WhatIf) -> list[str]:
    """The what-if run's modeled memory time beside the recorded run's (testbed.score)."""
    throughput = run.experiment["migration"]["throughput"]
    data = what_if.result()
    mine = score_data(data, run.system, throughput)
    recorded = score_run(run.timeline, run.system, throughput)
    return [f"what if: modeled time {mine.modeled_time_s:.3f} s (access {mine.access_time_s:.3f} s, migration "
            f"{mine.migration_time_s:.3f} s, {mine.migrated_bytes / MIB:.0f} MiB moved; lower bound "
            f"{mine.lower_bound_s:.3f} s)",
            f"recorded run ({run.timeline.start.policy}): {recorded.modeled_time_s:.3f} s (access "
            f"{recorded.access_time_s:.3f} s, migration {recorded.migration_time_s:.3f} s)"]


def parse_setting(text: str) -> tuple[str, object]:
    """NAME=NUMBER, the number an int where it is one (the policies' settings are numbers)."""
    name, _, value = text.partition("=")
    try:
        number: object = int(value)
    except ValueError:
        number = float(value)
    return name.strip(), number


def parse_epochs(text: str) -> range:
    """FIRST:LAST (both included; either may be left out) or one epoch."""
    first, colon, last = text.partition(":")
    start = int(first or 0)
    return range(start, int(last) + 1 if last else 1 << 30) if colon else range(start, start + 1)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir", type=Path, help="an experiment's run directory (llamas run --out)")
    parser.add_argument("--policy", default="llamas", help="the policy to replay (default: llamas)")
    parser.add_argument("--source", help="whose recorded observations (default: the policy's own run)")
    parser.add_argument("--profiles-from", type=Path, help="llamas: the run holding llamas-setup.json "
                                                            "(default: RUN_DIR/runs/llamas)")
    parser.add_argument("--epochs", type=parse_epochs, default=range(1 << 30),
                        help="FIRST:LAST or one epoch: the intervals to print")
    parser.add_argument("--set", dest="settings", action="append", type=parse_setting, default=[],
                        metavar="NAME=NUMBER", help="a setting of the policy (repeatable)")
    parser.add_argument("--quiet", action="store_true", help="moves only, not what the buffers looked like")
    parser.add_argument("--what-if", action="store_true",
                        help="move the workload's pages as the policy says (the kernel's own moves left out) and "
                             "score the result with the recorded ground truth (see above)")
    args = parser.parse_args(argv)
    run = load_run(args.run_dir, args.source or args.policy)
    context = context_for(run)
    policy = set_up(args.policy, dict(args.settings), context,
                    args.profiles_from or args.run_dir / "runs" / LlamasPolicy.name)
    what_if = WhatIf(run) if args.what_if else None
    replay(run, policy, context, args.epochs, args.quiet, what_if)
    if what_if is not None:
        print("\n".join(score_lines(run, what_if)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
