"""The oracle: the best capacity-feasible placement over a whole run, knowing the ground truth.

Not a policy a machine could run (it reads the future), but the yardstick
policies are measured against: ``testbed.score`` builds its inputs from a run
record and labels the result an upper bound on what any policy can achieve.

The linear program, for epochs k, chunks c and nodes n::

    x[k,c,n] in [0,1]  share of chunk c's pages on node n during epoch k
    y[k,c,n] >= 0      share of chunk c moved into node n at the start of epoch k

    minimise   sum cost[k,c,n] * x[k,c,n]  +  sum bytes[c] / throughput * y[k,c,n]
    subject to sum_n x[k,c,n] = 1                               (every page is somewhere)
               sum_c bytes[c] * x[k,c,n] <= capacity[n]         (per epoch and node)
               x[k,c,n] - x[k-1,c,n] - y[k,c,n] <= 0            (x[-1] = the start placement)
               sum_c,n bytes[c] * y[k,c,n] <= budget            (per epoch, if there is a budget)

The budget is the policies' per-interval migration budget: at most that many
bytes move at the start of each epoch, the start's own fix-up (a start over
capacity) included in epoch 0's.

A chunk is many pages that may sit on different nodes, so a fractional x is a
real placement: the optimum is the page-granular optimum, not a relaxation,
and no policy scored the same way (access cost at its residency plus the bytes
it migrated) can beat it from the same start within the same capacities.

Solved whole, HiGHS needs 10-70 s at 450 chunks x 60 epochs when many chunks
are nearly tied (a uniformly used region's chunks differ only by sampling
noise, epoch to epoch). So it is solved exactly by decomposition (Dantzig-
Wolfe). Only the capacity and budget rows couple chunks, and one chunk's
part of the LP is a flow through epochs x nodes from its start: its vertices
are trajectories, a node per epoch, costing their accesses plus one move per
change. The master LP keeps the chunks whose best trajectory is a close call
in the x/y form above and gives every other chunk a few candidate
trajectories from each node it starts on (a share of each, summing to its
start share). A candidate takes its bytes times its share from the capacity
row of each epoch and node it sits on, and from the budget row of each epoch
it changes node in (epoch 0 counts the change from the start node). Staying
on any one node is always a candidate, so the master is feasible whenever
the workload fits and, with a budget, the start's excess over capacity fits
in epoch 0's budget (staying put moves nothing). Its duals price capacity
per byte held and the budget per byte moved: a shortest path per chunk at
those prices (Viterbi: a node's capacity price is added to each epoch's
access cost, epoch k's budget price to the cost of a move at epoch k) either
beats the chunk's convexity dual, and joins the master as a new candidate,
or proves that no trajectory can improve the master's solution: then it is
optimal for the whole LP.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt
from scipy.optimize import linprog
from scipy.sparse import coo_array, csr_array, vstack

Array = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]
# Bytes are counted in MiB inside the LP and costs relative to the largest
# one: coefficients stay near 1, which keeps HiGHS well-conditioned.
LP_BYTE_UNIT = 2**20
# A trajectory must beat its chunk's convexity dual by this much, per epoch and
# relative to the LP's largest cost coefficient, to count as an improvement:
# duals are only as exact as HiGHS's tolerances (1e-7, same scale).
PRICING_TOLERANCE = 1e-7
# The master keeps this many chunks in x/y form: those whose best trajectory at
# the first, approximate prices wins by the least (more: fewer rounds, slower LPs).
CLOSE_CALLS = 32
# HiGHS's primal feasibility tolerance, on rows counted in LP_BYTE_UNIT: a start
# whose excess over capacity exceeds the budget by less is as good as within it.
FEASIBILITY_TOLERANCE = 1e-7


class OracleError(ValueError):
    """The oracle has no answer: no feasible placement, or the solver failed."""


@dataclass(frozen=True)
class Placement:
    """The oracle's placement and what it costs."""

    shares: Array  # [epoch, chunk, node]: x
    moved_bytes: Array  # [epoch]: bytes migrated at the start of each epoch (within the budget, if any)
    access_s: float
    migration_s: float
    solve_seconds: float
    rounds: int  # master LPs solved

    @property
    def total_s(self) -> float:
        return self.access_s + self.migration_s


