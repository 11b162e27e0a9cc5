"""``llamas-backend``: the LLaMaS backend alone, on the HMAT the guest reports, without reading any text.

An ablation of ``llamas``, which builds on it: the same backend, with the node
models read from the devices' text instead. Like every policy it starts from
the orchestrator's declared kernel state, NUMA balancing and demotion off, so
the backend is the only one to place pages.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.backend import Backend, BackendSettings
from policies.base import Policy
from policies.constraints import Holdings
from policies.cost_model import NodeModel
from testbed.values import Action, Observation, PolicyContext, Setup


class BackendPolicy(Policy):
    """The backend alone, on the HMAT the guest reports: what the numbers say without reading any text."""

    name = "llamas-backend"

    def __init__(self, settings: BackendSettings | None = None) -> None:
        self.settings = settings or BackendSettings()
        self._backend: Backend | None = None
        self.holdings = Holdings({}, (), ())  # what the texts confine (policies.constraints): nothing here

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
        return Setup(notes=notes)

    def decide(self, observation: Observation) -> list[Action]:
        self.backend.confinements = self.holdings.confinements(observation.buffers)
        return [*self.backend.decide(observation)]
