"""The backend's decisions on seeded random runs: exactly those recorded in tests/golden, and always valid.

Faster code must decide as before, so the small runs' moves (range, node and reason) are compared with a golden
file written by the code they were first recorded with; UPDATE_GOLDEN=1 rewrites it after a deliberate change of
the decisions. The large runs (10,000 regions, as benchmarks/backend.py) are checked for what any decision must
be: accepted by the validator as they are (budget, room above the headroom), no range moved twice, adjacent moves
merged, and in tidy order.

Each run is a few intervals of one backend: DAMON regions of mixed sizes (some larger than half the budget, so
cut in pieces; some only partly resident, some on two nodes, some unsampled), placed by first touch or at random,
a node below the kernel's headroom or not; between intervals the moves are made, rates drift, and DAMON splits
and merges regions, so that moves under way and their cooldown come into play.
"""

from __future__ import annotations

import bisect
import hashlib
import itertools
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from policies.backend import Backend, BackendSettings
from policies.cost_model import NodeModel
from testbed.ledger import Ledger
from testbed.units import MIB
from testbed.values import Migrate, NodeView, Observation, RegionView

GOLDEN = Path(__file__).parent / "golden"
PAGE = 4096
SAMPLE_S = 0.005
NODE_BYTES = 1024 * MIB
MACHINES = {
    "dram-readopt": (NodeModel(0, 80, 80), NodeModel(1, 80, 800)),
    "dram-rat": (NodeModel(0, 80, 80), NodeModel(1, 600, 600, hot_latency_ns=50, hot_access_rate=200)),
    "three-tier": (NodeModel(0, 80, 80), NodeModel(1, 250, 250), NodeModel(2, 300, 900, wears_out=True)),
}


@dataclass(frozen=True)
class Run:
    """A seeded run: which machine, how many regions, how placed, the budget and the backend's settings."""

    seed: int
    machine: str
    count: int
    budget: int
    first_touch: bool = True  # else at random
    unknown_node: bool = False  # a third node with memory that no model describes
    settle: bool = False  # start from the placement an unlimited budget reaches
    intervals: int = 5
    settings: tuple[tuple[str, float], ...] = ()

    @property
    def name(self) -> str:
        return (f"{self.machine}-{self.count}-seed{self.seed}-{self.budget // MIB}MiB"
                f"{'' if self.first_touch else '-random'}{'-unknown' if self.unknown_node else ''}"
                f"{'-settled' if self.settle else ''}{''.join(f'-{k}={v:g}' for k, v in self.settings)}")


SMALL = [
    Run(0, "dram-readopt", 60, 64 * MIB),
    Run(1, "dram-readopt", 200, 16 * MIB),
    Run(2, "dram-readopt", 200, 64 * MIB, first_touch=False),
    Run(3, "dram-rat", 120, 32 * MIB),
    Run(4, "three-tier", 150, 64 * MIB),
    Run(5, "three-tier", 300, 24 * MIB, first_touch=False),
    Run(6, "three-tier", 100, 64 * MIB, settle=True),
    Run(7, "dram-readopt", 150, 64 * MIB, settle=True),
    Run(8, "dram-readopt", 120, 64 * MIB, unknown_node=True),
    Run(9, "three-tier", 200, 48 * MIB, settings=(("max_attempts", 8), ("margin", 0.0))),
    Run(10, "dram-rat", 200, 128 * MIB, settings=(("horizon_intervals", 3.0), ("move_overhead_ns", 0.0),
                                                  ("cooldown_intervals", 2))),
    Run(11, "three-tier", 80, 8 * MIB, first_touch=False, settings=(("smoothing", 1.0),)),
    Run(102, "three-tier", 150, 24 * MIB, first_touch=False, intervals=8),  # tidy order does not fit once
    Run(113, "dram-readopt", 150, 16 * MIB, intervals=6),  # a full node's best move in is not affordable
]
LARGE = [Run(seed, machine, 10_000, 64 * MIB, settle=settle, intervals=2)
         for seed, machine in ((20, "dram-readopt"), (21, "three-tier")) for settle in (False, True)]