def solve_placement(costs: Array, chunk_bytes: Array, capacity: Array, start: Array, throughput: float,
                    segments: Indices | None = None, close_calls: int = CLOSE_CALLS,
                    budget_bytes: float | None = None) -> Placement:
    """The optimal placement.

    ``costs[k,c,n]``: seconds chunk c's accesses of epoch k take if all its pages are
    on node n; ``chunk_bytes[c]``; ``capacity[n]`` in bytes; ``start[c,n]``: the
    placement before epoch 0 (shares summing to 1); ``throughput``: bytes/s migration;
    ``segments[k]``: stretches of epochs in which accesses are alike (the workload's
    phases), which only helps find the optimum faster; ``close_calls``: chunks the
    master LP holds in x/y form (the whole LP in one go when there are no more chunks);
    ``budget_bytes``: at most this many bytes move at the start of each epoch (no limit if None).
    """
    epochs, chunks, _ = costs.shape
    if epochs == 0 or chunks == 0:
        raise OracleError("nothing to place: the run has no epochs or no chunks")
    if chunk_bytes.sum() > capacity.sum():
        raise OracleError(f"the workload's {chunk_bytes.sum() / 2**20:.0f}MiB do not fit in the nodes' "
                          f"{capacity.sum() / 2**20:.0f}MiB of usable capacity")
    if budget_bytes is not None:
        _check_budget(budget_bytes, chunk_bytes, capacity, start)
    budget = None if budget_bytes is None else np.full(epochs, float(budget_bytes))
    problem = _Problem(costs, chunk_bytes, capacity.astype(float), start, throughput, budget)
    began = time.perf_counter()
    shares, rounds = _decomposed(problem, np.zeros(epochs, dtype=np.intp) if segments is None else segments,
                                 close_calls)
    seconds = time.perf_counter() - began
    moved_bytes = (np.maximum(0.0, np.diff(shares, axis=0, prepend=start[None])) * chunk_bytes[None, :, None]
                   ).sum(axis=(1, 2))
    return Placement(shares=shares, moved_bytes=moved_bytes, access_s=float((costs * shares).sum()),
                     migration_s=float(moved_bytes.sum() / throughput), solve_seconds=seconds, rounds=rounds)


def _check_budget(budget_bytes: float, chunk_bytes: Array, capacity: Array, start: Array) -> None:
    """Whether some placement keeps to the budget: the start's excess over capacity must all move at epoch 0.

    That is also enough: it can move to the nodes' spare room (the workload fits), and then stay."""
    if budget_bytes < 0:
        raise OracleError(f"a migration budget of {budget_bytes:.0f} bytes: it must be at least 0")
    excess = float(np.maximum(0.0, (start * chunk_bytes[:, None]).sum(axis=0) - capacity).sum())
    if (excess - budget_bytes) / LP_BYTE_UNIT > FEASIBILITY_TOLERANCE:
        raise OracleError(f"the start placement is {excess / 2**20:.1f}MiB over the nodes' capacity, more than "
                          f"the {budget_bytes / 2**20:.1f}MiB migration budget can move before epoch 0")


@dataclass(frozen=True)
class _Problem:
    costs: Array  # [k, c, n] seconds for the chunk's accesses of epoch k if all of it is on n
    chunk_bytes: Array  # [c]
    capacity: Array  # [n] bytes
    start: Array  # [c, n] shares before epoch 0
    throughput: float  # bytes per second
    budget: Array | None  # [k] bytes that may move at the start of epoch k; None: no limit

    @property
    def shape(self) -> tuple[int, int, int]:
        epochs, chunks, nodes = self.costs.shape
        return epochs, chunks, nodes

    @property
    def move_s(self) -> Array:
        return self.chunk_bytes / self.throughput

    @property
    def unit(self) -> float:
        """The LP's largest cost coefficient: objectives are divided by it."""
        return max(float(self.costs.max()), float(self.move_s.max()), 1e-30)


@dataclass(frozen=True)
class _Candidates:
    """Trajectories the master may mix for chunks it does not hold in x/y form."""

    chunk: Indices  # [q]: the (chunk, start node) pairs whose shares the trajectories split
    origin: Indices  # [q]
    pair: Indices  # [p]: the pair each trajectory belongs to
    nodes: Indices  # [p, k]: the node of each epoch

    @staticmethod
    def none(epochs: int) -> _Candidates:
        empty = np.zeros(0, dtype=np.intp)
        return _Candidates(empty, empty, empty, np.zeros((0, epochs), dtype=np.intp))

    def has(self, pair: Indices, nodes: Indices) -> npt.NDArray[np.bool_]:
        """Whether each (pair, trajectory) is a candidate already."""
        known = {(int(p), row.tobytes()) for p, row in zip(self.pair, self.nodes, strict=True)}
        return np.array([(int(p), row.tobytes()) in known for p, row in zip(pair, nodes, strict=True)], dtype=bool)

    def plus(self, pair: Indices, nodes: Indices) -> _Candidates:
        return replace(self, pair=np.concatenate([self.pair, pair]), nodes=np.concatenate([self.nodes, nodes]))


