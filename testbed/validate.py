"""Checking a policy's actions against the machine before they reach the guest.

A policy may propose anything; what is sent is only what the machine can do:
nodes that exist and have room, ranges the process has, the interval's
migration budget (all counted by :mod:`testbed.ledger`), CPUs that exist. Each
refusal is recorded with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.ledger import Ledger, Refusal, Refused
from testbed.values import Action, Observation, Place


@dataclass(frozen=True)
class Verdict:
    accepted: tuple[Action, ...]
    refused: tuple[tuple[Action, Refused], ...]

    @property
    def rejected(self) -> tuple[tuple[Action, str], ...]:
        """The refused actions with the reason in words, as the run record keeps them."""
        return tuple((action, refused.text) for action, refused in self.refused)


def validate(actions: list[Action], observation: Observation, budget: int) -> Verdict:
    accepted: list[Action] = []
    refused: list[tuple[Action, Refused]] = []
    ledger = Ledger.of(observation.nodes, budget)
    cpus = {cpu for node in observation.nodes for cpu in node.cpus}
    for action in actions:
        if isinstance(action, Place):
            problem = None if action.cpus and set(action.cpus) <= cpus else \
                Refused(Refusal.UNKNOWN_CPUS, f"CPUs {list(action.cpus)} do not all exist")
        else:
            problem = ledger.admit(action, observation.regions)
        if problem is None:
            accepted.append(action)
        else:
            refused.append((action, problem))
    return Verdict(tuple(accepted), tuple(refused))
