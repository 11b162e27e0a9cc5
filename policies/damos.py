"""``damos``: DAMON-based operation schemes in the kernel move the pages; the policy only sets them up.

Two ``paddr`` schemes of Linux 6.12, each on a kdamond of its own that watches only
the memory it acts on (so its quota ranks only regions it may move):

- ``migrate_hot`` on the slow nodes' memory, to the fastest node, of the pages found
  accessed when it applies (a "young" filter: a region is hot on average, and early on,
  before DAMON has split them, regions are large and mix hot pages with cold ones);
- ``migrate_cold`` on the fastest node's memory, to the next tier, sparing pages found
  accessed.

This is how the kernel's DAMON-based tiering is set up upstream, less the quota goals
on nodes' free memory that 6.12 lacks.

"Fastest" and "next tier" come from the guest's memory tiers and HMAT
(:mod:`policies.tiers`). Nothing happens in ``decide``: the kernel acts on its own.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from policies.base import Policy
from policies.tiers import demotion_targets, speed_order
from testbed.model import PAGE_SIZE
from testbed.values import MAX_UINT, Action, Monitoring, Observation, PolicyContext, Scheme, SchemeAction, Setup

# The orchestrator starts the schemes with guestd's default monitoring attributes
# (Setup carries none), so access counts are out of this many samples per aggregation.
MONITORING = Monitoring()
# When a quota binds, rank hot regions by access frequency and age alike and ignore their
# size, as the kernel's own tiering sample does (samples/damon/mtier.c). Cold regions all
# rank alike, so the quota sweeps the fast node in address order: ranked by age it would
# go to free memory first (untouched since boot, the oldest), which cannot move but is
# charged to the quota all the same.
HOT_WEIGHTS = (0, 1000, 1000)
COLD_WEIGHTS = (0, 0, 0)


@dataclass(frozen=True)
class DamosSettings:
    # Hot: at least this share of an aggregation's samples saw an access. 10% (2 of 20) rather
    # than any access keeps a large, rarely touched region, whose one sampled page is hit now and
    # then, from being promoted only to turn cold again.
    hot_share: float = 0.1
    # Cold: no access seen for this many intervals. Two intervals (20 aggregations at 1 s) is a
    # clear gap from "hot" (the hysteresis between the two schemes) yet reacts within a phase.
    cold_intervals: float = 2.0

    def __post_init__(self) -> None:
        if not 0 < self.hot_share <= 1:
            raise ValueError(f"hot_share must be in (0, 1], got {self.hot_share}")
        if self.cold_intervals <= 0:
            raise ValueError(f"cold_intervals must be positive, got {self.cold_intervals}")


class Damos(Policy):
    name = "damos"

    def __init__(self, settings: DamosSettings = DamosSettings()) -> None:
        self.settings = settings

    def setup(self, context: PolicyContext) -> Setup:
        order = speed_order(context.nodes)
        if len(order) < 2:
            return Setup(notes=("one memory node: no DAMOS schemes",))
        fastest, slower = order[0], demotion_targets(context.nodes)[0]
        samples = MONITORING.aggr_us / MONITORING.sample_us
        aggregations = context.interval_s * 1e6 / MONITORING.aggr_us
        # The quota is the policies' common migration budget: half of it each way per interval,
        # so promotions and demotions together never move more than a user-space policy may.
        # No time quota: it would tie the bytes moved to the speed of the emulation.
        quota = max(PAGE_SIZE, context.migration_budget // 2)
        reset_ms = max(1, round(context.interval_s * 1000))
        promote = Scheme(SchemeAction.MIGRATE_HOT, fastest.id, nodes=tuple(node.id for node in order[1:]),
                         nr_accesses=(math.ceil(self.settings.hot_share * samples), MAX_UINT),
                         quota_bytes=quota, quota_reset_ms=reset_ms, quota_weights=HOT_WEIGHTS, young=True)
        demote = Scheme(SchemeAction.MIGRATE_COLD, slower.id, nodes=(fastest.id,), nr_accesses=(0, 0),
                        age=(math.ceil(self.settings.cold_intervals * aggregations), MAX_UINT),
                        quota_bytes=quota, quota_reset_ms=reset_ms, quota_weights=COLD_WEIGHTS, young=False)
        schemes = (promote, demote)
        return Setup(damos=schemes, notes=(
            f"DAMOS: hot regions of nodes {list(promote.nodes or ())} to node {fastest.id}, cold regions of node "
            f"{fastest.id} to node {slower.id}; at most {quota} bytes each way per {reset_ms} ms",))

    def decide(self, observation: Observation) -> list[Action]:
        return []
