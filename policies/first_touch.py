"""``first-touch``: Linux's default placement. A page stays on the node of the CPU that first wrote it."""

from __future__ import annotations

from policies.base import Policy
from testbed.values import Action, Observation


class FirstTouch(Policy):
    name = "first-touch"

    def decide(self, observation: Observation) -> list[Action]:
        return []
