"""The LLaMaS backend: device profiles plus DAMON observations -> page migrations, in about a millisecond.

The frontend (an LLM reading device text) says what each memory is like; this
module does the arithmetic, every interval, without an LLM.

Cost model
----------
DAMON samples one page of each region every ``damon_sample_s`` and reports the
share of samples that found it accessed. For accesses arriving at random at λ
per page per second that share is 1 - exp(-λ·sample), so λ = -ln(1 - share) /
sample (a saturated share says only "at least this often"). Writes are the
``written_fraction`` share of those accesses, and at least the rate that
explains that share of pages being written at all in the interval, so a region
DAMON barely sees still shows its writes. Reads are the rest. A region's cost on
a node, in nanoseconds of memory time per second, is

    pages × (reads × read latency + writes × write latency × (1 + wear penalty if the medium wears))

For a device whose latency depends on access frequency, the read latency falls
linearly from its worst case (rate 0) to its fast case (the hot rate and
above); writes keep their ratio to reads.

Assignment
----------
A horizon of a few intervals turns rates into stakes: staying costs the horizon
times the cost here; going to node n costs the horizon times the cost there
times (1 + margin), plus the move at the migration throughput and a fixed cost
per move. Regions larger than half a budget are cut into pieces of that size, so
that a plan may keep part of a large region and move the rest. Greedy rounds
then give each region a node within the nodes' capacities: regions propose to
their cheapest node, most regret per byte first (what a byte loses if it does
not get that node); a node accepts them until it is full, and the rest propose
to their next choice. The moves that reach that plan are made within the
interval's budget, best gain per byte first; a move into a full node brings
along moves out of it that the plan wants (least loss per byte freed first,
made before it), and the bundle is made only if its net gain is positive. A
node below the kernel's headroom takes nothing until that much has left it, so
the deficit is moved out first, once, if the plan gains by filling the node:
charged to the first move alone it would never pay. A region larger than the
budget or the room moves in parts, interval after interval. Budget and room are
counted as ``testbed.validate`` counts them (resident bytes, prorated to a
part of a region and rounded down), or more where that count is low (the rest
of a move under way). Where room and budget allow, moves out go first, each
kind in address order, so that adjacent moves merge into one request.

The backend is the only one to place pages: its setup turns the kernel's NUMA
balancing off, which would otherwise pull whatever the CPU touches into the
room the backend makes, whatever the devices.

Hysteresis
----------
The margin, the move cost and the fixed cost per move keep small or short-lived
gains from moving anything. Rates are smoothed over intervals by address, so one
noisy DAMON sample moves nothing on its own. A region a move touched in the last
few intervals may stay or go on towards where that move went, never back.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import numpy.typing as npt

from policies.base import Policy
from policies.frontend import DeviceProfile
from testbed.model import PAGE_SIZE
from testbed.validate import NODE_HEADROOM
from testbed.values import Action, Migrate, NodeView, Observation, PolicyContext, RegionView, Setup, TieringSettings

Array = npt.NDArray[np.float64]
Array32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]

# A choice that is not allowed. Finite, so that differences between choices stay numbers.
FORBIDDEN = 1e30
MIN_PART = 2 * 2**20  # a region is moved in parts no smaller than a huge page


@dataclass(frozen=True)
class NodeModel:
    """What the backend knows about one node's memory."""

    id: int
    read_latency_ns: float  # a frequency-dependent device's worst case
    write_latency_ns: float
    wears_out: bool = False
    hot_latency_ns: float | None = None  # frequency-dependent devices: the fast case ...
    hot_access_rate: float | None = None  # ... for pages used at least this often per second

    def __post_init__(self) -> None:
        if not (self.read_latency_ns > 0 and self.write_latency_ns > 0):
            raise ValueError(f"node {self.id}: latencies must be positive, got {self.read_latency_ns} ns read, "
                             f"{self.write_latency_ns} ns write")
        if (self.hot_latency_ns is None) != (self.hot_access_rate is None):
            raise ValueError(f"node {self.id}: a fast case needs both its latency and its access rate")
        if self.hot_latency_ns is not None and not 0 < self.hot_latency_ns < self.read_latency_ns:
            raise ValueError(f"node {self.id}: the fast case ({self.hot_latency_ns} ns) must be faster than the "
                             f"worst case ({self.read_latency_ns} ns)")
        if self.hot_access_rate is not None and not self.hot_access_rate > 0:
            raise ValueError(f"node {self.id}: the hot access rate must be positive, got {self.hot_access_rate}")

    def read_latency_at(self, accesses_per_page_per_s: Array) -> Array | float:
        """The read latency of pages used this often: the worst case falls linearly to the fast case."""
        if self.hot_latency_ns is None or self.hot_access_rate is None:
            return self.read_latency_ns
        hotness = np.minimum(accesses_per_page_per_s / self.hot_access_rate, 1.0)
        return self.read_latency_ns + (self.hot_latency_ns - self.read_latency_ns) * hotness

    @classmethod
    def from_profile(cls, node_id: int, profile: DeviceProfile) -> NodeModel | None:
        """The model of a profile (HMAT already combined in); None without both latencies.

        A fast case is used only when the text said the latency depends on access
        frequency and the fast case is really faster than the worst case."""
        read, write = profile.read_latency_ns, profile.write_latency_ns
        if read is None or write is None:
            return None
        hot, rate = profile.hot_latency_ns, profile.hot_access_rate
        fast = bool(profile.frequency_dependent_latency) and hot is not None and rate is not None and hot < read
        return cls(node_id, read, write, wears_out=bool(profile.wears_out),
                   hot_latency_ns=hot if fast else None, hot_access_rate=rate if fast else None)

    @classmethod
    def from_hmat(cls, view: NodeView) -> NodeModel | None:
        """The model the guest's HMAT alone gives (no wear, no fast case: HMAT cannot say)."""
        if view.read_latency_ns is None or view.write_latency_ns is None:
            return None
        return cls(view.id, view.read_latency_ns, view.write_latency_ns)


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
    headroom_bytes: int = NODE_HEADROOM  # what the kernel keeps free on each node
    max_attempts: int = 256  # moves considered per interval: bounds the decision time

    def __post_init__(self) -> None:
        checks = {"horizon_intervals": self.horizon_intervals > 0, "margin": self.margin >= 0,
                  "cooldown_intervals": self.cooldown_intervals >= 0, "smoothing": 0 < self.smoothing <= 1,
                  "migration_throughput": self.migration_throughput > 0, "move_overhead_ns": self.move_overhead_ns >= 0,
                  "wear_penalty": self.wear_penalty >= 0,
                  "saturation": 0 < self.saturation < 1,
                  "unmeasured_written_fraction": 0 <= self.unmeasured_written_fraction <= 1,
                  "headroom_bytes": self.headroom_bytes >= 0, "max_attempts": self.max_attempts > 0}
        wrong = [name for name, ok in checks.items() if not ok]
        if wrong:
            raise ValueError(f"backend settings out of range: {', '.join(f'{n}={getattr(self, n)!r}' for n in wrong)}")