def regions_for(run: Run, models: Sequence[NodeModel], rng: np.random.Generator) -> tuple[RegionView, ...]:
    """Regions filling the machine but for some free memory: mostly small, some large, a few with gaps."""
    kind = rng.choice(3, size=run.count, p=[0.8, 0.15, 0.05])
    pages = np.select([kind == 0, kind == 1], [rng.integers(1, 512, run.count), rng.integers(512, 8192, run.count)],
                      rng.integers(16_384, 65_536, run.count))
    fill = len(models) * NODE_BYTES * 0.85 / (pages.sum() * PAGE)
    pages = np.maximum(1, (pages * min(fill, 1.0)).astype(np.int64))
    nodes = [model.id for model in models] + ([len(models)] if run.unknown_node else [])
    placed = {node: 0 for node in nodes}
    regions, address = [], 0x7F00_0000_0000
    for index, count in enumerate(pages.tolist()):
        size = count * PAGE
        address += PAGE * int(rng.integers(1, 64)) if rng.random() < 0.2 else 0  # not every region adjacent
        held = size if rng.random() < 0.85 else size * int(rng.integers(1, 10)) // 10 // PAGE * PAGE
        if run.first_touch:
            node = next((n for n in nodes if placed[n] + held <= NODE_BYTES - 40 * MIB), nodes[-1])
        else:
            node = nodes[int(rng.integers(len(nodes)))]
        where = {node: held}
        if rng.random() < 0.1:  # on two nodes
            other = nodes[(nodes.index(node) + 1) % len(nodes)]
            where = {node: held // 2, other: held - held // 2}
        if rng.random() < 0.02:
            where = {}  # unsampled
        for n, b in where.items():
            placed[n] += b
        written = None if rng.random() < 0.05 else float(rng.random() ** 2)
        regions.append(RegionView(index, address, address + size, float(rng.random() ** 3), 5, written,
                                  {n: b for n, b in where.items() if b}))
        address += size
    return tuple(regions)


def observe(regions: Sequence[RegionView], nodes: Sequence[int], epoch: int) -> Observation:
    used = {node: sum(region.nodes.get(node, 0) for region in regions) for node in nodes}
    views = tuple(NodeView(node, NODE_BYTES, NODE_BYTES - used[node], (), None, None, None, None, None)
                  for node in nodes)
    return Observation(epoch, float(epoch), 1.0, views, tuple(regions), {}, {})


def moved(region: RegionView, moves: Sequence[Migrate]) -> RegionView:
    """``region`` after ``moves``: each takes its share of the region's bytes on other nodes."""
    where = dict(region.nodes)
    for move in moves:
        share = (min(move.end, region.end) - max(move.start, region.start)) / region.size
        if share <= 0:
            continue
        taken = {node: int(held * share) for node, held in where.items() if node != move.node}
        where = {node: held - taken.get(node, 0) for node, held in where.items()}
        where[move.node] = where.get(move.node, 0) + sum(taken.values())
    return replace(region, nodes={node: held for node, held in where.items() if held > 0})


def drift(regions: Sequence[RegionView], rng: np.random.Generator) -> tuple[RegionView, ...]:
    """The next interval's regions: rates drift, and DAMON splits some regions and merges some neighbours."""
    out: list[RegionView] = []
    for before in regions:
        rate = float(np.clip(before.access_rate * rng.lognormal(0, 0.3), 0, 1))
        now = replace(before, access_rate=rate)
        if out and out[-1].end == now.start and rng.random() < 0.05:
            last = out.pop()
            where = {n: last.nodes.get(n, 0) + now.nodes.get(n, 0) for n in {*last.nodes, *now.nodes}}
            now = replace(last, end=now.end, access_rate=(last.access_rate + rate) / 2, nodes=where)
        elif now.size >= 4 * PAGE and rng.random() < 0.05:
            cut = now.start + now.size // PAGE // 2 * PAGE
            share = (cut - now.start) / now.size
            low = {n: int(b * share) for n, b in now.nodes.items()}
            out.append(replace(now, end=cut, nodes={n: b for n, b in low.items() if b}))
            now = replace(now, start=cut, nodes={n: b - low[n] for n, b in now.nodes.items() if b - low[n]})
        out.append(now)
    return tuple(replace(region, id=index) for index, region in enumerate(out))


def backend(run: Run, models: Sequence[NodeModel], budget: int) -> Backend:
    return Backend(models, interval_s=1.0, migration_budget=budget, damon_sample_s=SAMPLE_S,
                   settings=BackendSettings(**dict(run.settings)))  # type: ignore[arg-type]


def play(run: Run) -> list[tuple[Observation, list[Migrate]]]:
    """Each interval's observation and the backend's moves."""
    rng = np.random.default_rng(run.seed)
    models = MACHINES[run.machine]
    nodes = [model.id for model in models] + ([len(models)] if run.unknown_node else [])
    regions = regions_for(run, models, rng)
    if run.settle:
        settling = backend(run, models, 2**40)
        for epoch in range(40):
            moves = settling.decide(observe(regions, nodes, epoch))
            if not moves:
                break
            regions = tuple(moved(region, moves) for region in regions)
        regions = drift(regions, rng)
    policy = backend(run, models, run.budget)
    played = []
    for epoch in range(run.intervals):
        observation = observe(regions, nodes, epoch)
        moves = policy.decide(observation)
        played.append((observation, moves))
        regions = drift(tuple(moved(region, moves) for region in regions), rng)
    return played


Decisions = list[list[list[object]]]  # per interval, per move: start, end, node, reason


def recorded(played: Sequence[tuple[Observation, Sequence[Migrate]]]) -> Decisions:
    return [[[move.start, move.end, move.node, move.reason] for move in moves] for _, moves in played]


def check_golden(path: Path, decisions: Mapping[str, Decisions | str]) -> None:
    """Compare with a golden file (a run's intervals one a line); UPDATE_GOLDEN=1 rewrites it after a deliberate
    change of the decisions."""
    def entry(value: Decisions | str) -> str:
        return json.dumps(value) if isinstance(value, str) else "[\n" + ",\n".join(
            f"  {json.dumps(interval)}" for interval in value) + "\n]"

    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text("{\n" + ",\n".join(f"{json.dumps(name)}: {entry(value)}"
                                           for name, value in decisions.items()) + "\n}\n")
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 once and review it"
    golden = json.loads(path.read_text())
    for name, value in decisions.items():
        assert value == golden[name], f"{name}: decisions differ from {path.name} (UPDATE_GOLDEN=1 after review)"


def test_small_runs_decide_as_recorded() -> None:
    decisions: dict[str, Decisions | str] = {}
    made = 0
    for run in SMALL:
        played = play(run)
        for observation, moves in played:
            check_valid(observation, moves, run.budget, tidy=False)  # as made where tidy order does not fit
            made += len(moves)
        decisions[run.name] = recorded(played)
    check_golden(GOLDEN / "backend-decisions.json", decisions)
    assert made > 250  # the runs move a lot


def test_large_runs_make_valid_tidy_moves_as_recorded() -> None:
    # Too many moves to keep: their digest.
    digests: dict[str, Decisions | str] = {}
    for run in LARGE:
        played = play(run)
        for observation, moves in played:
            check_valid(observation, moves, run.budget, tidy=True)
        digests[run.name] = hashlib.sha256(json.dumps(recorded(played)).encode()).hexdigest()
    check_golden(GOLDEN / "backend-decisions-large.json", digests)


def check_valid(observation: Observation, moves: Sequence[Migrate], budget: int, tidy: bool) -> None:
    """What the validator checks (budget, room above the headroom), and that no range is moved twice and adjacent
    moves to one node are one; if ``tidy``, that the moves that make room come first, each kind in address order."""
    regions = observation.regions
    starts = [region.start for region in regions]
    ledger = Ledger.of(observation.nodes, budget)
    for move in moves:
        first = max(0, bisect.bisect_right(starts, move.start) - 1)  # the validator's check, on the nearby regions
        refused = ledger.admit(move, regions[first:bisect.bisect_left(starts, move.end)])
        assert refused is None, (move, refused)
    ranges = sorted((move.start, move.end) for move in moves)
    assert all(end <= start for (_, end), (start, _) in itertools.pairwise(ranges)), "a range moved twice"
    assert all(not (a.node == b.node and a.end == b.start) for a, b in itertools.pairwise(moves))
    if not tidy:
        return
    making_room = [not move.reason.startswith("gains") for move in moves]
    assert making_room == sorted(making_room, reverse=True), "the moves that make room come first"
    for kind in (True, False):
        kind_starts = [move.start for move, room in zip(moves, making_room, strict=True) if room == kind]
        assert kind_starts == sorted(kind_starts)


