"""How fast the LLaMaS backend decides: 100, 1,000 and 10,000 DAMON regions on 2 and 3 nodes.

Two moments of a run: the first interval after first touch (placement at
random, many moves wanted, the budget spent) and a settled interval (the
backend's own placement, reached with an unlimited budget: little to do).
Columns: ``plan`` is the numeric core on a region table (the ≤ 1 ms target),
``convert`` builds that table from the observation's RegionView objects, and
``decide`` is both, what the orchestrator waits for. The hot-cold baseline's
decide time on the same observation is beside it. Each figure is the median of
``--runs`` runs, each with a fresh policy.

    .venv/bin/python benchmarks/backend.py [--runs 50] [--seed 0]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from policies.backend import Backend
from policies.cost_model import NodeModel
from policies.hot_cold import HotCold
from testbed.table import render_table
from testbed.units import MIB
from testbed.values import Migrate, NodeView, Observation, PolicyContext, RegionView

NODE_BYTES = 1024 * MIB
BUDGET = 64 * MIB
SAMPLE_S = 0.005
TARGET_MS = 1.0
MACHINES = {  # the two-node readopt machine and the three-tier one
    2: (NodeModel(0, 80, 80), NodeModel(1, 80, 800)),
    3: (NodeModel(0, 80, 80), NodeModel(1, 250, 250), NodeModel(2, 300, 900, wears_out=True)),
}


def first_touch(count: int, models: Sequence[NodeModel], rng: np.random.Generator) -> Observation:
    """``count`` regions filling the machine but for 256 MiB, as first touch places them (each node up to
    its last 32 MiB, in order), with skewed access rates and write shares."""
    size = (len(models) * NODE_BYTES - 256 * MIB) // count // 4096 * 4096
    per_node = (NODE_BYTES - 32 * MIB) // size
    regions = tuple(RegionView(i, i * size, (i + 1) * size, float(rng.random() ** 3), 5, float(rng.random() ** 2),
                               {models[min(i // per_node, len(models) - 1)].id: size}) for i in range(count))
    return with_free_memory(regions, models, epoch=0)


def with_free_memory(regions: tuple[RegionView, ...], models: Sequence[NodeModel], epoch: int) -> Observation:
    used = {model.id: sum(region.nodes.get(model.id, 0) for region in regions) for model in models}
    nodes = tuple(NodeView(m.id, NODE_BYTES, NODE_BYTES - used[m.id], (), None, m.read_latency_ns,
                           m.write_latency_ns, None, None) for m in models)
    return Observation(epoch, float(epoch), 1.0, nodes, regions, {}, {})


def moved(region: RegionView, moves: Sequence[Migrate]) -> RegionView:
    """``region`` after ``moves``: each moves its share of the region's bytes."""
    nodes = dict(region.nodes)
    for move in moves:
        share = (min(move.end, region.end) - max(move.start, region.start)) / region.size
        if share <= 0:
            continue
        taken = {node: held * share for node, held in nodes.items() if node != move.node}
        nodes = {node: round(held - taken.get(node, 0)) for node, held in nodes.items()}
        nodes[move.node] = nodes.get(move.node, 0) + round(sum(taken.values()))
    return replace(region, nodes={node: held for node, held in nodes.items() if held > 0})


def settled(observation: Observation, models: Sequence[NodeModel], rounds: int = 40) -> Observation:
    """The placement the backend converges to with an unlimited budget."""
    backend = Backend(models, interval_s=1.0, migration_budget=2**40, damon_sample_s=SAMPLE_S)
    for epoch in range(1, rounds):
        moves = backend.decide(observation)
        if not moves:
            break
        regions = tuple(moved(region, moves) for region in observation.regions)
        observation = with_free_memory(regions, models, epoch)
    return observation


def median_ms(action: Callable[[], object], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times) * 1e3


def backend_for(models: Sequence[NodeModel]) -> Backend:
    return Backend(models, interval_s=1.0, migration_budget=BUDGET, damon_sample_s=SAMPLE_S)


def hot_cold_ms(observation: Observation, runs: int) -> float:
    """The hot-cold baseline's decide time on ``observation`` (a fresh policy each run)."""
    context = PolicyContext("", {}, observation.nodes, 1.0, BUDGET, SAMPLE_S, (), Path(os.devnull))

    def one() -> float:
        policy = HotCold()
        policy.setup(context)
        started = time.perf_counter()
        policy.decide(observation)
        return time.perf_counter() - started

    return statistics.median(one() for _ in range(runs)) * 1e3


def row(label: str, observation: Observation, models: Sequence[NodeModel], runs: int) -> list[object]:
    table = backend_for(models).table(observation)
    convert = median_ms(lambda: backend_for(models).table(observation), runs)
    plan = median_ms(lambda: backend_for(models).plan(table, observation.nodes, observation.epoch), runs)
    decide = median_ms(lambda: backend_for(models).decide(observation), runs)
    moves = backend_for(models).decide(observation)
    verdict = "ok" if plan <= TARGET_MS else "over"
    hot_cold = hot_cold_ms(observation, runs)
    return [len(observation.regions), len(models), label, round(convert, 3), round(plan, 3), verdict,
            round(decide, 3), len(moves), round(sum(m.size for m in moves) / MIB), round(hot_cold, 3)]


def reference_ms() -> float:
    """What this machine takes for numpy's argsort of 10,000 floats: a yardstick for the figures."""
    keys = np.random.default_rng(0).random(10_000)
    return median_ms(lambda: np.argsort(keys), 200)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=50, help="runs per figure (the median is shown)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    rows = []
    for count in (100, 1_000, 10_000):
        for models in MACHINES.values():
            start = first_touch(count, models, rng)
            rows.append(row("first interval", start, models, args.runs))
            rows.append(row("settled", settled(start, models), models, args.runs))
    print(render_table(["regions", "nodes", "moment", "convert ms", "plan ms", f"≤ {TARGET_MS:g} ms",
                        "decide ms", "moves", "MiB", "hot-cold ms"], rows))
    print(f"\nmedian of {args.runs} runs; budget {BUDGET // MIB} MiB per interval; load average "
          f"{os.getloadavg()[0]:.2f}; numpy argsort of 10,000 floats here: {reference_ms():.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
