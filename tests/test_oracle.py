"""The oracle's LP: checked by brute force, against random placements, and its decomposition against the whole LP."""

from __future__ import annotations

import itertools

import numpy as np
import numpy.typing as npt
import pytest
from scipy.optimize import linprog
from synthetic_runs import epoch, layout, nodes, on, system, timeline

from testbed.oracle import OracleError, Placement, solve_placement
from testbed.score import access_costs, lower_bound_s, oracle, run_data
from testbed.units import MIB

Array = npt.NDArray[np.float64]
CHUNK = 2.0 * MIB
THROUGHPUT = 1e9  # a 2MiB chunk moves in ~2.1ms


def instance(seed: int, epochs: int, chunks: int, nodes: int, fast_chunks: int) -> tuple[Array, Array, Array, Array]:
    """Random costs (node 0 usually cheapest, some chunks prefer another node), equal chunks, room for
    ``fast_chunks`` on node 0 and all of them elsewhere, and an integral start."""
    rng = np.random.default_rng(seed)
    accesses = rng.pareto(1.0, (epochs, chunks)) * 1e4
    latency = rng.uniform(50e-9, 400e-9, (1, chunks, nodes)) * np.array([0.5, *[1.0] * (nodes - 1)])
    costs = accesses[..., None] * latency
    capacity = np.array([fast_chunks, *[chunks] * (nodes - 1)]) * CHUNK
    start = np.eye(nodes)[rng.integers(0, nodes, chunks)]
    return costs, np.full(chunks, CHUNK), capacity, start


def trajectory_cost(costs: Array, chunk_bytes: Array, start: Array, shares: Array) -> float:
    """What a placement [k, c, n] costs: accesses plus the bytes moved into each node."""
    moved = np.maximum(0.0, np.diff(shares, axis=0, prepend=start[None])) * chunk_bytes[None, :, None]
    return float((costs * shares).sum() + moved.sum() / THROUGHPUT)


def brute_force(costs: Array, chunk_bytes: Array, capacity: Array, start: Array) -> float:
    """The best placement with every chunk wholly on one node in every epoch."""
    epochs, chunks, nodes = costs.shape
    every = np.array(list(itertools.product(range(nodes), repeat=epochs * chunks))).reshape(-1, epochs, chunks)
    shares = np.eye(nodes)[every]  # [m, k, c, n]
    fits = ((shares * chunk_bytes[None, None, :, None]).sum(axis=2) <= capacity).all(axis=(1, 2))
    moved = np.maximum(0.0, np.diff(shares, axis=1, prepend=np.broadcast_to(start, (len(every), 1, chunks, nodes))))
    total = (costs[None] * shares).sum(axis=(1, 2, 3)) + (moved * chunk_bytes[None, None, :, None]).sum(
        axis=(1, 2, 3)) / THROUGHPUT
    return float(total[fits].min())


def check_feasible(placement: Placement, chunk_bytes: Array, capacity: Array) -> None:
    assert placement.shares.min() >= -1e-9
    assert placement.shares.sum(axis=2) == pytest.approx(1.0)
    assert ((placement.shares * chunk_bytes[None, :, None]).sum(axis=1) <= capacity + 1e-3).all()


@pytest.mark.parametrize("seed", range(12))
def test_two_nodes_the_lp_is_the_best_whole_chunk_placement(seed: int) -> None:
    epochs, chunks = [(4, 4), (4, 3), (3, 4), (2, 4)][seed % 4]
    costs, chunk_bytes, capacity, start = instance(seed, epochs, chunks, 2, fast_chunks=1 + seed % 3)
    placement = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT)
    check_feasible(placement, chunk_bytes, capacity)
    assert placement.total_s == pytest.approx(brute_force(costs, chunk_bytes, capacity, start), rel=1e-7)


@pytest.mark.parametrize("seed", range(8))
def test_three_nodes_the_lp_is_no_worse_than_any_whole_chunk_placement(seed: int) -> None:
    costs, chunk_bytes, capacity, start = instance(seed, 3, 3, 3, fast_chunks=1)
    capacity[1] = CHUNK  # node 1 is tight too
    placement = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT)
    check_feasible(placement, chunk_bytes, capacity)
    assert placement.total_s <= brute_force(costs, chunk_bytes, capacity, start) * (1 + 1e-9)


def test_splitting_a_chunk_between_nodes_can_beat_whole_chunks() -> None:
    """The LP's fractional placement is real (pages of a chunk on different nodes), and can be better."""
    costs = np.array([[[1e-3, 3e-3], [1e-3, 3e-3]]])  # one epoch, two chunks, both prefer node 0
    chunk_bytes = np.array([CHUNK, CHUNK])
    capacity = np.array([CHUNK, 2 * CHUNK])
    start = np.array([[0.5, 0.5], [0.5, 0.5]])  # each half on each node already
    placement = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT)
    # staying split: each chunk 0.5 x 1ms + 0.5 x 3ms, no move
    assert placement.total_s == pytest.approx(2 * (0.5e-3 + 1.5e-3))
    # whole chunks: 1ms + 3ms, but each chunk moves half of itself (1MiB at 1GB/s)
    assert brute_force(costs, chunk_bytes, capacity, start) == pytest.approx(4e-3 + 2 * MIB / THROUGHPUT)