@dataclass(frozen=True)
class _Prices:
    """The coupling rows' duals, in seconds per byte."""

    capacity: Array  # [k, n]: per byte on node n during epoch k
    moves: Array  # [k]: per byte moved at the start of epoch k (all 0 without a budget)


@dataclass(frozen=True)
class _Master:
    shares: Array  # [k, c, n]
    prices: _Prices
    pair_values: Array  # [q] seconds: convexity duals per unit share


@dataclass(frozen=True)
class _Routes:
    """Each chunk's cheapest trajectory at given prices, from each start node."""

    nodes: Indices  # [o, c, k]
    cost: Array  # [o, c] including the capacity and budget charges
    margin: Array  # [c]: how much more the cheapest trajectory that differs somewhere costs


def _decomposed(problem: _Problem, segments: Indices, held: int) -> tuple[Array, int]:
    """Optimal shares [k,c,n] and how many master LPs it took (see the module docstring)."""
    epochs, chunks, _ = problem.shape
    routes = _routes(problem, _segment_prices(problem, segments))
    close_calls = np.sort(np.argsort(routes.margin, kind="stable")[:held])
    candidates = _first_candidates(problem, np.setdiff1d(np.arange(chunks), close_calls), routes)
    tolerance = PRICING_TOLERANCE * problem.unit * epochs
    rounds = 0
    while True:
        rounds += 1
        master = _solve_master(problem, close_calls, candidates)
        routes = _routes(problem, master.prices)
        better = np.flatnonzero(routes.cost[candidates.origin, candidates.chunk] < master.pair_values - tolerance)
        trajectories = routes.nodes[candidates.origin[better], candidates.chunk[better]]
        new = ~candidates.has(better, trajectories)  # a known one "improving" is the duals' rounding
        if not new.any():
            return master.shares, rounds
        candidates = candidates.plus(better[new], trajectories[new])


def _segment_prices(problem: _Problem, segments: Indices) -> _Prices:
    """First prices from the problem with each chunk's costs averaged over each segment.

    With costs constant over a stretch of epochs some optimal placement is constant
    there too (stay with the stretch's cheapest placement: no more moves, no more
    cost), so each stretch is one epoch of a small LP; its capacity prices are spread
    evenly over the stretch's epochs. Epoch-to-epoch noise, what makes the full LP slow,
    is gone. A budget is pooled over the stretch (what its epochs may move in all, as if
    at once), and its price holds in each epoch: a trajectory pays it once per move
    whether the stretch is one epoch or many, unlike capacity, paid epoch after epoch.
    """
    firsts = np.flatnonzero(np.diff(segments, prepend=segments[0] - 1))
    lengths = np.diff(np.append(firsts, segments.size))
    budget = None if problem.budget is None else np.add.reduceat(problem.budget, firsts)
    merged = replace(problem, costs=np.add.reduceat(problem.costs, firsts, axis=0), budget=budget)
    prices = _solve_master(merged, np.arange(problem.shape[1]), _Candidates.none(firsts.size)).prices
    return _Prices(np.repeat(prices.capacity / lengths[:, None], lengths, axis=0),
                   np.repeat(prices.moves, lengths))


def _first_candidates(problem: _Problem, chunks: Indices, routes: _Routes) -> _Candidates:
    """For each node a chunk starts on: its best trajectory at the first prices, and staying on each node."""
    epochs, _, nodes = problem.shape
    chunk, origin = np.nonzero(problem.start[chunks] > 0)
    chunk = chunks[chunk]
    best = routes.nodes[origin, chunk][:, None]  # [q, 1, k]
    stays = np.broadcast_to(np.arange(nodes)[None, :, None], (chunk.size, nodes, epochs))
    trajectories = np.concatenate([best, stays], axis=1)  # [q, 1 + nodes, k]
    pair = np.repeat(np.arange(chunk.size), nodes + 1)
    return _Candidates(chunk, origin, pair, trajectories.reshape(-1, epochs))


