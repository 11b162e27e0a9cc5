"""What the backend knows about each node's memory, and what a region costs there.

DAMON samples one page of each region every ``damon_sample_s`` and reports the
share of samples that found it accessed. For accesses arriving at random at λ
per page per second that share is 1 - exp(-λ·sample), so λ = -ln(1 - share) /
sample (a saturated share says only "at least this often"). Soft-dirty says
which share of a region's pages were written at least once in the interval;
by the same reasoning writes arrive at -ln(1 - share) / interval per page. That
is the estimate wherever the share says something. A region with nearly every
page written says only "at least this often", and its writes could be any part
of its accesses: there they are taken as that share of the accesses, the side
that spares a medium that wears or writes slowly. (Taking every region's writes
as its written share of its accesses would call a read-mostly index whose pages
are each written now and then a write-hot region.) Where DAMON barely sees a
region, the written share still shows its writes; reads are the rest of the
accesses. A region's cost on
a node, in nanoseconds of memory time per second, is

    pages × (reads × read latency + writes × write latency × (1 + wear penalty if the medium wears))

For a device whose latency depends on access frequency, the read latency falls
linearly from its worst case (rate 0) to its fast case (the hot rate and
above); writes keep their ratio to reads.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from policies.device_profile import DeviceProfile
from policies.region_table import Array, RegionTable
from testbed.model import PAGE_SIZE
from testbed.values import NodeView


@dataclass(frozen=True)
class NodeModel:
    """What the backend knows about one node's memory."""

    id: int
    read_latency_ns: float  # a frequency-dependent device's worst case
    write_latency_ns: float
    wears_out: bool = False
    hot_latency_ns: float | None = None  # frequency-dependent devices: the fast case ...
    hot_access_rate: float | None = None  # ... for pages used at least this often per second

    def __post_init__(self) -> None:
        if not (self.read_latency_ns > 0 and self.write_latency_ns > 0):
            raise ValueError(f"node {self.id}: latencies must be positive, got {self.read_latency_ns} ns read, "
                             f"{self.write_latency_ns} ns write")
        if (self.hot_latency_ns is None) != (self.hot_access_rate is None):
            raise ValueError(f"node {self.id}: a fast case needs both its latency and its access rate")
        if self.hot_latency_ns is not None and not 0 < self.hot_latency_ns < self.read_latency_ns:
            raise ValueError(f"node {self.id}: the fast case ({self.hot_latency_ns} ns) must be faster than the "
                             f"worst case ({self.read_latency_ns} ns)")
        if self.hot_access_rate is not None and not self.hot_access_rate > 0:
            raise ValueError(f"node {self.id}: the hot access rate must be positive, got {self.hot_access_rate}")

    def read_latency_at(self, accesses_per_page_per_s: Array) -> Array | float:
        """The read latency of pages used this often: the worst case falls linearly to the fast case."""
        if self.hot_latency_ns is None or self.hot_access_rate is None:
            return self.read_latency_ns
        hotness = np.minimum(accesses_per_page_per_s / self.hot_access_rate, 1.0)
        return self.read_latency_ns + (self.hot_latency_ns - self.read_latency_ns) * hotness

    @classmethod
    def from_profile(cls, node_id: int, profile: DeviceProfile) -> NodeModel | None:
        """The model of a profile (HMAT already combined in); None without both latencies.

        A fast case is used only when the text said the latency depends on access
        frequency and the fast case is really faster than the worst case."""
        read, write = profile.read_latency_ns, profile.write_latency_ns
        if read is None or write is None:
            return None
        hot, rate = profile.hot_latency_ns, profile.hot_access_rate
        fast = bool(profile.frequency_dependent_latency) and hot is not None and rate is not None and hot < read
        return cls(node_id, read, write, wears_out=bool(profile.wears_out),
                   hot_latency_ns=hot if fast else None, hot_access_rate=rate if fast else None)

    @classmethod
    def from_hmat(cls, view: NodeView) -> NodeModel | None:
        """The model the guest's HMAT alone gives (no wear, no fast case: HMAT cannot say)."""
        if view.read_latency_ns is None or view.write_latency_ns is None:
            return None
        return cls(view.id, view.read_latency_ns, view.write_latency_ns)


@dataclass(frozen=True)
class CostModel:
    """Access rates from DAMON's shares, and what they cost on each node a model describes."""

    models: Mapping[int, NodeModel]
    interval_s: float
    damon_sample_s: float
    saturation: float  # sampled shares above this say only "at least this often"
    unmeasured_written_fraction: float  # when the guest could not tell
    wear_penalty: float  # a write to a medium that wears costs this much more

    def rates(self, table: RegionTable) -> tuple[Array, Array]:
        """Reads and writes per page per second of each region (see the module docstring)."""
        # Logarithms in float32: several times faster here, and the shares are small numbers anyway.
        # ln(1 / (1 - share)) rather than -ln(1 - share): no negative zeros.
        saturation = np.float32(self.saturation)
        accesses = np.log(1 / (1 - np.minimum(table.access_rate, saturation))) / self.damon_sample_s
        unmeasured = np.isnan(table.written)
        written = np.clip(np.where(unmeasured, np.float32(0), table.written), 0, 1)
        estimated = np.log(1 / (1 - np.minimum(written, saturation))) / self.interval_s
        writes = np.where(written >= saturation, np.maximum(accesses * written, estimated), estimated)
        if unmeasured.any():
            writes = np.where(unmeasured, accesses * np.float32(self.unmeasured_written_fraction), writes)
        return np.maximum(accesses - writes, 0).astype(np.float64), writes.astype(np.float64)

    def costs(self, sizes: Array, reads: Array, writes: Array, node_ids: Sequence[int]) -> Array:
        """[node, region]: nanoseconds of memory time per second, were the region on that node."""
        pages = sizes / PAGE_SIZE
        page_reads, page_writes = pages * reads, pages * writes
        costs = np.empty((len(node_ids), len(sizes)))
        for column, node in enumerate(node_ids):
            model = self.models[node]
            write_factor = model.write_latency_ns / model.read_latency_ns
            if model.wears_out:
                write_factor *= 1 + self.wear_penalty
            costs[column] = (page_reads + page_writes * write_factor) * model.read_latency_at(reads + writes)
        return costs

