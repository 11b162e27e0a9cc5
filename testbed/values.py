"""The vocabulary both sides speak: plain frozen values, no I/O.

Policies (``policies/``) and the host (orchestrator, validator, score, guest
client) import these and nothing else from each other. A policy sees what an
operating system sees — its NUMA nodes as the guest kernel reports them
(sizes, free memory, tiers, HMAT), the watched process's address-space regions
with DAMON access frequency, age and write intensity, and where those regions'
pages are — never the workload's ground truth and never the device YAML's
numbers. It answers with actions and a setup; the orchestrator validates them
against the machine (:mod:`testbed.ledger`) before they reach the guest.

How these travel to the guest daemon (JSON field names, replies) is the guest
client's business (:mod:`testbed.channel`); the daemon has its own parser.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

MAX_ULONG = (1 << 64) - 1
MAX_UINT = (1 << 32) - 1  # DAMON's nr_accesses and age are unsigned int in the kernel


class PolicyKind(StrEnum):
    BASELINE = "baseline"
    LLM = "llm"
    TWIN = "twin"  # an LLM policy's own code with the device and system texts withheld: HMAT only
    BOUND = "bound"  # uses ground truth: an upper bound on what a policy can do, not a policy


@dataclass(frozen=True)
class AddressRange:
    """Part of a process's address space."""

    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length


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

    @property
    def has_memory(self) -> bool:
        return self.total_bytes > 0


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
class BufferRange:
    """Where a hinted buffer lies once the program has mapped it: the program's own annotation, as a named
    mapping shows in /proc/PID/maps, with where its pages are (sampled), as /proc/PID/numa_maps shows."""

    name: str
    start: int
    end: int
    nodes: dict[int, int] = field(default_factory=dict)  # resident bytes on each node (sampled)


@dataclass(frozen=True)
class Observation:
    """What a policy sees at the end of an interval."""

    epoch: int
    time: float  # guest monotonic seconds
    interval_s: float
    nodes: tuple[NodeView, ...]
    regions: tuple[RegionView, ...]
    resident: dict[int, int]  # the process's bytes on each node
    vmstat_delta: dict[str, int]  # kernel counters since the previous observation
    buffers: tuple[BufferRange, ...] = ()  # the hinted buffers (PolicyContext.hints); empty without hints

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
    """What a policy knows before the run: the machine as described in text and as the guest sees it.

    Only what an OS could know: the administrator's texts, the guest's nodes (HMAT) and, when enabled,
    the program's own annotations of its buffers. Never the experiment's or the workload's narrative."""

    system_description: str
    device_descriptions: dict[int, str]  # node id -> the device's plain text description
    nodes: tuple[NodeView, ...]
    interval_s: float
    migration_budget: int  # bytes per interval
    damon_sample_s: float  # DAMON's sampling interval: an access_rate of 1 means at least one access per sample
    # Empty unless the experiment enables program-aware hints; then every policy gets them.
    hints: tuple[RegionHint, ...]
    run_dir: Path  # where a policy may write its own records (LLM transcripts)
    decision_deadline_s: float = 0.5  # a decide() slower than this is skipped for the interval


class MemoryPolicyKind(StrEnum):
    INTERLEAVE = "interleave"
    MEMBIND = "membind"
    PREFERRED = "preferred"


@dataclass(frozen=True)
class MemoryPolicy:
    """A numactl memory policy for a run: ``interleave``/``membind`` take nodes or "all", ``preferred`` one node."""

    kind: MemoryPolicyKind
    nodes: tuple[int, ...] | str = "all"

    def __post_init__(self) -> None:
        if self.kind == MemoryPolicyKind.PREFERRED and (isinstance(self.nodes, str) or len(self.nodes) != 1):
            raise ValueError(f"a preferred memory policy names one node, got {self.nodes!r}")


@dataclass(frozen=True)
class TieringSettings:
    """The kernel settings that decide where pages go; None leaves a setting as it is."""

    numa_balancing: int | None = None  # 0 off, 1 NUMA balancing, 2 memory tiering, 3 both
    demotion_enabled: bool | None = None
    transparent_hugepage: str | None = None  # always, madvise or never
    zone_reclaim_mode: int | None = None  # 0: allocate on another node before reclaiming this one


@dataclass(frozen=True)
class Monitoring:
    """DAMON's monitoring attributes: intervals in microseconds and the region count bounds."""

    sample_us: int = 5_000
    aggr_us: int = 100_000
    update_us: int = 1_000_000
    min_regions: int = 10
    max_regions: int = 1_000


class SchemeAction(StrEnum):
    """DAMOS actions on physical memory in Linux 6.12."""

    MIGRATE_HOT = "migrate_hot"
    MIGRATE_COLD = "migrate_cold"
    PAGEOUT = "pageout"
    LRU_PRIO = "lru_prio"
    LRU_DEPRIO = "lru_deprio"
    STAT = "stat"


@dataclass(frozen=True)
class Scheme:
    """One DAMOS scheme.  Access-pattern maxima default to "anything": the kernel's default is 0.

    ``nodes`` names the memory the scheme acts on; schemes with different nodes run
    on kdamonds of their own, so a quota ranks only the regions the scheme may act on.
    """

    action: SchemeAction
    target_node: int | None = None
    size: tuple[int, int] = (0, MAX_ULONG)  # bytes
    nr_accesses: tuple[int, int] = (0, MAX_UINT)  # samples that saw an access, per aggregation
    age: tuple[int, int] = (0, MAX_UINT)  # aggregation intervals
    quota_ms: int = 0
    quota_bytes: int = 0
    quota_reset_ms: int = 0
    apply_interval_us: int = 0  # 0: every aggregation interval
    # Per mille weights of size, access frequency and age in ranking regions once the
    # quota binds; all 0 (the kernel's default) ranks every region the same.
    quota_weights: tuple[int, int, int] = (0, 0, 0)
    nodes: tuple[int, ...] | None = None  # None: the nodes of the damos request
    # A page-level check when the action applies: True acts only on pages accessed since
    # DAMON last looked, False only on the others (a "young" filter); None on every page.
    young: bool | None = None


@dataclass(frozen=True)
class Setup:
    """What a policy asks of the machine before the workload starts."""

    memory: MemoryPolicy | None = None  # a NUMA memory policy for the workload (numactl)
    tiering: TieringSettings | None = None  # the kernel's own tiering knobs
    damos: tuple[Scheme, ...] = ()  # DAMON-based schemes run by the kernel
    placement: dict[str, int] = field(default_factory=dict)  # hinted buffer name -> node, applied after first touch
    notes: tuple[str, ...] = field(default=())  # things worth a line in the report