def _routes(problem: _Problem, prices: _Prices) -> _Routes:
    """Shortest paths through epochs x nodes (forward-backward Viterbi, vectorised over chunks)."""
    unit = problem.costs + prices.capacity[:, None, :] * problem.chunk_bytes[None, :, None]
    epochs, _, nodes = problem.shape
    move = (problem.move_s[None, :] + prices.moves[:, None] * problem.chunk_bytes[None, :])[..., None]  # [k, c, 1]
    first = unit[0][None] + move[0][None] * (np.arange(nodes)[None, None, :] != np.arange(nodes)[:, None, None])
    forward = [first]  # [o, c, n]: the cheapest way to be on n after epoch k
    for k in range(1, epochs):
        before = forward[-1]
        forward.append(np.minimum(before, before.min(axis=2, keepdims=True) + move[k][None]) + unit[k][None])
    backward = [np.zeros_like(unit[0])]  # [c, n]: the cheapest way on from n after epoch k
    for k in range(epochs - 1, 0, -1):
        after = backward[-1] + unit[k]
        backward.append(np.minimum(after, after.min(axis=1, keepdims=True) + move[k]))
    through = np.stack(forward, axis=2) + np.stack(backward[::-1], axis=1)[None]  # [o, c, k, n]
    cost = through.min(axis=3)
    path = through.argmin(axis=3)
    others = np.where(np.arange(nodes) == path[..., None], np.inf, through - cost[..., None])
    margin = np.where(problem.start.T > 0, others.min(axis=(2, 3)), np.inf).min(axis=0)
    return _Routes(path, cost[..., 0], margin)


def _trajectory_costs(problem: _Problem, candidates: _Candidates) -> Array:
    """[p]: the accesses and moves of each candidate trajectory, in seconds."""
    chunk = candidates.chunk[candidates.pair]
    epochs = np.arange(problem.shape[0])
    access = problem.costs[epochs[None, :], chunk[:, None], candidates.nodes].sum(axis=1)
    return np.asarray(access + _trajectory_moves(candidates).sum(axis=1) * problem.move_s[chunk])


def _trajectory_moves(candidates: _Candidates) -> npt.NDArray[np.bool_]:
    """[p, k]: whether each candidate trajectory changes node at the start of each epoch (epoch 0: from its start)."""
    visited = np.concatenate([candidates.origin[candidates.pair][:, None], candidates.nodes], axis=1)
    return np.asarray(np.diff(visited, axis=1) != 0)


def _solve_master(problem: _Problem, held: Indices, candidates: _Candidates) -> _Master:
    """The LP with chunks ``held`` in x/y form and the others as mixes of their candidates.

    Columns: x and y of the held chunks ([k, c, n] each), then one weight per candidate.
    Rows: capacity ([k, n]), moves ([k, c, n]), then the budget ([k]) if there is one.
    """
    epochs, chunks, nodes = problem.shape
    size = epochs * held.size * nodes
    width = 2 * size + candidates.pair.size
    unit = problem.unit
    held_bytes = problem.chunk_bytes[held] / LP_BYTE_UNIT
    moves = np.broadcast_to(problem.move_s[held][None, :, None], (epochs, held.size, nodes))
    objective = np.concatenate([problem.costs[:, held].ravel(), moves.ravel(),
                                _trajectory_costs(problem, candidates)]) / unit
    capacity_rows = (_capacity_rows(held_bytes, epochs, nodes, width)
                     + _candidate_capacity_rows(problem, candidates, 2 * size, width))
    rows = [capacity_rows, _move_rows(epochs, held.size, nodes, width)]
    limits = [np.tile(problem.capacity / LP_BYTE_UNIT, epochs), problem.start[held].ravel(),
              np.zeros(size - held.size * nodes)]
    if problem.budget is not None:
        rows.append(_budget_rows(held_bytes, epochs, nodes, size, width)
                    + _candidate_budget_rows(problem, candidates, 2 * size, width))
        limits.append(problem.budget / LP_BYTE_UNIT)
    equal = vstack([_one_place_rows(epochs, held.size, nodes, width),
                    _convexity_rows(candidates.pair, candidates.chunk.size, 2 * size, width)])
    targets = np.concatenate([np.ones(epochs * held.size), problem.start[candidates.chunk, candidates.origin]])
    # scipy-stubs type A_ub and A_eq as dense arrays; HiGHS takes sparse ones (scipy's documentation).
    result = linprog(c=objective, A_ub=vstack(rows), b_ub=np.concatenate(limits),  # type: ignore[call-overload]
                     A_eq=equal, b_eq=targets, bounds=(0.0, 1.0), method="highs")
    if result.status != 0:
        raise OracleError(f"the linear program was not solved: {result.message}")
    shares = np.zeros((epochs, chunks, nodes))
    shares[:, held] = result.x[:size].reshape(epochs, held.size, nodes)
    weights = np.repeat(result.x[2 * size:], epochs)
    np.add.at(shares, (np.tile(np.arange(epochs), candidates.pair.size),
                       np.repeat(candidates.chunk[candidates.pair], epochs), candidates.nodes.ravel()), weights)
    # HiGHS's marginals of <= rows are <= 0 in a minimisation: minus them is what a byte of the row is worth.
    per_byte = np.maximum(0.0, -result.ineqlin.marginals) * unit / LP_BYTE_UNIT
    capacity = per_byte[:epochs * nodes].reshape(epochs, nodes)
    budget = per_byte[-epochs:] if problem.budget is not None else np.zeros(epochs)
    return _Master(shares, _Prices(capacity, budget), result.eqlin.marginals[epochs * held.size:] * unit)


