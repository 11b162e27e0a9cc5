"""The score of a run: modeled memory time, its lower bound and the oracle.

On a machine without the real devices, wall-clock time cannot show what a
placement is worth, so a run is scored by what its accesses would have cost:

- **access time**: for every epoch and chunk, the chunk's ground-truth reads
  times the read latency plus its writes times the write latency of the
  node(s) its pages were on, each node weighted by the chunk's sampled
  residency share. Latencies are those seen from node 0's CPUs (where the
  workload runs): the device's own, plus the cross-socket link for a remote
  node. A device with a latency model (RAT) is charged at the chunk's access
  rate, (reads + writes) per 4 KiB page per second. A chunk with no sampled
  pages in an epoch (which should not happen) is charged as if it were on its
  slowest node, and listed.
- **migration time**: the bytes the kernel migrated during the run (the
  policy's own moves and the kernel's promotions and demotions) divided by
  the experiment's migration throughput.

``modeled_time_s`` is their sum. Beside it, **wear**: the bytes written to each
node (a write puts one 64-byte line on the medium; residency as above), and for
a device with a rated endurance (full-device writes), how long it would last at
the run's write rate; and **constraints**: the bytes × seconds that regions
holding secrets spent on memory others can read, or regions holding durable
data on memory that loses it without power (a figure a policy should drive to
zero). The **lower bound** puts every chunk on its fastest node
in every epoch, ignores capacity and charges no migration. The **oracle** is
the best placement that respects each node's capacity, chosen with full
knowledge of the ground truth and charged for its migrations
(:mod:`testbed.oracle`): an upper bound on what any policy can achieve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from testbed.ledger import HEADROOM
from testbed.memtouch import RegionLayout
from testbed.model import PAGE_SIZE, Device, HeldData, System
from testbed.oracle import Placement, solve_placement
from testbed.timeline import EpochRecord, RunStart, Timeline

Array = npt.NDArray[np.float64]
Indices = npt.NDArray[np.intp]
Flags = npt.NDArray[np.bool_]

NS = 1e-9
LINE_BYTES = 64  # memtouch touches one cache line per access: a write puts a line on the medium
YEAR_S = 365.25 * 24 * 3600
ORACLE = "oracle"  # the oracle's name among the policies of a summary: held to the policies' migration budget
ORACLE_UNBUDGETED = "oracle-unbudgeted"  # the same oracle moving without limit
BOUNDS = (ORACLE, ORACLE_UNBUDGETED)


class TimelineError(ValueError):
    """A run record whose contents contradict themselves (shapes, node ids)."""


@dataclass(frozen=True)
class RunData:
    """A run record as arrays over epochs k, chunks c (all regions, in order) and nodes n."""

    reads: Array  # [k, c]
    writes: Array  # [k, c]
    residency: Array  # [k, c, n]: shares of the chunk's sampled pages; all 0 where none were sampled
    migrated_bytes: Array  # [k]
    phases: Indices  # [k]
    chunk_bytes: Array  # [c]
    region_of: Indices  # [c]: index of the chunk's region
    interval_s: float

    @property
    def epochs(self) -> int:
        return int(self.reads.shape[0])

    @property
    def sampled(self) -> Flags:
        """[k, c]: whether any of the chunk's pages were sampled in the epoch."""
        return np.asarray(self.residency.sum(axis=2) > 0)

    @property
    def access_rate(self) -> Array:
        """[k, c]: accesses per 4 KiB page per second, what a device's latency model depends on."""
        return np.asarray((self.reads + self.writes) / (self.chunk_bytes / PAGE_SIZE) / self.interval_s)


@dataclass(frozen=True)
class Score:
    access_time_s: float
    migration_time_s: float
    migrated_bytes: int
    lower_bound_s: float  # every chunk on its fastest node, over this run's epochs
    epochs: int
    unsampled: tuple[tuple[int, int, int], ...]  # (epoch, region, chunk) charged on the slowest node

    @property
    def modeled_time_s(self) -> float:
        return self.access_time_s + self.migration_time_s


@dataclass(frozen=True)
class Oracle:
    placement: Placement
    capacity_bytes: tuple[int, ...]  # per node
    headroom_bytes: int
    budget_bytes: float | None = None  # per interval, as the policies had; None: the oracle moved without limit

    @property
    def modeled_time_s(self) -> float:
        return self.placement.total_s


