"""``interleave``: the workload's pages spread round-robin over every node from the start (numactl), then left."""

from __future__ import annotations

from policies.base import Policy
from testbed.values import Action, MemoryPolicy, MemoryPolicyKind, Observation, PolicyContext, Setup


class Interleave(Policy):
    name = "interleave"

    def setup(self, context: PolicyContext) -> Setup:
        return Setup(memory=MemoryPolicy(MemoryPolicyKind.INTERLEAVE, "all"),
                     notes=("pages interleaved over all nodes at allocation (numactl --interleave=all)",))

    def decide(self, observation: Observation) -> list[Action]:
        return []