@pytest.mark.parametrize("seed", range(4))
def test_the_oracle_beats_random_feasible_placements(seed: int) -> None:
    costs, chunk_bytes, capacity, start = instance(seed, 6, 10, 3, fast_chunks=3)
    best = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT).total_s
    rng = np.random.default_rng(seed)
    for _ in range(50):
        shares = np.zeros(costs.shape)
        for k in range(costs.shape[0]):  # each epoch a mix of two whole-chunk placements that fit
            shares[k] = sum(weight * _random_fit(rng, capacity, costs.shape[1]) for weight in (0.3, 0.7))
        assert best <= trajectory_cost(costs, chunk_bytes, start, shares) + 1e-12


def _random_fit(rng: np.random.Generator, capacity: Array, chunks: int) -> Array:
    while True:
        shares = np.eye(capacity.size)[rng.integers(0, capacity.size, chunks)]
        if ((shares * CHUNK).sum(axis=0) <= capacity).all():
            return shares


@pytest.mark.parametrize(("seed", "nodes"), [(0, 2), (1, 2), (2, 3), (3, 3)])
def test_the_decomposition_finds_the_whole_lps_optimum(seed: int, nodes: int) -> None:
    """More chunks than the master holds in x/y form: candidates and pricing must reach the same optimum."""
    rng = np.random.default_rng(seed)
    epochs, chunks = 12, 80
    accesses = rng.poisson(100, (epochs, chunks)).astype(float)  # near-ties: what makes the whole LP slow
    accesses[:, :8] *= 40
    accesses[epochs // 2:, :8] /= 40
    accesses[epochs // 2:, 8:16] *= 40
    costs = accesses[..., None] * np.array([80e-9, 250e-9, 300e-9][:nodes])
    chunk_bytes = np.full(chunks, CHUNK)
    capacity = np.array([30, chunks, 20][:nodes]) * CHUNK
    start = np.eye(nodes)[np.minimum(np.arange(chunks) // 30, nodes - 1)]
    segments = np.repeat([0, 1], epochs // 2)
    decomposed = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT, segments)
    whole = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT, close_calls=chunks)
    assert whole.rounds == 1
    check_feasible(decomposed, chunk_bytes, capacity)
    assert decomposed.total_s == pytest.approx(whole.total_s, rel=1e-6)
    assert decomposed.total_s == pytest.approx(trajectory_cost(costs, chunk_bytes, start, decomposed.shares))


def test_a_start_over_capacity_is_moved_and_charged_in_the_first_epoch() -> None:
    costs = np.zeros((2, 2, 2))
    chunk_bytes = np.array([CHUNK, CHUNK])
    start = np.array([[1.0, 0.0], [1.0, 0.0]])  # both on node 0, which holds only one
    placement = solve_placement(costs, chunk_bytes, np.array([CHUNK, CHUNK]), start, THROUGHPUT)
    assert placement.moved_bytes.tolist() == pytest.approx([CHUNK, 0.0])
    assert placement.migration_s == pytest.approx(CHUNK / THROUGHPUT)


def test_a_workload_larger_than_the_nodes_has_no_oracle() -> None:
    with pytest.raises(OracleError, match="do not fit"):
        solve_placement(np.zeros((1, 3, 2)), np.full(3, CHUNK), np.array([CHUNK, CHUNK]), np.eye(2)[[0, 0, 1]],
                        THROUGHPUT)


def test_a_run_without_epochs_has_no_oracle() -> None:
    with pytest.raises(OracleError, match="no epochs"):
        solve_placement(np.zeros((0, 1, 2)), np.full(1, CHUNK), np.array([CHUNK, CHUNK]), np.eye(2)[[0]], THROUGHPUT)


def test_oracle_of_a_run_lies_between_the_lower_bound_and_the_run() -> None:
    """From a run record: the oracle starts where the run started, within the nodes' capacities."""
    records = [epoch(k, reads=[[5000, 10, 4000 * (k % 2)]], residency=[[on(1), on(0), on(0)]]) for k in range(5)]
    start = nodes((2**30, 64 * MIB + 2 * MIB, 4 * MIB), (2**30, 2**30, 2 * MIB))  # node 0: room for 3 chunks
    run = timeline(layout(3), records, start)
    dram_cxl = system("dram-cxl")
    data = run_data(run, 2)
    costs = access_costs(data, dram_cxl)
    best = oracle(data, costs, run.start, THROUGHPUT)
    assert best.capacity_bytes == (6 * MIB, 2**30 - 64 * MIB + 2 * MIB)
    measured = float((costs[:, :, 1] * [[1, 0, 0]] + costs[:, :, 0] * [[0, 1, 1]]).sum())
    assert lower_bound_s(costs) <= best.modeled_time_s <= measured
    assert best.placement.shares[:, 0, 0] == pytest.approx(1.0)  # the hot chunk comes to DRAM at once


def reference_lp(costs: Array, chunk_bytes: Array, capacity: Array, start: Array, budget: float) -> float:
    """The budgeted LP written out densely, independently of the oracle's own rows: x then y, each [k, c, n]."""
    epochs, chunks, nodes = costs.shape
    size = epochs * chunks * nodes
    index = np.arange(size).reshape(epochs, chunks, nodes)
    move_s = chunk_bytes / THROUGHPUT
    objective = np.concatenate([costs.ravel(), np.broadcast_to(move_s[None, :, None], costs.shape).ravel()])
    upper, limits = [], []
    for k, n in itertools.product(range(epochs), range(nodes)):  # capacity
        row = np.zeros(2 * size)
        row[index[k, :, n]] = chunk_bytes
        upper.append(row)
        limits.append(capacity[n])
    for k, c, n in itertools.product(range(epochs), range(chunks), range(nodes)):  # y >= x[k] - x[k-1]
        row = np.zeros(2 * size)
        row[index[k, c, n]] = 1.0
        row[size + index[k, c, n]] = -1.0
        if k:
            row[index[k - 1, c, n]] = -1.0
        upper.append(row)
        limits.append(start[c, n] if k == 0 else 0.0)
    for k in range(epochs):  # the budget
        row = np.zeros(2 * size)
        row[size + index[k].ravel()] = np.repeat(chunk_bytes, nodes)
        upper.append(row)
        limits.append(budget)
    equal = np.zeros((epochs * chunks, 2 * size))
    for k, c in itertools.product(range(epochs), range(chunks)):
        equal[k * chunks + c, index[k, c]] = 1.0
    result = linprog(objective, A_ub=np.array(upper), b_ub=np.array(limits), A_eq=equal,
                     b_eq=np.ones(epochs * chunks), bounds=(0.0, 1.0), method="highs")
    assert result.status == 0 and result.fun is not None, result.message
    return float(result.fun)


@pytest.mark.parametrize("seed", range(6))
def test_a_budgeted_oracle_is_the_budgeted_lps_optimum_and_moves_within_the_budget(seed: int) -> None:
    costs, chunk_bytes, capacity, start = instance(seed, 4, 5, 2 + seed % 2, fast_chunks=2)
    excess = np.maximum(0.0, start.sum(axis=0) * CHUNK - capacity).sum()  # must move before epoch 0
    budget = excess + (0.5 + seed % 3) * CHUNK
    placement = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT, budget_bytes=budget)
    check_feasible(placement, chunk_bytes, capacity)
    assert (placement.moved_bytes <= budget * (1 + 1e-6)).all()
    assert placement.total_s == pytest.approx(reference_lp(costs, chunk_bytes, capacity, start, budget), rel=1e-6)
    unbudgeted = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT)
    assert unbudgeted.total_s <= placement.total_s * (1 + 1e-9)


@pytest.mark.parametrize(("seed", "nodes"), [(0, 2), (3, 3)])
def test_the_decomposition_with_a_budget_finds_the_whole_lps_optimum(seed: int, nodes: int) -> None:
    """The budget's duals priced into each move: candidates and pricing reach the whole LP's optimum."""
    rng = np.random.default_rng(seed)
    epochs, chunks = 10, 60
    accesses = rng.poisson(100, (epochs, chunks)).astype(float)
    accesses[:, 30:40] *= 40  # hot chunks that start on the slow node: more want to move than the budget allows
    costs = accesses[..., None] * np.array([80e-9, 250e-9, 300e-9][:nodes])
    chunk_bytes = np.full(chunks, CHUNK)
    capacity = np.array([30, chunks, 20][:nodes]) * CHUNK
    start = np.eye(nodes)[np.minimum(np.arange(chunks) // 30, nodes - 1)]
    budget = 3 * CHUNK
    decomposed = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT, budget_bytes=budget)
    whole = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT, close_calls=chunks, budget_bytes=budget)
    assert (decomposed.moved_bytes <= budget * (1 + 1e-6)).all()
    assert decomposed.moved_bytes.sum() > budget  # the budget binds over several epochs
    assert decomposed.total_s == pytest.approx(whole.total_s, rel=1e-6)


def test_a_zero_budget_keeps_the_start_placement() -> None:
    costs, chunk_bytes, capacity, start = instance(1, 4, 5, 2, fast_chunks=5)
    placement = solve_placement(costs, chunk_bytes, capacity, start, THROUGHPUT, budget_bytes=0.0)
    assert placement.moved_bytes.sum() == pytest.approx(0.0, abs=1.0)
    assert placement.total_s == pytest.approx(float((costs * start[None]).sum()), rel=1e-7)


def test_a_start_over_capacity_by_more_than_the_budget_has_no_budgeted_oracle() -> None:
    start = np.array([[1.0, 0.0], [1.0, 0.0]])  # both on node 0, which holds only one
    with pytest.raises(OracleError, match="over the nodes' capacity"):
        solve_placement(np.zeros((2, 2, 2)), np.full(2, CHUNK), np.array([CHUNK, CHUNK]), start, THROUGHPUT,
                        budget_bytes=CHUNK / 2)