def run_data(timeline: Timeline, node_count: int) -> RunData:
    """The record's epochs as arrays, checked against its start record."""
    regions = timeline.start.regions
    epochs = timeline.epochs
    for record in epochs:
        _check_epoch(record, regions, node_count)
    chunk_bytes = np.concatenate([_chunk_bytes(region) for region in regions]) if regions else np.zeros(0)
    region_of = np.repeat(np.arange(len(regions)), [region.chunks for region in regions])
    return RunData(
        reads=_per_chunk([record.reads for record in epochs], chunk_bytes.size),
        writes=_per_chunk([record.writes for record in epochs], chunk_bytes.size),
        residency=_residency(epochs, chunk_bytes.size, node_count),
        migrated_bytes=np.array([record.migrated_bytes for record in epochs], dtype=float),
        phases=np.array([record.phase for record in epochs], dtype=np.intp),
        chunk_bytes=chunk_bytes.astype(float),
        region_of=region_of.astype(np.intp),
        interval_s=timeline.start.interval_s,
    )


def access_costs(data: RunData, system: System) -> Array:
    """[k, c, n]: seconds the chunk's accesses of epoch k take if all its pages are on node n."""
    initiator = system.initiator_of(0)
    rate = data.access_rate
    per_node = []
    for node in system.nodes:
        perf = system.performance(initiator, node)
        read = _latency_ns(node.device, False, rate) + perf.read_latency_ns - node.device.read_latency_ns
        write = _latency_ns(node.device, True, rate) + perf.write_latency_ns - node.device.write_latency_ns
        per_node.append((data.reads * read + data.writes * write) * NS)
    return np.stack(per_node, axis=2)


def placed_shares(data: RunData, costs: Array) -> Array:
    """[k, c, n]: the residency the score charges: unsampled chunks go to their slowest node."""
    slowest = np.eye(costs.shape[2])[costs.argmax(axis=2)]
    return np.where(data.sampled[..., None], data.residency, slowest)


def score(data: RunData, costs: Array, shares: Array, throughput: float) -> Score:
    """The run's modeled time: ``costs`` ([k, c, n], testbed.score.access_costs) at the residency ``shares``
    (:func:`placed_shares`)."""
    unsampled = np.argwhere(~data.sampled)
    region_starts = np.searchsorted(data.region_of, np.arange(data.region_of.max(initial=-1) + 1))
    return Score(
        access_time_s=float((costs * shares).sum()),
        migration_time_s=float(data.migrated_bytes.sum() / throughput),
        migrated_bytes=int(data.migrated_bytes.sum()),
        lower_bound_s=lower_bound_s(costs),
        epochs=data.epochs,
        unsampled=tuple((int(k), int(data.region_of[c]), int(c - region_starts[data.region_of[c]]))
                        for k, c in unsampled),
    )


@dataclass(frozen=True)
class Wear:
    written_bytes: tuple[float, ...]  # per node
    worn_bytes: float | None  # written to the nodes whose device wears out; None: the system has none
    life_years: float | None  # how long the first of them to wear out would last at the run's write rate;
    # None also when nothing was written to them (worn_bytes says 0)

    @classmethod
    def of(cls, data: RunData, shares: Array, system: System) -> Wear:
        """At the residency the score charges (``shares``, :func:`placed_shares`)."""
        written = (data.writes[..., None] * shares).sum(axis=(0, 1)) * LINE_BYTES
        wearing = [node for node in system.nodes if node.device.endurance_writes]
        if not wearing:
            return cls(tuple(float(v) for v in written), None, None)
        seconds = data.epochs * data.interval_s
        # The medium's life in bytes written is its size times its endurance (wear levelling spreads writes).
        lives = [node.size * (node.device.endurance_writes or 0) / written[node.id] * seconds / YEAR_S
                 for node in wearing if written[node.id] > 0]
        return cls(tuple(float(v) for v in written), float(sum(written[node.id] for node in wearing)),
                   min(lives) if lives else None)


def violation_byte_s(data: RunData, shares: Array, system: System, holds: Sequence[HeldData | None]
                     ) -> float | None:
    """Bytes × seconds that regions holding secrets or durable data (``holds``, per region) spent on memory that
    may not hold them, at the residency the score charges (``shares``); None when no region holds either."""
    if not any(holds):
        return None
    regions = int(data.region_of.max(initial=-1)) + 1
    if len(holds) != regions:
        raise TimelineError(f"the manifest says what {len(holds)} regions hold, the run has {regions}")
    forbidden = np.zeros((len(holds), shares.shape[2]))
    for region, kind in enumerate(holds):
        for node in system.nodes:
            forbidden[region, node.id] = kind is not None and not node.device.may_hold(kind)
    misplaced = (shares * forbidden[data.region_of][None]).sum(axis=2)  # [k, c]
    return float((misplaced * data.chunk_bytes).sum() * data.interval_s)


