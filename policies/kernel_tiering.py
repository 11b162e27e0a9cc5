"""``kernel-tiering``: the kernel's own memory tiering, what TPP became in Linux.

NUMA balancing in tiering mode (2) samples page accesses with hinting faults and
promotes pages of slow tiers that are touched twice within a short window to the
fast tier; with demotion enabled, reclaim on the fast tier moves cold pages to
the next tier instead of dropping or swapping them. Nothing to decide afterwards.
"""

from __future__ import annotations

from policies.base import Policy
from testbed.values import Action, Observation, PolicyContext, Setup, TieringSettings

MEMORY_TIERING = 2  # /proc/sys/kernel/numa_balancing: NUMA_BALANCING_MEMORY_TIERING


class KernelTiering(Policy):
    name = "kernel-tiering"

    def setup(self, context: PolicyContext) -> Setup:
        return Setup(tiering=TieringSettings(numa_balancing=MEMORY_TIERING, demotion_enabled=True),
                     notes=("numa_balancing=2 (promotion on hinting faults), demotion_enabled=true (on reclaim)",))

    def decide(self, observation: Observation) -> list[Action]:
        return []
