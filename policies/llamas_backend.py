"""``llamas-backend``: the LLaMaS backend alone, on the HMAT the guest reports, without reading any text.

An ablation of ``llamas``, which builds on it: the same backend, with the node
models read from the devices' text instead. The backend is the only one to
place pages: its setup turns the kernel's NUMA balancing off, which would
otherwise pull whatever the CPU touches into the room the backend makes,
whatever the devices.
"""

from __future__ import annotations

from collections.abc import Mapping

from policies.backend import Backend, BackendSettings
from policies.base import Policy
from policies.cost_model import NodeModel
from testbed.values import Action, Observation, PolicyContext, Setup, TieringSettings

# The backend places the pages itself. The kernel's NUMA balancing would move them too, on hinting faults,
# to the node of the CPU that touches them whatever the devices: into the room the backend makes for other
# data (read-only data onto DRAM, where write-hot data should go), and back after the backend moves them.
SOLE_PLACER = TieringSettings(numa_balancing=0, demotion_enabled=None)
SOLE_PLACER_NOTE = "numa_balancing=0: the backend alone places pages (the kernel's NUMA balancing would fight it)"


class BackendPolicy(Policy):
    """The backend alone, on the HMAT the guest reports: what the numbers say without reading any text."""

    name = "llamas-backend"

    def __init__(self, settings: BackendSettings | None = None) -> None:
        self.settings = settings or BackendSettings()
        self._backend: Backend | None = None

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
        return Setup(tiering=SOLE_PLACER, notes=(*notes, SOLE_PLACER_NOTE))

    def decide(self, observation: Observation) -> list[Action]:
        return [*self.backend.decide(observation)]
