"""The LLaMaS backend: device profiles plus DAMON observations -> page migrations, in about a millisecond.

The frontend (an LLM reading device text) says what each memory is like; the
backend does the arithmetic, every interval, without an LLM: the cost model
(:mod:`policies.cost_model`) prices each region on each node, the planner
(:mod:`policies.planner`) picks where each region should be and the moves that
get there within the interval's budget and the nodes' room.

Hysteresis
----------
The margin, the move cost and the fixed cost per move keep small or short-lived
gains from moving anything. Rates are smoothed over intervals by address, so one
noisy DAMON sample moves nothing on its own. A region a move touched in the last
few intervals may stay or go on towards where that move went, never back.

Confinement
-----------
A range may be confined to some nodes (a buffer of secrets kept off memory
others can read): regions are cut at its edges, the nodes it may not use are
no choice for its regions, and staying on one costs more than any gain, so a
confined region on a wrong node moves first, displacing what it must.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from policies.cost_model import CostModel, NodeModel
from policies.planner import FORBIDDEN, MIN_PART, Candidate, Stakes, assign, lowest_two, schedule
from policies.region_table import Array, IntArray, RegionTable
from testbed.ledger import Ledger, merged, node_room
from testbed.model import PAGE_SIZE
from testbed.values import Migrate, NodeView, Observation


@dataclass(frozen=True)
class BackendSettings:
    horizon_intervals: float = 10.0  # how long a placement is expected to pay off
    margin: float = 0.1  # a move must beat staying by this share of its cost at the target
    cooldown_intervals: int = 5  # a moved range stays put this many intervals
    smoothing: float = 0.5  # the newest observation's weight in a region's rates (1: no memory)
    migration_throughput: float = 2e9  # bytes/s: what a move costs (the score's default)
    move_overhead_ns: float = 1e6  # and once per move: a request to the guest (ms under TCG): no crumbs
    wear_penalty: float = 1.0  # a write to a medium that wears costs this much more
    saturation: float = 0.99  # sampled shares above this say only "at least this often"
    unmeasured_written_fraction: float = 0.5  # when the guest could not tell: neither side favoured
    max_attempts: int = 256  # moves considered per interval: bounds the decision time

    def __post_init__(self) -> None:
        checks = {"horizon_intervals": self.horizon_intervals > 0, "margin": self.margin >= 0,
                  "cooldown_intervals": self.cooldown_intervals >= 0, "smoothing": 0 < self.smoothing <= 1,
                  "migration_throughput": self.migration_throughput > 0, "move_overhead_ns": self.move_overhead_ns >= 0,
                  "wear_penalty": self.wear_penalty >= 0,
                  "saturation": 0 < self.saturation < 1,
                  "unmeasured_written_fraction": 0 <= self.unmeasured_written_fraction <= 1,
                  "max_attempts": self.max_attempts > 0}
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"backend settings out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in wrong)}")



@dataclass(frozen=True)
class Confinement:
    """The address range [start, end) may have pages only on ``nodes``."""

    start: int
    end: int
    nodes: frozenset[int]
    reason: str = field(default="confined", compare=False)  # a move's reason: "secrets: off exposed memory"
    # Where the range's own pages are (sampled bytes by node), when known: a DAMON region reaching past the
    # range says only where the whole region is, and prorating that may put pages on the wrong node.
    resident: Mapping[int, int] = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.start % PAGE_SIZE or self.end % PAGE_SIZE or self.end <= self.start or not self.nodes:
            raise ValueError(f"a confinement needs whole pages and a node: {self}")

    def rows(self, table: RegionTable) -> IntArray:
        """The regions of ``table`` (cut at the confinement's edges) that lie inside it."""
        return np.flatnonzero((table.starts >= self.start) & (table.ends <= self.end))


# What staying on a node a confinement rules out costs per byte over the horizon: more than any move can gain,
# less than a forbidden choice (so the arithmetic of gains stays finite).
CONFINEMENT_PENALTY_NS = FORBIDDEN / 2**50


class _RecentMoves:
    """Ranges moved in the last few intervals. Hysteresis: a region overlapping one may only go on towards
    where that move went (a large region moves in parts, interval after interval) or stay, never back."""

    def __init__(self, cooldown: int) -> None:
        self._cooldown = cooldown
        self._moves: list[tuple[int, int, int, int]] = []  # (start, end, node, epoch)

    def add(self, moves: Iterable[Migrate], epoch: int) -> None:
        self._moves += [(move.start, move.end, move.node, epoch) for move in moves]

    def locks(self, table: RegionTable, epoch: int) -> tuple[IntArray, IntArray]:
        """For each region: the node a recent overlapping move went to (-1: none), and the first byte of it
        that no recent move covers: the rest of a move under way starts there (DAMON splits and merges
        regions between intervals, so a moved range may lie anywhere in a region: at its start, its end
        or inside). The region's end when recent moves cover all of it from there."""
        self._moves = [move for move in self._moves if epoch - move[3] < self._cooldown]
        if not self._moves:
            return np.full(len(table), -1, dtype=np.int64), table.starts
        moved = np.array(sorted(self._moves), dtype=np.int64)
        reach = np.maximum.accumulate(moved[:, 1])  # the furthest end among the moves starting up to each
        holder = np.maximum.accumulate(np.where(moved[:, 1] >= reach, np.arange(len(moved)), 0))
        last = np.searchsorted(moved[:, 0], table.ends, side="left") - 1  # the last move starting before each end
        found = holder[np.maximum(last, 0)]
        lock = np.where((last >= 0) & (moved[found, 1] > table.starts), moved[found, 2], -1)
        # The moved ranges as disjoint stretches [low, high), in order; the one ending after a region's start
        # covers that start if it begins at or before it.
        first = np.flatnonzero(np.concatenate(([True], moved[1:, 0] > reach[:-1])))
        low, high = moved[first, 0], reach[np.append(first[1:] - 1, len(moved) - 1)]
        covering = np.minimum(np.searchsorted(high, table.starts, side="right"), len(low) - 1)
        covered = (high[covering] > table.starts) & (low[covering] <= table.starts)
        return lock, np.where(covered, np.minimum(high[covering], table.ends), table.starts)


class _RateHistory:
    """Last interval's rates by address. A region's rates are blended with what its addresses showed
    before, so one noisy sample (DAMON reports its last aggregation) does not move pages on its own."""

    def __init__(self, weight: float) -> None:
        self._weight = weight  # of the newest observation
        self._last: tuple[IntArray, IntArray, Array, Array] | None = None

    def blend(self, table: RegionTable, reads: Array, writes: Array) -> tuple[Array, Array]:
        if self._last is not None:
            starts, ends, old_reads, old_writes = self._last
            middles = (table.starts + table.ends) // 2
            before = np.searchsorted(starts, middles, side="right") - 1
            seen = (before >= 0) & (ends[np.maximum(before, 0)] > middles)
            reads, writes = reads.copy(), writes.copy()
            for now, old in ((reads, old_reads), (writes, old_writes)):
                now[seen] = self._weight * now[seen] + (1 - self._weight) * old[before[seen]]
        self._last = (table.starts, table.ends, reads, writes)
        return reads, writes


class Backend:
    """Decides migrations from node models and observations; keeps only the recent moves between calls."""

    def __init__(self, models: Iterable[NodeModel], *, interval_s: float, migration_budget: int,
                 damon_sample_s: float, settings: BackendSettings | None = None) -> None:
        if not (interval_s > 0 and damon_sample_s > 0 and migration_budget >= 0):
            raise ValueError(f"the backend needs a positive interval ({interval_s} s) and DAMON sample interval "
                             f"({damon_sample_s} s) and a budget of at least 0 bytes ({migration_budget})")
        self.interval_s = interval_s
        self.migration_budget = migration_budget
        self.settings = settings or BackendSettings()
        self.cost_model = CostModel({model.id: model for model in models}, interval_s, damon_sample_s,
                                    self.settings.saturation, self.settings.unmeasured_written_fraction,
                                    self.settings.wear_penalty)
        self._recent = _RecentMoves(self.settings.cooldown_intervals)
        self._history = _RateHistory(self.settings.smoothing)
        self.confinements: tuple[Confinement, ...] = ()

    def table(self, observation: Observation) -> RegionTable:
        return RegionTable.from_regions(observation.regions, [node.id for node in observation.nodes])

    def decide(self, observation: Observation) -> list[Migrate]:
        return self.plan(self.table(observation), observation.nodes, observation.epoch)

    def remember(self, moves: Iterable[Migrate], epoch: int) -> None:
        """Moves made by someone else (the LLM in direct mode) get the same cooldown as the backend's own."""
        self._recent.add(moves, epoch)

    def plan(self, table: RegionTable, nodes: Sequence[NodeView], epoch: int) -> list[Migrate]:
        """The moves for this interval: the core of :meth:`decide`, on a table already built."""
        room = node_room(nodes)
        # The nodes the backend can cost and move pages to: a node without memory has no room to take any.
        columns = [column for column, node in enumerate(table.node_ids)
                   if node in self.cost_model.models and node in room]
        # Regions with pages on nodes the backend cannot cost stay where they are.
        held = table.held
        rows = np.flatnonzero((held > 0) & (table.resident[columns].sum(axis=0) >= held * (1 - 1e-9)))
        if rows.size == 0 or len(columns) < 2:
            return []
        sub = table if rows.size == len(table) else table.subset(rows)
        if self.confinements:
            sub = self._confined_residency(sub.cut(np.array(sorted({e for c in self.confinements
                                                                    for e in (c.start, c.end)}))))
        lock, resume = self._recent.locks(sub, epoch)
        for confinement in self.confinements:  # a move under way that left some behind (the guest's budget ran
            inside = confinement.rows(sub)  # out) goes on from the start: what is on a ruled-out node moves
            resume[inside] = sub.starts[inside]
        # A region no recent move touched goes in pieces of half a budget, so that the plan may keep part of a
        # large region and move the rest out; one under way stays whole (its rest holds its bytes off target).
        sub, pieces = sub.split(max(MIN_PART, self.migration_budget // 2 // PAGE_SIZE * PAGE_SIZE), lock >= 0)
        node_ids = [table.node_ids[column] for column in columns]
        stakes = self._stakes(sub, columns, lock[pieces], resume[pieces])
        column_room = [room[node] for node in node_ids]  # the planner counts by node column
        target = assign(stakes.choices, stakes.resident.sum(axis=0),
                        np.array(column_room) + stakes.resident.sum(axis=1), stakes.home)
        moves = schedule(stakes.moves_to(target, sub), Ledger(dict(enumerate(column_room)),
                                                                float(self.migration_budget)),
                         self.settings.max_attempts)
        horizon = self.settings.horizon_intervals * self.interval_s
        actions = merged([Migrate(move.start, move.end, node_ids[move.target], self._reason(move, horizon))
                          for move in moves])
        self._recent.add(actions, epoch)
        return actions

    def _stakes(self, table: RegionTable, columns: Sequence[int], lock_node: IntArray, resume: IntArray
                ) -> Stakes:
        """What each region would cost over the horizon on each node, moving there included; ``lock_node``
        and ``resume`` say where a recent move took part of it, and where the rest starts."""
        node_ids = [table.node_ids[column] for column in columns]
        resident, sizes = table.resident[columns], table.sizes
        held = resident.sum(axis=0)
        reads, writes = self._history.blend(table, *self.cost_model.rates(table))
        stakes = self.settings.horizon_intervals * self.interval_s * self.cost_model.costs(sizes, reads, writes,
                                                                                          node_ids)
        moving = held - resident
        move_cost = moving * (1e9 / self.settings.migration_throughput) + self.settings.move_overhead_ns * (moving > 0)
        choices = stakes * (1 + self.settings.margin * (moving > 0)) + move_cost
        home = lowest_two(-resident)[0]
        # A region a recent move touched may stay or go on towards where that move went (even a node the
        # backend does not know: column len(node_ids), which no choice has), never elsewhere.
        lock = np.full(len(sizes), -1, dtype=np.int64)
        locked = np.flatnonzero(lock_node >= 0)
        lock[locked] = [node_ids.index(n) if n in node_ids else len(node_ids) for n in lock_node[locked].tolist()]
        column = np.arange(len(node_ids))[:, None]
        allowed = (column == lock[locked]) | (column == home[locked])
        choices[:, locked] = np.where(allowed, choices[:, locked], FORBIDDEN)
        stay = (resident / held * stakes).sum(axis=0)
        for confinement in self.confinements:
            inside = confinement.rows(table)
            ruled_out = np.array([node not in confinement.nodes for node in node_ids])
            choices[np.ix_(ruled_out, inside)] = FORBIDDEN
            stay[inside] += CONFINEMENT_PENALTY_NS * resident[np.ix_(ruled_out, inside)].sum(axis=0)
        return Stakes(choices, stay, home, moving, resident, lock, resume)

    def _confined_residency(self, table: RegionTable) -> RegionTable:
        """``table`` with each confined range's own residency, where known, shared among its parts by length."""
        resident = table.resident.copy()
        for confinement in self.confinements:
            total = sum(confinement.resident.values())
            inside = confinement.rows(table)
            if total and inside.size:
                shares = np.array([confinement.resident.get(node, 0) / total for node in table.node_ids])
                resident[:, inside] = shares[:, None] * (table.ends - table.starts)[inside]
        return replace(table, resident=resident)

    def _reason(self, move: Candidate, horizon: float) -> str:
        if move.gain >= CONFINEMENT_PENALTY_NS * PAGE_SIZE:  # no placement gains this much: a ruled-out node left
            return next((c.reason for c in self.confinements if c.start <= move.start and move.end <= c.end),
                        "confined")
        gain_ms = move.gain / horizon / 1e6
        return f"gains {gain_ms:.3g} ms/s" if move.gain > 0 else f"makes room (costs {-gain_ms:.3g} ms/s)"

