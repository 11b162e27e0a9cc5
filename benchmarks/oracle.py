"""How long the oracle takes on real experiment sizes: the workload specs on the catalog's machines.

Ground truth is drawn from each spec the way memtouch spreads accesses
(uniform, zipf with its hot offset and drift, sequential, chase) with a fixed
seed, so no guest is needed; the start is first touch (regions fill node 0 in
order, the rest spills to node 1). ``--whole`` also solves the LP in one piece
(every chunk in x/y form) to compare the time and check that the optimum is
the same. Each case is solved without a migration budget and with the policies'
per-interval budget (``--budget``, 64 MiB), as the reports' two bounds are.

    .venv/bin/python benchmarks/oracle.py [--whole] [--throughput 2e9] [--budget-mib 64]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import numpy.typing as npt

from testbed.catalog import default_catalog
from testbed.model import PAGE_SIZE
from testbed.oracle import solve_placement
from testbed.score import RunData, access_costs
from testbed.table import render_table
from testbed.units import MIB
from testbed.workload import Accesses, Pattern, Region, Workload, load_workload, workload_path

Array = npt.NDArray[np.float64]
KERNEL_BYTES = 170 * MIB  # what the guest's kernel and daemon keep of node 0
CASES = (("hot-cold", "dram-cxl"), ("hot-cold", "three-tier"), ("capacity-pressure", "dram-cxl"),
         ("capacity-pressure", "three-tier"), ("rat", "dram-rat"), ("read-write-mix", "three-tier"))


def ground_truth(workload: Workload, seed: int) -> RunData:
    """Reads and writes per epoch and chunk, sampled from the spec's access pattern."""
    rng = np.random.default_rng(seed)
    reads, writes, phases = [], [], []
    for phase_index, phase in enumerate(workload.phases):
        for step in range(phase.epochs):
            per_region = [_chunk_counts(rng, region, accesses.per_epoch, _page_weights(region, accesses, step))
                          for region, accesses in zip(workload.regions, phase.accesses, strict=True)]
            split = [rng.binomial(counts, accesses.write_fraction)
                     for counts, accesses in zip(per_region, phase.accesses, strict=True)]
            reads.append(np.concatenate([c - w for c, w in zip(per_region, split, strict=True)]))
            writes.append(np.concatenate(split))
            phases.append(phase_index)
    chunk_bytes = np.concatenate([np.minimum(r.chunk, r.size - np.arange(r.chunks) * r.chunk)
                                  for r in workload.regions])
    region_of = np.repeat(np.arange(len(workload.regions)), [r.chunks for r in workload.regions])
    return RunData(reads=np.array(reads, dtype=float), writes=np.array(writes, dtype=float),
                   residency=np.zeros((len(reads), chunk_bytes.size, 0)), migrated_bytes=np.zeros(len(reads)),
                   phases=np.array(phases, dtype=np.intp), chunk_bytes=chunk_bytes.astype(float),
                   region_of=region_of.astype(np.intp), interval_s=workload.epoch_seconds)


def _page_weights(region: Region, accesses: Accesses, step: int) -> Array:
    """Each page's share of the region's accesses; zipf ranks start at the hot offset and drift."""
    pages = region.pages
    if region.pattern is not Pattern.ZIPF:
        return np.full(pages, 1.0 / pages)
    offset = (accesses.hot_offset + accesses.hot_drift * step) // PAGE_SIZE
    weights = np.roll(1.0 / (np.arange(pages) + 1.0) ** accesses.exponent, offset % pages)
    return np.asarray(weights / weights.sum())


def _chunk_counts(rng: np.random.Generator, region: Region, count: int, weights: Array) -> npt.NDArray[np.int64]:
    per_chunk = np.add.reduceat(weights, np.arange(0, region.pages, region.chunk // PAGE_SIZE))
    return rng.multinomial(count, per_chunk / per_chunk.sum())


def first_touch(chunk_bytes: Array, room: Array) -> Array:
    """[c, n]: regions fill node 0 in order, then node 1, and so on."""
    ends = np.cumsum(chunk_bytes)
    node = np.searchsorted(np.cumsum(room), ends, side="left")
    return np.eye(room.size)[np.minimum(node, room.size - 1)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--whole", action="store_true", help="also solve the whole LP (slow: up to minutes)")
    parser.add_argument("--throughput", type=float, default=2e9, help="migration bytes per second (2e9)")
    parser.add_argument("--budget-mib", type=float, default=64.0, help="per-interval migration budget (64)")
    args = parser.parse_args()
    rows = []
    for workload_name, system_name in CASES:
        system = default_catalog().load_system(system_name)
        truth = ground_truth(load_workload(workload_path(workload_name)), seed=1)
        costs = access_costs(truth, system)
        capacity = np.array([node.size - (KERNEL_BYTES if node.cpus else 0) for node in system.nodes], dtype=float)
        start = first_touch(truth.chunk_bytes, capacity)
        began = time.perf_counter()
        placement = solve_placement(costs, truth.chunk_bytes, capacity, start, args.throughput, truth.phases)
        row: list[object] = [workload_name, system_name, f"{costs.shape[0]}x{costs.shape[1]}x{costs.shape[2]}",
                             f"{time.perf_counter() - began:.2f}", placement.rounds, f"{placement.total_s:.6g}"]
        began = time.perf_counter()
        budgeted = solve_placement(costs, truth.chunk_bytes, capacity, start, args.throughput, truth.phases,
                                   budget_bytes=args.budget_mib * MIB)
        row += [f"{time.perf_counter() - began:.2f}", budgeted.rounds, f"{budgeted.total_s:.6g}"]
        if args.whole:
            began = time.perf_counter()
            whole = solve_placement(costs, truth.chunk_bytes, capacity, start, args.throughput,
                                    close_calls=costs.shape[1])
            row += [f"{time.perf_counter() - began:.1f}", f"{whole.total_s:.6g}"]
        rows.append(row)
    headers = ["workload", "system", "epochs x chunks x nodes", "solve s", "rounds", "oracle s",
               "budgeted solve s", "budgeted rounds", "budgeted oracle s"]
    print(render_table(headers + (["whole LP s", "whole oracle s"] if args.whole else []), rows))


if __name__ == "__main__":
    main()
