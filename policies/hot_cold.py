"""``hot-cold``: a user-space tiering heuristic on DAMON's view of the workload.

It knows two kinds of memory: the fast node (the fastest the guest reports, by
memory tier then HMAT latency) and the slow ones. Each interval it

1. smooths each DAMON region's access rate over time into a *heat*; regions
   split and merge between observations, so what it remembers is carried over
   by address overlap;
2. promotes, hottest first (older first on ties), regions that have been hot
   for a few observations running and are not yet on the fast node, as far as
   the fast node's free memory (less a headroom) and the migration budget allow;
3. when the fast node is full, first demotes its coldest data to the next tier,
   but only data clearly colder than what replaces it.

Steps 2 and 3 are the hysteresis: one busy interval does not promote, and two
regions of similar heat never trade places.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from policies.base import Policy
from policies.tiers import demotion_targets, speed_order
from testbed.ledger import HEADROOM, Ledger, MoveCost, merged
from testbed.model import PAGE_SIZE
from testbed.units import MIB
from testbed.values import Action, Migrate, Observation, PolicyContext, RegionView, Setup

MIN_PROMOTION = MIB
# Where a partial move of a large region starts: successive epochs step by the golden
# ratio, so windows spread over the whole region whatever has already moved.
WINDOW_STEP = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class HotColdSettings:
    smoothing: float = 0.5  # weight of the newest access rate in a region's heat
    hot_rate: float = 0.05  # hot from here: on average one sampled access per aggregation of 20 samples
    hot_observations: int = 2  # observations in a row with a hot access rate before a promotion
    colder_ratio: float = 0.5  # demote to make room only data at most this share as hot as the newcomer
    # Kept free on each node: the ledger's headroom (the validator refuses moves into it), and
    # more, which absorbs the error of sampled residency.
    headroom_bytes: int = HEADROOM + 32 * MIB

    def __post_init__(self) -> None:
        for name in ("smoothing", "hot_rate", "colder_ratio"):
            if not 0 < getattr(self, name) <= 1:
                raise ValueError(f"{name} must be in (0, 1], got {getattr(self, name)}")
        for name, least in (("hot_observations", 1), ("headroom_bytes", 0)):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < least:
                raise ValueError(f"{name} must be a whole number of at least {least}, got {getattr(self, name)}")


@dataclass(frozen=True)
class Tracked:
    """A region of this observation with what the policy makes of it."""

    view: RegionView
    heat: float  # smoothed access rate
    hot_streak: int  # observations in a row with a hot access rate

    def bytes_on(self, node: int) -> int:
        return self.view.nodes.get(node, 0)

    def bytes_off(self, node: int) -> int:
        return sum(size for other, size in self.view.nodes.items() if other != node)


@dataclass(frozen=True)
class Machine:
    fast: int
    demotion_targets: tuple[int, ...]  # best first
    budget: int  # bytes per interval


@dataclass
class Plan:
    """The moves of one interval, with the budget and room they leave (estimated as the orchestrator does)."""

    epoch: int
    ledger: Ledger  # its room is short of each node's headroom beyond the validator's, too
    demotions: list[Migrate] = field(default_factory=list)
    promotions: list[Migrate] = field(default_factory=list)
    moved: set[int] = field(default_factory=set)  # region ids: one move per region and interval

    @property
    def budget(self) -> int:
        return int(self.ledger.budget)

    def room(self, node: int) -> int:
        """Bytes ``node`` can still take (0 for a node without memory)."""
        return int(self.ledger.room.get(node, 0))

    def window(self, region: Tracked, node: int, cost_limit: int) -> tuple[int, int, int] | None:
        """A page-aligned part of ``region`` whose move to ``node`` costs at most ``cost_limit``.

        The cost is what the orchestrator charges: the region's bytes off ``node``,
        prorated to the part. Returns (start, end, cost), or None if nothing fits.
        """
        view, off = region.view, region.bytes_off(node)
        if off <= 0 or cost_limit < PAGE_SIZE or view.id in self.moved:
            return None
        length = view.size if off <= cost_limit else cost_limit * view.size // off // PAGE_SIZE * PAGE_SIZE
        if length < PAGE_SIZE:
            return None
        offset = int((self.epoch * WINDOW_STEP) % 1 * (view.size - length)) // PAGE_SIZE * PAGE_SIZE
        return view.start + offset, view.start + offset + length, off * length // view.size

    def add(self, moves: list[Migrate], region: Tracked, part: tuple[int, int, int], node: int, reason: str,
            freed: dict[int, float]) -> None:
        start, end, cost = part
        moves.append(Migrate(start, end, node, reason))
        self.ledger.take(MoveCost(node, cost, freed))
        self.moved.add(region.view.id)

    def actions(self) -> list[Action]:
        """Demotions first: the promotions need the room they make; each merged in address order."""
        return [*merged(sorted(self.demotions, key=_start)), *merged(sorted(self.promotions, key=_start))]


class HotCold(Policy):
    name = "hot-cold"

    def __init__(self, settings: HotColdSettings = HotColdSettings()) -> None:
        self.settings = settings
        self._machine: Machine | None = None
        self._memory: list[Tracked] = []  # the previous observation's regions, in address order

    def setup(self, context: PolicyContext) -> Setup:
        order = speed_order(context.nodes)
        if len(order) > 1:
            targets = tuple(node.id for node in demotion_targets(context.nodes))
            self._machine = Machine(order[0].id, targets, context.migration_budget)
            return Setup(notes=(f"hot-cold: fast node {order[0].id}, demotes to {list(targets)}",))
        return Setup(notes=("hot-cold: one memory node, nothing to place",))

    def decide(self, observation: Observation) -> list[Action]:
        machine = self._machine
        if machine is None:
            return []
        regions = self._track(sorted(observation.regions, key=lambda view: view.start))
        ledger = Ledger.of(observation.nodes, machine.budget)
        extra = self.settings.headroom_bytes - HEADROOM
        ledger.room = {node: room - extra for node, room in ledger.room.items()}
        plan = Plan(observation.epoch, ledger)
        promotions = sorted((region for region in regions if self._promotable(region, machine.fast)),
                            key=lambda region: (region.heat, region.view.age), reverse=True)
        victims = deque(sorted((region for region in regions if region.bytes_on(machine.fast) > 0),
                               key=lambda region: (region.heat, -region.view.age)))
        for candidate in promotions:
            if plan.budget < PAGE_SIZE:
                break
            self._make_room(plan, machine, candidate, victims)
            part = plan.window(candidate, machine.fast,
                               min(candidate.bytes_off(machine.fast), plan.room(machine.fast), plan.budget))
            if part is not None:  # what a promotion frees on the slow nodes is not counted on
                plan.add(plan.promotions, candidate, part, machine.fast,
                         f"hot: access rate {candidate.heat:.3f} (smoothed), hot {candidate.hot_streak} "
                         "observations running", freed={})
        return plan.actions()

    def _track(self, views: Sequence[RegionView]) -> list[Tracked]:
        """This observation's regions with their heat and hot streak; remembered for the next one."""
        smoothing, hot_rate = self.settings.smoothing, self.settings.hot_rate
        regions = []
        for view, (prior_heat, prior_streak) in zip(views, _carried_over(views, self._memory), strict=True):
            heat = view.access_rate if prior_heat is None else \
                smoothing * view.access_rate + (1 - smoothing) * prior_heat
            streak = prior_streak + 1 if view.access_rate >= hot_rate else 0
            regions.append(Tracked(view, heat, streak))
        self._memory = regions
        return regions

    def _promotable(self, region: Tracked, fast: int) -> bool:
        # Residency is sampled: a few pages' worth off the fast node is estimation noise, not work to do.
        return (region.heat >= self.settings.hot_rate and region.hot_streak >= self.settings.hot_observations
                and region.bytes_off(fast) >= min(region.view.size, MIN_PROMOTION))

    def _make_room(self, plan: Plan, machine: Machine, candidate: Tracked, victims: deque[Tracked]) -> None:
        """Demote the coldest data of the fast node, if clearly colder, until ``candidate`` fits."""
        fast = machine.fast
        wanted = min(candidate.bytes_off(fast), plan.budget)
        if plan.room(fast) >= wanted:
            return
        # Promoting x bytes beyond the free room needs as many demoted first, from the same budget.
        goal = min(wanted, (plan.budget + max(0, plan.room(fast))) // 2)
        while plan.room(fast) < goal and victims and \
                victims[0].heat <= self.settings.colder_ratio * candidate.heat:
            victim = victims[0]
            reason = f"cold: access rate {victim.heat:.3f} (smoothed), room for one at {candidate.heat:.3f}"
            if not self._demote(plan, machine, victim, goal - plan.room(fast), reason):
                break  # out of budget or room elsewhere: the victim stays for a later candidate
            victims.popleft()

    @staticmethod
    def _demote(plan: Plan, machine: Machine, victim: Tracked, need: int, reason: str) -> bool:
        """Move enough of ``victim`` to free about ``need`` bytes of the fast node, to the best target with room."""
        on_fast = victim.bytes_on(machine.fast)
        for node in machine.demotion_targets:
            cost_to_free = -(-need * victim.bytes_off(node) // on_fast)
            part = plan.window(victim, node, min(cost_to_free, plan.budget, plan.room(node)))
            if part is not None:
                plan.add(plan.demotions, victim, part, node, reason,
                         freed={machine.fast: on_fast * (part[1] - part[0]) // victim.view.size})
                return True
        return False


def _carried_over(views: Sequence[RegionView], memory: Sequence[Tracked]) -> list[tuple[float | None, int]]:
    """Each region's previous heat and hot streak, from the remembered regions it overlaps.

    Heat is averaged by overlap; the streak is that of the remembered region
    overlapping most. Both lists are in address order: one sweep.
    """
    carried: list[tuple[float | None, int]] = []
    first = 0
    for view in views:
        while first < len(memory) and memory[first].view.end <= view.start:
            first += 1
        weighted, covered, widest, streak = 0.0, 0, 0, 0
        index = first
        while index < len(memory) and memory[index].view.start < view.end:
            before = memory[index]
            overlap = min(view.end, before.view.end) - max(view.start, before.view.start)
            weighted += overlap * before.heat
            covered += overlap
            if overlap > widest:
                widest, streak = overlap, before.hot_streak
            index += 1
        carried.append((weighted / covered if covered else None, streak))
    return carried


def _start(move: Migrate) -> int:
    return move.start
