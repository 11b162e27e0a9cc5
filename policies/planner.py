"""The backend's plan for an interval: where each region should be, and the moves that get there.

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
counted by :mod:`testbed.ledger`, as the validator counts them (resident bytes,
prorated to a part of a region and rounded down), or more where that count is
low (the rest of a move under way). Where room and budget allow, moves out go
first, each kind in address order, so that adjacent moves merge into one
request.

Node columns: the planner's arrays are [node column, region], and its ledger
counts room by column.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from functools import cached_property

import numpy as np

from policies.region_table import Array, IntArray, RegionTable
from testbed.ledger import Ledger, MoveCost
from testbed.model import PAGE_SIZE

# A choice that is not allowed. Finite, so that differences between choices stay numbers.
FORBIDDEN = 1e30
MIN_PART = 2 * 2**20  # a region is moved in parts no smaller than a huge page


@dataclass(frozen=True)
class Candidate:
    """A move the plan wants: a window of a region, with what it changes, prorated to the window.

    Room is counted as ``testbed.ledger`` counts it: what a window frees on a node is the region's
    resident bytes there times the window's share of the region, rounded down. What it moves is that count
    or more (the rest of a move under way is taken to be all off its target)."""

    start: int
    end: int
    target: int  # node column
    moving: float  # bytes that change node: what the budget and the target's room pay
    gain: float  # ns over the horizon, after the move's cost; negative for a region displaced by the plan
    region_size: int
    region_held: list[int]  # the region's resident bytes on each node column (0 on the target: nothing freed)

    @cached_property
    def resident(self) -> list[int]:
        """Bytes of the window on each node column: what the move frees there."""
        return [held * (self.end - self.start) // self.region_size for held in self.region_held]

    @cached_property
    def cost(self) -> MoveCost:
        """What the ledger charges the move, by node column (it frees nothing on its target: 0 there)."""
        return MoveCost(self.target, self.moving, dict(enumerate(self.resident)))

    def head(self, charge: float) -> tuple[Candidate | None, Candidate | None]:
        """The leading part of the window that costs at most ``charge``, and the rest (None where empty).

        A part smaller than a huge page is not worth its overhead: None then."""
        if charge >= self.moving:
            return self, None
        length = int((self.end - self.start) * max(0.0, charge) / self.moving) // PAGE_SIZE * PAGE_SIZE
        if length < MIN_PART:
            return None, self
        return self._part(self.start, self.start + length), self._part(self.start + length, self.end)

    def _part(self, start: int, end: int) -> Candidate:
        share = (end - start) / (self.end - self.start)
        return replace(self, start=start, end=end, moving=self.moving * share, gain=self.gain * share)


@dataclass(frozen=True)
class MovePlan:
    """The moves from where regions are to where the assignment puts them, as arrays (one per move)."""

    starts: IntArray  # the window: the region, or for a move under way what is left of it
    ends: IntArray
    target: IntArray
    home: IntArray
    moving: Array  # bytes the window moves (see Candidate)
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

    def candidate(self, index: int) -> Candidate:
        # Made one at a time, when needed: a Python object per region would cost more than the rest.
        return Candidate(int(self.starts[index]), int(self.ends[index]), int(self.target[index]),
                         float(self.moving[index]), float(self.gain[index]), int(self.region_sizes[index]),
                         self.region_held[index].tolist())


class _Leaving:
    """The displaced moves out of one node, least loss first, taken whole or in part as bundles need room."""

    def __init__(self, plan: MovePlan, node: int, indices: list[int]) -> None:
        self._plan = plan
        self._node = node
        self._indices = indices
        self._taken: tuple[int, Candidate | None] = (0, None)  # (how many are used up, what is left of the next)
        self._offer: tuple[int, Candidate | None] = self._taken

    def take(self, room: float, budget: float) -> list[Candidate]:
        """Parts that free ``room`` bytes of the node within ``budget`` (fewer if there are not enough)."""
        used, rest = self._taken
        parts: list[Candidate] = []
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


@dataclass(frozen=True)
class Stakes:
    """Per region and node column: the stakes of each choice; per region: where it is and may go."""

    choices: Array  # [node, region]: ns over the horizon if the region goes there (moving included)
    stay: Array  # ns over the horizon if it stays as it is
    home: IntArray  # the column holding most of it
    moving: Array  # [node, region]: bytes that would change node
    resident: Array  # [node, region]: its bytes on each node now
    lock: IntArray  # the column a recent move took part of it to (it may go there or stay); -1: any
    resume: IntArray  # where what is left of a move under way starts

    def moves_to(self, target: IntArray, table: RegionTable) -> MovePlan:
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
        return MovePlan(starts, ends, to, self.home[wanted], off_target, gain * off_target / moving,
                        (table.ends - table.starts)[wanted], held)


def lowest_two(values: Array) -> tuple[IntArray, Array, Array]:
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


def assign(choices: Array, sizes: Array, capacity: Array, home: IntArray) -> IntArray:
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
        best, lowest, second = lowest_two(options)
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


def schedule(plan: MovePlan, ledger: Ledger, max_attempts: int) -> list[Candidate]:
    """The moves to make, in the order to make them, charged to ``ledger`` (room by node column): the
    gaining moves in order, each with the displacements it needs, until the budget is spent.

    A node below the kernel's headroom is first brought back to it (see :func:`_restore_headroom`); one
    still below it takes nothing. A move whose gain does not pay for its displacements is skipped; a
    node whose best move in does not fit takes no lesser one this interval: they would not fit either,
    and trying costs time."""
    before = Ledger(dict(ledger.room), ledger.budget)
    made: list[Candidate] = []
    gaining, leaving = plan.order(ledger.budget, max_attempts)
    queues = {node: _Leaving(plan, node, indices) for node, indices in leaving.items()}
    _restore_headroom(plan, queues, ledger, made)
    blocked = {node for node, room in ledger.room.items() if room < 0}
    for index in gaining:
        if ledger.budget < MIN_PART or len(blocked) == len(queues):
            break
        if int(plan.target[index]) in blocked:
            continue
        move = plan.candidate(index)
        out = queues[move.target]
        bundle = _bundle(move, out, ledger)
        if not bundle or not ledger.fits(m.cost for m in bundle):
            blocked.add(move.target)
        elif sum(m.gain for m in bundle) > 0:
            _make(bundle, ledger, made)
            out.commit()
    return _in_tidy_order(made, before)


def _restore_headroom(plan: MovePlan, queues: Mapping[int, _Leaving], ledger: Ledger, made: list[Candidate]
                      ) -> None:
    """Move out, least loss first, what takes a node below the kernel's headroom, if the plan gains by
    filling that node: the validator refuses every move into it until then.

    The deficit is paid once for everything the plan brings in, so it is weighed against the plan's net
    gain there (all its moves in, less all its moves out), not against the first move's part: that part
    is small (the budget pays twice, for the deficit and the move) and would never pay for it alone."""
    incoming = plan.gain > 0
    net = np.zeros(len(ledger.room))
    np.add.at(net, plan.target[incoming], plan.gain[incoming])
    np.add.at(net, plan.home[~incoming], plan.gain[~incoming])
    for node, room in list(ledger.room.items()):  # each node's deficit as it was before any clearing
        if room >= 0 or net[node] <= 0:
            continue
        clearing = queues[node].take(-room, ledger.budget)  # all of it, or as much as the budget allows
        if clearing and ledger.fits(m.cost for m in clearing):
            _make(clearing, ledger, made)
            queues[node].commit()


def _bundle(move: Candidate, leaving: _Leaving, ledger: Ledger) -> list[Candidate]:
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


def _make(bundle: Sequence[Candidate], ledger: Ledger, made: list[Candidate]) -> None:
    for move in bundle:
        ledger.take(move.cost)
    made.extend(bundle)


def _in_tidy_order(moves: list[Candidate], ledger: Ledger) -> list[Candidate]:
    """The moves that make room first, then the others, each in address order, so that adjacent ones merge
    into one request to the guest; as scheduled if room or budget (``ledger``, as before any move) do not
    allow it."""
    tidy = sorted(moves, key=lambda move: (move.gain > 0, move.start))
    return tidy if ledger.fits(move.cost for move in tidy) else moves