def score_run(timeline: Timeline, system: System, throughput: float) -> Score:
    return score_data(run_data(timeline, len(system.nodes)), system, throughput)


def score_data(data: RunData, system: System, throughput: float) -> Score:
    costs = access_costs(data, system)
    return score(data, costs, placed_shares(data, costs), throughput)


def lower_bound_s(costs: Array) -> float:
    """Every chunk on its fastest node in every epoch: no capacity, no migration."""
    return float(costs.min(axis=2, initial=np.inf).sum()) if costs.size else 0.0


def capacities(start: RunStart, node_count: int, headroom: int = HEADROOM) -> Array:
    """[n]: bytes of the workload each node may hold; 0 for nodes the guest lacked.

    What the workload held on a node at the start plus the node's free memory above the kernel's headroom,
    which no policy's move may take either: what the workload already held counts fully, so the run's own
    start is always a feasible placement."""
    capacity = np.zeros(node_count)
    for node in start.nodes:
        if not 0 <= node.id < node_count:
            raise TimelineError(f"the start record names node {node.id}; the system has nodes 0-{node_count - 1}")
        capacity[node.id] = node.workload_bytes + max(0, node.free_bytes - headroom)
    return capacity


def oracle(data: RunData, costs: Array, start: RunStart, throughput: float,
           headroom: int = HEADROOM, *, budget_bytes: float | None = None) -> Oracle:
    """The best capacity-feasible placement, starting from the run's first measured residency.

    With ``budget_bytes`` it moves at most that many bytes per interval, as the policies may."""
    capacity = capacities(start, costs.shape[2], headroom)
    initial = placed_shares(data, costs)[0] if data.epochs else np.zeros(costs.shape[1:])
    placement = solve_placement(costs, data.chunk_bytes, capacity, initial, throughput, data.phases,
                                budget_bytes=budget_bytes)
    return Oracle(placement, tuple(int(value) for value in capacity), headroom, budget_bytes)


def _latency_ns(device: Device, write: bool, rate: Array) -> Array:
    if device.latency_model is None:
        return np.full(rate.shape, device.access_latency_ns(write, 0.0))
    return np.asarray(np.vectorize(lambda r: device.access_latency_ns(write, float(r)), otypes=[float])(rate))


def _chunk_bytes(region: RegionLayout) -> Array:
    return np.minimum(region.chunk, region.size - np.arange(region.chunks) * region.chunk).astype(float)


def _check_epoch(record: EpochRecord, regions: tuple[RegionLayout, ...], node_count: int) -> None:
    for name, rows in (("reads", record.reads), ("writes", record.writes), ("residency", record.residency)):
        if len(rows) != len(regions):
            raise TimelineError(f"epoch {record.epoch}: {name!r} has {len(rows)} regions, the start record "
                                f"{len(regions)}")
        for region, row in zip(regions, rows, strict=True):
            if len(row) != region.chunks:
                raise TimelineError(f"epoch {record.epoch}: {name!r} of region {region.name!r} has {len(row)} "
                                    f"chunks, the start record {region.chunks}")
    for region, row in zip(regions, record.residency, strict=True):
        for chunk in row:
            for node, pages in chunk.items():
                if not 0 <= node < node_count or pages < 0:
                    raise TimelineError(f"epoch {record.epoch}: region {region.name!r} has {pages} pages on "
                                        f"node {node}; the system has nodes 0-{node_count - 1}")


def _per_chunk(per_epoch: list[tuple[tuple[int, ...], ...]], chunks: int) -> Array:
    return np.array([[count for row in regions for count in row] for regions in per_epoch],
                    dtype=float).reshape(len(per_epoch), chunks)


def _residency(epochs: tuple[EpochRecord, ...], chunks: int, node_count: int) -> Array:
    pages = np.zeros((len(epochs), chunks, node_count))
    for k, record in enumerate(epochs):
        flat = [chunk for region in record.residency for chunk in region]
        for c, chunk in enumerate(flat):
            for node, count in chunk.items():
                pages[k, c, node] = count
    totals = pages.sum(axis=2, keepdims=True)
    return np.asarray(np.divide(pages, totals, out=np.zeros_like(pages), where=totals > 0))
