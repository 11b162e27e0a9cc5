"""The policy interface: ``setup`` once per run, then ``decide`` once per interval.

What a policy sees and may ask for are the values of :mod:`testbed.values`;
the orchestrator validates its answers against the machine before they reach
the guest. One file per policy in this package; ``policies.registry`` maps
names to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from testbed.values import Action, Observation, PolicyContext, PolicyKind, Setup


class Policy(ABC):
    """A placement policy. ``setup`` once per run, then ``decide`` once per interval."""

    name: str
    kind: PolicyKind = PolicyKind.BASELINE
    # A text-blind twin (policies.registry): the orchestrator withholds the device and system texts from it.
    text_blind: bool = False

    def setup(self, context: PolicyContext) -> Setup:
        return Setup()

    @abstractmethod
    def decide(self, observation: Observation) -> list[Action]:
        """Actions for the next interval; raising marks this policy's run as failed."""

    def usage(self) -> dict[str, float]:
        """Costs worth reporting (LLM calls, tokens, seconds); empty for most policies."""
        return {}
