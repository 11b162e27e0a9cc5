"""The policy interface: what a placement policy sees, and what it may ask for.

A policy sees what an operating system sees — its NUMA nodes as the guest
kernel reports them (sizes, free memory, tiers, HMAT), the watched process's
address-space regions with DAMON access frequency, age and write intensity,
and where those regions' pages are — never the workload's ground truth and
never the device YAML's numbers (the LLaMaS policy reads the devices' plain
text descriptions instead). It answers each observation with actions; the
orchestrator validates them against the machine before they reach the guest.

One file per policy in this package; ``policies.registry`` maps names to them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from guest.guestd.damon import Scheme
from testbed.guest_client import MemoryPolicy, TieringSettings


class PolicyKind(StrEnum):
    BASELINE = "baseline"
    LLM = "llm"
    BOUND = "bound"  # uses ground truth: an upper bound on what a policy can do, not a policy


@dataclass(frozen=True)
class NodeView:
    """A NUMA node as the guest kernel reports it."""

    id: int
    total_bytes: int
    free_bytes: int
    cpus: tuple[int, ...]
    tier: int | None  # Linux memory tier id; lower is faster
    read_latency_ns: float | None  # HMAT access0 from the node's own initiators, when described
    write_latency_ns: float | None
    read_bandwidth: float | None  # bytes per second
    write_bandwidth: float | None


@dataclass(frozen=True)
class RegionView:
    """One DAMON region of the watched process."""

    id: int  # valid for one observation
    start: int
    end: int
    access_rate: float  # share of DAMON samples that saw an access in the last aggregation, 0..1
    age: int  # aggregations for which the access rate stayed similar
    written_fraction: float | None  # share of resident pages written since the previous observation
    nodes: dict[int, int]  # resident bytes on each node (sampled)

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Observation:
    epoch: int
    time: float  # guest monotonic seconds
    interval_s: float
    nodes: tuple[NodeView, ...]
    regions: tuple[RegionView, ...]
    resident: dict[int, int]  # the process's bytes on each node
    vmstat_delta: dict[str, int]  # kernel counters since the previous observation

    def node(self, node_id: int) -> NodeView:
        return next(node for node in self.nodes if node.id == node_id)


@dataclass(frozen=True)
class Migrate:
    """Move the pages of [start, end) of the watched process to ``node``."""

    start: int
    end: int
    node: int
    reason: str = ""

    @property
    def size(self) -> int:
        return self.end - self.start


@dataclass(frozen=True)
class Place:
    """Run the watched process's threads on these CPUs."""

    cpus: tuple[int, ...]
    reason: str = ""


Action = Migrate | Place


@dataclass(frozen=True)
class RegionHint:
    """A named buffer of the workload and what its author says about it (program-aware hints).

    Setup runs before the workload maps its memory, so hints name buffers rather than
    addresses; a policy places them by name with ``Setup.placement``.
    """

    name: str
    size: int
    description: str


@dataclass(frozen=True)
class PolicyContext:
    """What a policy knows before the run: the machine as described in text and as the guest sees it."""

    system_description: str
    device_descriptions: dict[int, str]  # node id -> the device's plain text description
    nodes: tuple[NodeView, ...]
    interval_s: float
    migration_budget: int  # bytes per interval
    damon_sample_s: float  # DAMON's sampling interval: an access_rate of 1 means at least one access per sample
    workload_description: str
    hints: tuple[RegionHint, ...]  # empty unless the experiment enables program-aware hints
    run_dir: Path  # where a policy may write its own records (LLM transcripts)
    decision_deadline_s: float = 0.5  # a decide() slower than this is skipped for the interval


@dataclass(frozen=True)
class Setup:
    """What a policy asks of the machine before the workload starts."""

    memory: MemoryPolicy | None = None  # a NUMA memory policy for the workload (numactl)
    tiering: TieringSettings | None = None  # the kernel's own tiering knobs
    damos: tuple[Scheme, ...] = ()  # DAMON-based schemes run by the kernel
    placement: dict[str, int] = field(default_factory=dict)  # hinted buffer name -> node, applied after first touch
    notes: tuple[str, ...] = field(default=())  # things worth a line in the report


class Policy(ABC):
    """A placement policy. ``setup`` once per run, then ``decide`` once per interval."""

    name: str
    kind: PolicyKind = PolicyKind.BASELINE

    def setup(self, context: PolicyContext) -> Setup:
        return Setup()

    @abstractmethod
    def decide(self, observation: Observation) -> list[Action]:
        """Actions for the next interval; raising marks this policy's run as failed."""

    def usage(self) -> dict[str, float]:
        """Costs worth reporting (LLM calls, tokens, seconds); empty for most policies."""
        return {}