def _one_place_rows(epochs: int, chunks: int, nodes: int, width: int) -> csr_array:
    """sum_n x[k,c,n], one row per (k, c)."""
    size = epochs * chunks * nodes
    return csr_array(coo_array((np.ones(size), (np.arange(size) // nodes, np.arange(size))),
                               shape=(epochs * chunks, width)))


def _capacity_rows(chunk_bytes: Array, epochs: int, nodes: int, width: int) -> csr_array:
    """sum_c bytes[c] x[k,c,n], one row per (k, n)."""
    size = epochs * chunk_bytes.size * nodes
    k, _, n = np.unravel_index(np.arange(size), (epochs, chunk_bytes.size, nodes))
    weights = np.broadcast_to(chunk_bytes[None, :, None], (epochs, chunk_bytes.size, nodes)).ravel()
    return csr_array(coo_array((weights, (k * nodes + n, np.arange(size))), shape=(epochs * nodes, width)))


def _candidate_capacity_rows(problem: _Problem, candidates: _Candidates, offset: int, width: int) -> csr_array:
    """The bytes each candidate trajectory puts on its node in each epoch, in the (k, n) capacity rows."""
    epochs, _, nodes = problem.shape
    count = candidates.pair.size
    rows = np.tile(np.arange(epochs) * nodes, count) + candidates.nodes.ravel()
    weights = np.repeat(problem.chunk_bytes[candidates.chunk[candidates.pair]] / LP_BYTE_UNIT, epochs)
    return csr_array(coo_array((weights, (rows, offset + np.repeat(np.arange(count), epochs))),
                               shape=(epochs * nodes, width)))


def _budget_rows(chunk_bytes: Array, epochs: int, nodes: int, offset: int, width: int) -> csr_array:
    """sum_c,n bytes[c] y[k,c,n], one row per k; the y columns start at ``offset``."""
    size = epochs * chunk_bytes.size * nodes
    k, _, _ = np.unravel_index(np.arange(size), (epochs, chunk_bytes.size, nodes))
    weights = np.broadcast_to(chunk_bytes[None, :, None], (epochs, chunk_bytes.size, nodes)).ravel()
    return csr_array(coo_array((weights, (k, offset + np.arange(size))), shape=(epochs, width)))


def _candidate_budget_rows(problem: _Problem, candidates: _Candidates, offset: int, width: int) -> csr_array:
    """The bytes each candidate trajectory moves in each epoch, in the k budget rows."""
    trajectory, k = np.nonzero(_trajectory_moves(candidates))
    weights = problem.chunk_bytes[candidates.chunk[candidates.pair[trajectory]]] / LP_BYTE_UNIT
    return csr_array(coo_array((weights, (k, offset + trajectory)), shape=(problem.shape[0], width)))


def _convexity_rows(pair: Indices, pairs: int, offset: int, width: int) -> csr_array:
    """The weights of each (chunk, start node)'s candidates sum to its start share."""
    return csr_array(coo_array((np.ones(pair.size), (pair, offset + np.arange(pair.size))), shape=(pairs, width)))


def _move_rows(epochs: int, chunks: int, nodes: int, width: int) -> csr_array:
    """x[k,c,n] - x[k-1,c,n] - y[k,c,n], one row per (k, c, n); x[-1] moves to the right-hand side."""
    size = epochs * chunks * nodes
    row = np.arange(size)
    previous = row[chunks * nodes:]  # rows of epochs 1.. refer to the same (c, n) one epoch earlier
    data = np.concatenate([np.ones(size), -np.ones(previous.size), -np.ones(size)])
    rows = np.concatenate([row, previous, row])
    cols = np.concatenate([row, previous - chunks * nodes, size + row])
    return csr_array(coo_array((data, (rows, cols)), shape=(size, width)))
