"""The one count of room and budget: what a node can still take, what a move costs, whether it fits.

The validator (:mod:`testbed.validate`) refuses any move that this ledger says
does not fit, so every policy that plans moves counts with it too, and what a
policy plans is what the validator accepts:

- a node's **room** is its free memory above the kernel's headroom; only nodes
  with memory have room;
- a move's **cost** is the bytes it takes off each other node: a region's
  sampled resident bytes there, prorated to the part of the region the move's
  range covers and rounded down (resident bytes, not the range's size: DAMON
  regions span unmapped gaps, which do not move); a region whose residency was
  not sampled counts as wholly off every node, since all of it may need to move;
- a move takes its cost from the interval's **budget** and from the target's
  room, and gives the room it frees back to the nodes it leaves, so a demotion
  makes room for a promotion after it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from testbed.units import MIB
from testbed.values import Migrate, NodeView, RegionView

# The kernel keeps some memory free for itself: Linux keeps each node's free memory above its zone
# watermarks (a few MiB on the catalog's 1-4 GiB nodes), and during a run the guest's daemon, page tables,
# slab and page cache take memory from the same nodes; a move into a node at its watermark makes the kernel
# reclaim or fail the move page by page. 64 MiB covers both; a move that would take a node below it is
# refused.
HEADROOM = 64 * MIB
UNSAMPLED = -1  # the node an unsampled region's pages count as being on: no node a move can target


class Refusal(StrEnum):
    """The kinds of refusal, for programs that count them; a refusal's text says the numbers."""

    UNKNOWN_NODE = "unknown_node"
    EMPTY_RANGE = "empty_range"
    UNOBSERVED = "unobserved"
    NO_OP = "no_op"
    OVER_BUDGET = "over_budget"
    NO_ROOM = "no_room"
    UNKNOWN_CPUS = "unknown_cpus"  # not the ledger's: the validator's check of where threads run


@dataclass(frozen=True)
class Refused:
    kind: Refusal
    text: str


def node_room(nodes: Iterable[NodeView]) -> dict[int, float]:
    """Bytes each node with memory can take before the kernel's headroom (negative below it)."""
    return {node.id: node.free_bytes - HEADROOM for node in nodes if node.has_memory}


@dataclass(frozen=True)
class MoveCost:
    """What a move takes from the budget and its target's room, and what it frees on the nodes it leaves.

    The validator's moves free what they move; a planner may charge more than a move frees, where its own
    count of a move is larger than the validator's (the rest of a move under way)."""

    target: int
    moving: float
    freed: Mapping[int, float]  # the other nodes only


def move_cost(move: Migrate, regions: Iterable[RegionView]) -> MoveCost:
    """The bytes ``move`` takes from each node, given the observed regions (see the module docstring)."""
    freed: dict[int, float] = {}
    for region in regions:
        covered = _overlap(region, move)
        if covered <= 0:
            continue
        for node, resident in _resident(region).items():
            if node != move.node:
                freed[node] = freed.get(node, 0) + resident * covered // region.size
    return MoveCost(move.node, sum(freed.values()), freed)


@dataclass
class Ledger:
    """Room and budget left, as the interval's moves use them in the order they will be made."""

    room: dict[int, float]  # node (or a planner's own key for it) -> bytes it can still take
    budget: float

    @classmethod
    def of(cls, nodes: Iterable[NodeView], budget: float) -> Ledger:
        return cls(node_room(nodes), budget)

    def admit(self, move: Migrate, regions: Sequence[RegionView]) -> Refused | None:
        """Take ``move`` if the observed regions and what is left allow it; why not, if not."""
        if move.node not in self.room:
            return _not_a_node(move.node)
        if move.end <= move.start:
            return Refused(Refusal.EMPTY_RANGE, f"empty range [{move.start:#x}, {move.end:#x})")
        overlapping = [region for region in regions if _overlap(region, move) > 0]
        if sum(_overlap(region, move) for region in overlapping) < move.size:
            return Refused(Refusal.UNOBSERVED, f"[{move.start:#x}, {move.end:#x}) is not all inside the "
                                               "process's observed regions")
        cost = move_cost(move, overlapping)
        refused = self.refusal(cost)
        if refused is None:
            self.take(cost)
        return refused

    def refusal(self, cost: MoveCost) -> Refused | None:
        """Why a move of this cost cannot be made now, or None if it fits."""
        if cost.target not in self.room:
            return _not_a_node(cost.target)
        if cost.moving == 0:
            return Refused(Refusal.NO_OP, f"no-op: its pages are already on node {cost.target}")
        if cost.moving > self.budget:
            return Refused(Refusal.OVER_BUDGET, f"over budget: moves {cost.moving:.0f} bytes, "
                                                f"{max(0, self.budget):.0f} left this interval")
        room = self.room[cost.target]
        if cost.moving > room:
            return Refused(Refusal.NO_ROOM, f"no room: node {cost.target} has {max(0, room):.0f} bytes to spare, "
                                            f"needs {cost.moving:.0f}")
        return None

    def take(self, cost: MoveCost) -> None:
        """Charge a move that fits; the room it frees goes back to the nodes it leaves."""
        self.budget -= cost.moving
        self.room[cost.target] -= cost.moving
        for node, freed in cost.freed.items():
            if node in self.room:  # not the unsampled pages' UNSAMPLED: no move may target that
                self.room[node] += freed

    def fits(self, bundle: Iterable[MoveCost]) -> bool:
        """Whether the moves fit one after the other, tried on a copy: this ledger is left as it is."""
        trial = Ledger(dict(self.room), self.budget)
        for cost in bundle:
            if trial.refusal(cost) is not None:
                return False
            trial.take(cost)
        return True


def merged(moves: Iterable[Migrate]) -> list[Migrate]:
    """Consecutive moves of adjacent ranges to the same node, as one: fewer requests to the guest.

    The merged move keeps the first one's reason and says how many regions (or pieces of one) it covers."""
    runs: list[tuple[Migrate, int]] = []  # a merged move, and how many moves it stands for
    for move in moves:
        if runs and runs[-1][0].node == move.node and runs[-1][0].end == move.start:
            first, count = runs[-1]
            runs[-1] = (Migrate(first.start, move.end, first.node, first.reason), count + 1)
        else:
            runs.append((move, 1))
    return [move if count == 1 else Migrate(move.start, move.end, move.node,
                                            f"{move.reason} (first of {count} adjacent regions)")
            for move, count in runs]


def _not_a_node(node: int) -> Refused:
    return Refused(Refusal.UNKNOWN_NODE, f"node {node} is not a node with memory")


def _overlap(region: RegionView, move: Migrate) -> int:
    return min(region.end, move.end) - max(region.start, move.start)


def _resident(region: RegionView) -> dict[int, int]:
    """The region's resident bytes per node; an unsampled region counts as wholly resident, off every node."""
    return region.nodes if sum(region.nodes.values()) else {UNSAMPLED: region.size}