@dataclass(frozen=True)
class RegionTable:
    """An observation's regions as arrays, sorted by address.

    Residency is in sampled bytes, as the guest reports it and ``testbed.validate``
    counts it: a region's resident bytes may fall short of its size (DAMON regions
    span unmapped gaps), and a part of a region holds its bytes in proportion.
    Per-node arrays are [node column, region]: numpy is many times faster along
    a long last axis than across a short one (3 nodes)."""

    starts: IntArray
    ends: IntArray
    access_rate: Array32
    written: Array32  # written_fraction; NaN where the guest could not tell
    resident: Array  # [node column, region]: the region's sampled resident bytes on each node
    node_ids: tuple[int, ...]

    @classmethod
    def from_regions(cls, regions: Sequence[RegionView], node_ids: Sequence[int]) -> RegionTable:
        # One list per field: the fastest way from dataclasses to arrays (most of a decision's time).
        starts = np.array([r.start for r in regions], dtype=np.int64)
        homes = [r.nodes for r in regions]
        on_node = np.zeros((len(node_ids), len(regions)))
        for column, node in enumerate(node_ids):
            on_node[column] = [home.get(node, 0) for home in homes]
        table = cls(starts=starts, ends=np.array([r.end for r in regions], dtype=np.int64),
                    access_rate=np.clip(np.array([r.access_rate for r in regions], dtype=np.float32), 0, 1),
                    written=np.array([r.written_fraction for r in regions], dtype=np.float32),  # None -> NaN
                    resident=on_node, node_ids=tuple(node_ids))
        return table if np.all(starts[1:] >= starts[:-1]) else table.subset(np.argsort(starts, kind="stable"))

    def subset(self, rows: IntArray) -> RegionTable:
        return RegionTable(self.starts[rows], self.ends[rows], self.access_rate[rows], self.written[rows],
                           self.resident[:, rows], self.node_ids)

    def split(self, limit: int, whole: BoolArray) -> tuple[RegionTable, IntArray]:
        """Regions larger than ``limit`` (but those ``whole`` says not to cut) as pieces of about that size
        (whole pages), each holding its share of the region's bytes as the validator counts a part of a
        region; and the region each piece comes from."""
        lengths = self.ends - self.starts
        counts = np.where(whole, 1, np.maximum(1, -(-lengths // limit)))
        rows = np.repeat(np.arange(len(self)), counts)
        if rows.size == len(self):
            return self, rows
        step = np.repeat(-(-lengths // counts // PAGE_SIZE) * PAGE_SIZE, counts)
        index = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = self.starts[rows] + index * step
        ends = np.minimum(starts + step, self.ends[rows])
        return RegionTable(starts, ends, self.access_rate[rows], self.written[rows],
                           self.resident[:, rows] * ((ends - starts) / lengths[rows]), self.node_ids), rows

    @property
    def sizes(self) -> Array:
        return (self.ends - self.starts).astype(np.float64)

    @property
    def held(self) -> Array:
        """Each region's sampled resident bytes, on all nodes."""
        return self.resident.sum(axis=0)  # type: ignore[no-any-return]

    @property
    def placed(self) -> BoolArray:
        """The region's residency was sampled."""
        return self.held > 0

    @property
    def shares(self) -> Array:
        """[node column, region]: the share of the region's resident bytes on each node (0 if unsampled)."""
        held = self.held
        return np.divide(self.resident, held, out=np.zeros_like(self.resident), where=held > 0)

    def __len__(self) -> int:
        return len(self.starts)

    def resident_in(self, start: int, end: int) -> Array:
        """Bytes of [start, end) on each node column, each region's prorated to the overlap."""
        rows = slice(int(np.searchsorted(self.ends, start, side="right")),
                     int(np.searchsorted(self.starts, end, side="left")))
        overlap = np.minimum(self.ends[rows], end) - np.maximum(self.starts[rows], start)
        return (self.resident[:, rows] * np.clip(overlap, 0, None) / self.sizes[rows]).sum(axis=1)  # type: ignore[no-any-return]


def node_room(nodes: Iterable[NodeView], node_ids: Sequence[int], headroom: int) -> Array:
    """Free bytes each node can take before the kernel's headroom, in ``node_ids`` order."""
    free = {node.id: node.free_bytes for node in nodes}
    return np.array([free.get(node, 0) - headroom for node in node_ids], dtype=np.float64)


@dataclass(frozen=True)
class _Candidate:
    """A move the plan wants: a window of a region, with what it changes, prorated to the window.

    Room is counted as ``testbed.validate`` counts it: what a window frees on a node is the region's
    resident bytes there times the window's share of the region, rounded down. What it moves is that count
    or more (the rest of a move under way is taken to be all off its target)."""

    start: int
    end: int
    target: int  # node column
    moving: float  # bytes that change node: what the budget and the target's room pay
    gain: float  # ns over the horizon, after the move's cost; negative for a region displaced by the plan
    region_size: int
    region_held: list[int]  # the region's resident bytes on each node column (0 on the target: nothing freed)

    @property
    def resident(self) -> list[int]:
        """Bytes of the window on each node column: what the move frees there."""
        return [held * (self.end - self.start) // self.region_size for held in self.region_held]

    def head(self, charge: float) -> tuple[_Candidate | None, _Candidate | None]:
        """The leading part of the window that costs at most ``charge``, and the rest (None where empty).

        A part smaller than a huge page is not worth its overhead: None then."""
        if charge >= self.moving:
            return self, None
        length = int((self.end - self.start) * max(0.0, charge) / self.moving) // PAGE_SIZE * PAGE_SIZE
        if length < MIN_PART:
            return None, self
        return self._part(self.start, self.start + length), self._part(self.start + length, self.end)

    def _part(self, start: int, end: int) -> _Candidate:
        share = (end - start) / (self.end - self.start)
        return replace(self, start=start, end=end, moving=self.moving * share, gain=self.gain * share)


@dataclass
class _Ledger:
    """Room and budget as the interval's moves use them, in the order they will be made."""

    room: list[float]
    budget: float
    moves: list[_Candidate] = field(default_factory=list)

    def fits(self, bundle: Sequence[_Candidate]) -> bool:
        room, budget = list(self.room), self.budget
        for move in bundle:
            if move.moving > budget or move.moving > room[move.target]:
                return False
            budget -= move.moving
            room = self._after(room, move)
        return True

    def make(self, bundle: Sequence[_Candidate]) -> None:
        for move in bundle:
            self.budget -= move.moving
            self.room = self._after(self.room, move)
            self.moves.append(move)

    @staticmethod
    def _after(room: list[float], move: _Candidate) -> list[float]:
        freed = [room[node] + held for node, held in enumerate(move.resident)]
        freed[move.target] = room[move.target] - move.moving
        return freed


@dataclass(frozen=True)
class _Plan:
    """The moves from where regions are to where the assignment puts them, as arrays (one per move)."""

    starts: IntArray  # the window: the region, or for a move under way what is left of it
    ends: IntArray
    target: IntArray
    home: IntArray
    moving: Array  # bytes the window moves (see _Candidate)
    gain: Array
    region_sizes: IntArray
    region_held: IntArray  # [move, node column]: the region's resident bytes, 0 on the target

    def order(self, budget: float, limit: int) -> tuple[list[int], dict[int, list[int]]]:
        """The gaining moves, best gain per byte moved first, and by the node they leave the displaced ones,
        least loss per byte freed there first; only as many as the budget could make. (The rest of a move
        under way frees less than it moves, as the validator counts.)"""
        density = self.gain / self.moving
        gaining = np.flatnonzero(self.gain > 0)
        gaining = gaining[_largest_first(density[gaining], limit)]
        gaining = gaining[np.cumsum(self.moving[gaining]) <= 2 * budget + self.moving[gaining]]  # some fail
        leaving = {}
        for node in range(self.region_held.shape[1]):
            pool = np.flatnonzero((self.gain <= 0) & (self.home == node))
            freed = self.region_held[pool, node] * ((self.ends - self.starts)[pool] / self.region_sizes[pool])
            leaving[node] = pool[_largest_first(self.gain[pool] / np.maximum(freed, 1.0), limit)].tolist()
        return gaining.tolist(), leaving

    def candidate(self, index: int) -> _Candidate:
        # Made one at a time, when needed: a Python object per region would cost more than the rest.
        return _Candidate(int(self.starts[index]), int(self.ends[index]), int(self.target[index]),
                          float(self.moving[index]), float(self.gain[index]), int(self.region_sizes[index]),
                          self.region_held[index].tolist())


class _Leaving:
    """The displaced moves out of one node, least loss first, taken whole or in part as bundles need room."""

    def __init__(self, plan: _Plan, node: int, indices: list[int]) -> None:
        self._plan = plan
        self._node = node
        self._indices = indices
        self._taken: tuple[int, _Candidate | None] = (0, None)  # (how many are used up, what is left of the next)
        self._offer: tuple[int, _Candidate | None] = self._taken

    def take(self, room: float, budget: float) -> list[_Candidate]:
        """Parts that free ``room`` bytes of the node within ``budget`` (fewer if there are not enough)."""
        used, rest = self._taken
        parts: list[_Candidate] = []
        while room > 0 and (rest is not None or used < len(self._indices)):
            if rest is None:
                rest, used = self._plan.candidate(self._indices[used]), used + 1
            # What a window frees here may be less than what it moves (the rest of a move under way); a page
            # more, as parts are whole pages.
            charge = (room + PAGE_SIZE) * rest.moving / max(rest.resident[self._node], 1)
            part, rest = rest.head(min(budget, max(charge, MIN_PART)))  # a last part of at least MIN_PART
            if part is None:
                break
            parts.append(part)
            room -= part.resident[self._node]
            budget -= part.moving
        self._offer = (used, rest)
        return parts

    def commit(self) -> None:
        """The last offer was made: what it took is used up."""
        self._taken = self._offer


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
        self.models = {model.id: model for model in models}
        self.interval_s = interval_s
        self.migration_budget = migration_budget
        self.damon_sample_s = damon_sample_s
        self.settings = settings or BackendSettings()
        self._recent = _RecentMoves(self.settings.cooldown_intervals)
        self._history = _RateHistory(self.settings.smoothing)

    def table(self, observation: Observation) -> RegionTable:
        return RegionTable.from_regions(observation.regions, [node.id for node in observation.nodes])

    def decide(self, observation: Observation) -> list[Migrate]:
        return self.plan(self.table(observation), observation.nodes, observation.epoch)

    def remember(self, moves: Iterable[Migrate], epoch: int) -> None:
        """Moves made by someone else (the LLM in direct mode) get the same cooldown as the backend's own."""
        self._recent.add(moves, epoch)

    def rates(self, table: RegionTable) -> tuple[Array, Array]:
        """Reads and writes per page per second of each region (see the module docstring)."""
        # Logarithms in float32: several times faster here, and the shares are small numbers anyway.
        # ln(1 / (1 - share)) rather than -ln(1 - share): no negative zeros.
        saturation = np.float32(self.settings.saturation)
        accesses = np.log(1 / (1 - np.minimum(table.access_rate, saturation))) / self.damon_sample_s
        written = table.written
        if np.isnan(written).any():
            written = np.where(np.isnan(written), np.float32(self.settings.unmeasured_written_fraction), written)
        written = np.clip(written, 0, 1)
        writes = np.maximum(accesses * written, np.log(1 / (1 - np.minimum(written, saturation))) / self.interval_s)
        return np.maximum(accesses - writes, 0).astype(np.float64), writes.astype(np.float64)

    def costs(self, sizes: Array, reads: Array, writes: Array, node_ids: Sequence[int]) -> Array:
        """[node, region]: nanoseconds of memory time per second, were the region on that node."""
        pages = sizes / PAGE_SIZE
        page_reads, page_writes = pages * reads, pages * writes
        costs = np.empty((len(node_ids), len(sizes)))
        for column, node in enumerate(node_ids):
            model = self.models[node]
            write_factor = model.write_latency_ns / model.read_latency_ns
            if model.wears_out:
                write_factor *= 1 + self.settings.wear_penalty
            costs[column] = (page_reads + page_writes * write_factor) * model.read_latency_at(reads + writes)
        return costs

    def plan(self, table: RegionTable, nodes: Sequence[NodeView], epoch: int) -> list[Migrate]:
        """The moves for this interval: the core of :meth:`decide`, on a table already built."""
        columns = [column for column, node in enumerate(table.node_ids) if node in self.models]
        # Regions with pages on nodes the backend cannot cost stay where they are.
        held = table.held
        rows = np.flatnonzero((held > 0) & (table.resident[columns].sum(axis=0) >= held * (1 - 1e-9)))
        if rows.size == 0 or len(columns) < 2:
            return []
        sub = table if rows.size == len(table) else table.subset(rows)
        lock, resume = self._recent.locks(sub, epoch)
        # A region no recent move touched goes in pieces of half a budget, so that the plan may keep part of a
        # large region and move the rest out; one under way stays whole (its rest holds its bytes off target).
        sub, pieces = sub.split(max(MIN_PART, self.migration_budget // 2 // PAGE_SIZE * PAGE_SIZE), lock >= 0)
        node_ids = [table.node_ids[column] for column in columns]
        options = self._options(sub, columns, lock[pieces], resume[pieces])
        room = node_room(nodes, node_ids, self.settings.headroom_bytes)
        target = _assign(options.choices, options.resident.sum(axis=0), room + options.resident.sum(axis=1),
                         options.home)
        ledger = _Ledger(room.tolist(), float(self.migration_budget))
        _schedule(options.moves_to(target, sub), ledger, self.settings.max_attempts)
        horizon = self.settings.horizon_intervals * self.interval_s
        moves = _in_tidy_order(ledger.moves, _Ledger(room.tolist(), float(self.migration_budget)))
        actions = _merged([Migrate(move.start, move.end, node_ids[move.target], _reason(move, horizon))
                           for move in moves])
        self._recent.add(actions, epoch)
        return actions

    def _options(self, table: RegionTable, columns: Sequence[int], lock_node: IntArray, resume: IntArray
                 ) -> _Options:
        """What each region would cost over the horizon on each node, moving there included; ``lock_node``
        and ``resume`` say where a recent move took part of it, and where the rest starts."""
        node_ids = [table.node_ids[column] for column in columns]
        resident, sizes = table.resident[columns], table.sizes
        held = resident.sum(axis=0)
        reads, writes = self._history.blend(table, *self.rates(table))
        stakes = self.settings.horizon_intervals * self.interval_s * self.costs(sizes, reads, writes, node_ids)
        moving = held - resident
        move_cost = moving * (1e9 / self.settings.migration_throughput) + self.settings.move_overhead_ns * (moving > 0)
        choices = stakes * (1 + self.settings.margin * (moving > 0)) + move_cost
        home = _lowest_two(-resident)[0]
        # A region a recent move touched may stay or go on towards where that move went (even a node the
        # backend does not know: column len(node_ids), which no choice has), never elsewhere.
        lock = np.full(len(sizes), -1, dtype=np.int64)
        locked = np.flatnonzero(lock_node >= 0)
        lock[locked] = [node_ids.index(n) if n in node_ids else len(node_ids) for n in lock_node[locked].tolist()]
        column = np.arange(len(node_ids))[:, None]
        allowed = (column == lock[locked]) | (column == home[locked])
        choices[:, locked] = np.where(allowed, choices[:, locked], FORBIDDEN)
        return _Options(choices, (resident / held * stakes).sum(axis=0), home, moving, resident, lock, resume)


@dataclass(frozen=True)
class _Options:
    """Per region and node column: the stakes of each choice; per region: where it is and may go."""

    choices: Array  # [node, region]: ns over the horizon if the region goes there (moving included)
    stay: Array  # ns over the horizon if it stays as it is
    home: IntArray  # the column holding most of it
    moving: Array  # [node, region]: bytes that would change node
    resident: Array  # [node, region]: its bytes on each node now
    lock: IntArray  # the column a recent move took part of it to (it may go there or stay); -1: any
    resume: IntArray  # where what is left of a move under way starts

    def moves_to(self, target: IntArray, table: RegionTable) -> _Plan:
        """The moves that take each region to ``target``: those that gain, and those the plan displaces.

        A move that has not begun takes the whole region, whose parts hold its bytes in proportion (as the
        validator counts). For a move under way only the rest, from where recent moves stop covering it, is
        a window, taken to hold all the region's bytes still off the target (more than the validator's
        count, so the budget and room stay true)."""
        wanted = np.flatnonzero(self.moving[target, np.arange(len(target))] > 0)
        to = target[wanted]
        gain = self.stay[wanted] - self.choices[to, wanted]
        free = self.lock[wanted] == -1
        starts = np.where(free, table.starts[wanted], self.resume[wanted])
        keep = (((to != self.home[wanted]) | (gain > 0)) & (free | (self.lock[wanted] == to))  # gather if it pays
                & (table.ends[wanted] > starts))
        wanted, to, gain, free, starts = wanted[keep], to[keep], gain[keep], free[keep], starts[keep]
        ends = table.ends[wanted]
        moving = self.moving[to, wanted]
        off_target = np.where(free, moving, np.minimum((ends - starts).astype(np.float64), moving))
        held = self.resident[:, wanted].T.astype(np.int64)  # sampled bytes: whole numbers
        held[np.arange(len(to)), to] = 0
        return _Plan(starts, ends, to, self.home[wanted], off_target, gain * off_target / moving,
                     (table.ends - table.starts)[wanted], held)


def _lowest_two(values: Array) -> tuple[IntArray, Array, Array]:
    """For each column of a [node, region] array: the row of the smallest entry, it, and the next smallest.

    A loop over the few rows: numpy's own argmin across a short axis is ten times slower."""
    index = np.zeros(values.shape[1], dtype=np.int64)
    lowest = values[0].copy()
    second = np.full_like(lowest, FORBIDDEN)
    for row in range(1, len(values)):
        np.minimum(second, np.maximum(lowest, values[row]), out=second)
        index[values[row] < lowest] = row
        np.minimum(lowest, values[row], out=lowest)
    return index, lowest, second


def _largest_first(keys: Array, limit: int) -> IntArray:
    """Indices of the ``limit`` largest keys, largest first, in index order among equals (pieces of one
    region stay in address order); only those are sorted."""
    picks = np.sort(np.argpartition(-keys, limit)[:limit]) if keys.size > limit else np.arange(keys.size)
    return picks[np.argsort(-keys[picks], kind="stable")]


def _assign(choices: Array, sizes: Array, capacity: Array, home: IntArray) -> IntArray:
    """A node column for each region within ``capacity``: greedy rounds, most regret per byte first.

    Each round, waiting regions propose to their cheapest node that is not full; a node that
    cannot take all its proposers takes them by regret per byte until it is full; the rest wait
    for the next round. Each round fills a node, so there are at most as many rounds as nodes."""
    target = home.copy()
    waiting: IntArray = np.arange(sizes.size)
    left = capacity.astype(np.float64)
    full = np.zeros(len(capacity), dtype=np.bool_)
    while waiting.size:
        if full.sum() == len(full) - 1:  # one node left: no choosing, no regret
            last = int(np.flatnonzero(~full)[0])
            allowed = waiting[choices[last, waiting] < FORBIDDEN]
            taken = allowed[np.cumsum(sizes[allowed]) <= left[last]]
            target[taken] = last
            break
        mine = choices if waiting.size == sizes.size else choices[:, waiting]  # the first round: everyone
        options = np.where(full[:, None], FORBIDDEN, mine) if full.any() else mine
        best, lowest, second = _lowest_two(options)
        regret = (second - lowest) / sizes[waiting]
        rejected = []
        for node in np.flatnonzero(~full).tolist():
            proposing = (best == node) & (lowest < FORBIDDEN)
            mine = waiting[proposing]
            if sizes[mine].sum() > left[node]:
                mine = mine[np.argsort(-regret[proposing])]
                taken = int(np.searchsorted(np.cumsum(sizes[mine]), left[node], side="right"))
                rejected.append(mine[taken:])
                mine = mine[:taken]
                full[node] = True
            target[mine] = node
            left[node] -= sizes[mine].sum()
        waiting = np.concatenate(rejected) if rejected else waiting[:0]
    return target  # a region that fits nowhere stays home


def _schedule(plan: _Plan, ledger: _Ledger, max_attempts: int) -> None:
    """Make the gaining moves in order, each with the displacements it needs, until the budget is spent.

    A node below the kernel's headroom is first brought back to it (see :func:`_restore_headroom`); one
    still below it takes nothing. A move whose gain does not pay for its displacements is skipped; a
    node whose best move in does not fit takes no lesser one this interval: they would not fit either,
    and trying costs time."""
    gaining, leaving = plan.order(ledger.budget, max_attempts)
    queues = {node: _Leaving(plan, node, indices) for node, indices in leaving.items()}
    _restore_headroom(plan, queues, ledger)
    blocked = {node for node, room in enumerate(ledger.room) if room < 0}
    for index in gaining:
        if ledger.budget < MIN_PART or len(blocked) == len(queues):
            return
        if int(plan.target[index]) in blocked:
            continue
        move = plan.candidate(index)
        out = queues[move.target]
        bundle = _bundle(move, out, ledger)
        if not bundle or not ledger.fits(bundle):
            blocked.add(move.target)
        elif sum(m.gain for m in bundle) > 0:
            ledger.make(bundle)
            out.commit()


def _restore_headroom(plan: _Plan, queues: Mapping[int, _Leaving], ledger: _Ledger) -> None:
    """Move out, least loss first, what takes a node below the kernel's headroom, if the plan gains by
    filling that node: the validator refuses every move into it until then.

    The deficit is paid once for everything the plan brings in, so it is weighed against the plan's net
    gain there (all its moves in, less all its moves out), not against the first move's part: that part
    is small (the budget pays twice, for the deficit and the move) and would never pay for it alone."""
    incoming = plan.gain > 0
    net = np.zeros(len(ledger.room))
    np.add.at(net, plan.target[incoming], plan.gain[incoming])
    np.add.at(net, plan.home[~incoming], plan.gain[~incoming])
    for node, room in enumerate(ledger.room):
        if room >= 0 or net[node] <= 0:
            continue
        clearing = queues[node].take(-room, ledger.budget)  # all of it, or as much as the budget allows
        if clearing and ledger.fits(clearing):
            ledger.make(clearing)
            queues[node].commit()


def _bundle(move: _Candidate, leaving: _Leaving, ledger: _Ledger) -> list[_Candidate]:
    """``move``, or as much of it as the budget and the room it can be given allow, after the displacements
    that make that room (none if no part of it fits)."""
    room, budget = ledger.room[move.target], ledger.budget
    # A move into a full node pays twice from the budget: once for itself, once for what makes room.
    affordable = budget if move.moving <= room else (budget + room) / 2
    part = move.head(affordable)[0]
    if part is None:
        return []
    making_room = leaving.take(part.moving - room, budget - part.moving)
    # What displacements free is rounded down, and may come out a little short: the part shrinks to fit.
    freed = room + sum(m.resident[move.target] for m in making_room)
    part = part if part.moving <= freed else part.head(freed)[0]
    return [*making_room, part] if part is not None else []


def _reason(move: _Candidate, horizon: float) -> str:
    gain_ms = move.gain / horizon / 1e6
    return f"gains {gain_ms:.3g} ms/s" if move.gain > 0 else f"makes room (costs {-gain_ms:.3g} ms/s)"


def _in_tidy_order(moves: list[_Candidate], ledger: _Ledger) -> list[_Candidate]:
    """The moves that make room first, then the others, each in address order, so that adjacent ones merge
    into one request to the guest; as scheduled if room or budget (``ledger``, unused) do not allow it."""
    tidy = sorted(moves, key=lambda move: (move.gain > 0, move.start))
    return tidy if ledger.fits(tidy) else moves


def _merged(actions: list[Migrate]) -> list[Migrate]:
    """Consecutive moves of adjacent ranges to the same node, as one."""
    merged: list[Migrate] = []
    for action in actions:
        last = merged[-1] if merged else None
        if last is not None and last.node == action.node and last.end == action.start:
            merged[-1] = Migrate(last.start, action.end, last.node, last.reason)
        else:
            merged.append(action)
    return merged


# The backend places the pages itself. The kernel's NUMA balancing would move them too, on hinting faults,
# to the node of the CPU that touches them whatever the devices: into the room the backend makes for other
# data (read-only data onto DRAM, where write-hot data should go), and back after the backend moves them.
SOLE_PLACER = TieringSettings(numa_balancing=0, demotion_enabled=None)
SOLE_PLACER_NOTE = "numa_balancing=0: the backend alone places pages (the kernel's NUMA balancing would fight it)"


class BackendPolicy(Policy):
    """The backend alone, on the HMAT the guest reports: what the numbers say without reading any text."""

    name = "llamas-backend"

    def __init__(self, settings: BackendSettings | None = None) -> None:
        self.settings = settings or BackendSettings()
        self._backend: Backend | None = None

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise RuntimeError(f"policy {self.name}: decide before setup")
        return self._backend

    def build_backend(self, context: PolicyContext, models: Mapping[int, NodeModel | None]) -> tuple[str, ...]:
        """Make the backend for ``context``; notes for nodes it cannot cost."""
        self._backend = Backend((m for m in models.values() if m is not None), interval_s=context.interval_s,
                                migration_budget=context.migration_budget, damon_sample_s=context.damon_sample_s,
                                settings=self.settings)
        return tuple(f"node {node}: no latency known; the backend leaves its pages where they are"
                     for node, model in models.items() if model is None)

    def setup(self, context: PolicyContext) -> Setup:
        notes = self.build_backend(context, {n.id: NodeModel.from_hmat(n) for n in context.nodes})
        return Setup(tiering=SOLE_PLACER, notes=(*notes, SOLE_PLACER_NOTE))

    def decide(self, observation: Observation) -> list[Action]:
        return [*self.backend.decide(observation)]
