"""The typed machine model: devices, memory nodes, sockets, systems.

Everything here is immutable and validated by :mod:`testbed.catalog`; the
renderers and the scorer only ever see these types.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

PAGE_SIZE = 4096
MEMORY_BLOCK = 128 * 2**20  # the guest onlines hotplugged memory in blocks of this size
# Linux memory tiers (mm/memory-tiers.c): tiers are 128 wide and named by their
# start divided by 128; DRAM sits in the middle of tier 4 (abstract distance 576).
MEMTIER_CHUNK_SIZE = 128
MEMTIER_ADISTANCE_DRAM = 4 * MEMTIER_CHUNK_SIZE + MEMTIER_CHUNK_SIZE // 2
LOCAL_DISTANCE = 10


class DeviceKind(StrEnum):
    DRAM = "dram"
    CXL = "cxl"
    PMEM = "pmem"
    HBM = "hbm"
    OTHER = "other"


class HeldData(StrEnum):
    """What a workload region holds, when it matters where it lives (the score's constraints column)."""

    SECRETS = "secrets"  # keys, credentials: never on memory others can read
    DURABLE = "durable"  # a journal that must survive power loss: only on persistent memory


class Emulation(StrEnum):
    """How the VM presents a device to the guest kernel."""

    NUMA_NODE = "numa-node"
    CXL_TYPE3 = "cxl-type3"
    NVDIMM = "nvdimm"


@dataclass(frozen=True)
class FrequencyLatency:
    """Latency that falls as data is accessed more often (the paper's RAT).

    A page accessed ``hot_rate`` times per second or more costs ``hot_latency_ns``;
    below that the latency rises linearly towards ``cold_latency_ns`` at rate 0.
    """

    hot_latency_ns: float
    cold_latency_ns: float
    hot_rate: float  # accesses per 4 KiB page per second

    def latency_ns(self, accesses_per_page_per_s: float) -> float:
        hotness = min(1.0, max(0.0, accesses_per_page_per_s / self.hot_rate))
        return self.cold_latency_ns + (self.hot_latency_ns - self.cold_latency_ns) * hotness


@dataclass(frozen=True)
class Device:
    name: str
    kind: DeviceKind
    read_latency_ns: float
    write_latency_ns: float
    read_bandwidth: float  # bytes per second
    write_bandwidth: float
    emulation: Emulation
    description: str
    latency_model: FrequencyLatency | None = None
    source: Path | None = None
    # Full-device writes the medium takes before it wears out (a rated PBW over the capacity); for the score's
    # wear column only: no policy is told it (a policy learns that a device wears only from its text).
    endurance_writes: float | None = None
    # For the score's constraints column only, like the endurance: whether others can read what the memory holds
    # (a pool shared with other hosts, a link without encryption), and whether it keeps its data without power.
    exposed: bool = False
    persistent: bool = False

    def may_hold(self, kind: HeldData) -> bool:
        """Whether data of this kind may live here (see testbed.score's constraints)."""
        return not self.exposed if kind == HeldData.SECRETS else self.persistent

    def access_latency_ns(self, write: bool, accesses_per_page_per_s: float) -> float:
        """What one access costs, including the device's own latency model."""
        nominal = self.write_latency_ns if write else self.read_latency_ns
        if self.latency_model is None:
            return nominal
        # The model gives the read latency; writes keep their ratio to reads.
        scale = nominal / self.read_latency_ns
        return self.latency_model.latency_ns(accesses_per_page_per_s) * scale


@dataclass(frozen=True)
class MemoryNode:
    """One NUMA node of the machine: a device, a size and (maybe) CPUs."""

    id: int
    device: Device
    size: int  # bytes
    socket: int
    cpus: tuple[int, ...] = ()

    @property
    def emulation(self) -> Emulation:
        return self.device.emulation

    @property
    def backing_size(self) -> int:
        """Host memory behind the node. An NVDIMM gets one more block: its namespace info
        block and alignment cost the guest one block, and the guest should see ``size``."""
        return self.size + MEMORY_BLOCK if self.emulation is Emulation.NVDIMM else self.size


@dataclass(frozen=True)
class Link:
    """What crossing from one socket to another adds to an access."""

    latency_ns: float
    bandwidth: float


@dataclass(frozen=True)
class Performance:
    """Latency (ns) and bandwidth (bytes/s) from an initiator to a target node."""

    read_latency_ns: float
    write_latency_ns: float
    read_bandwidth: float
    write_bandwidth: float


@dataclass(frozen=True)
class System:
    name: str
    description: str
    nodes: tuple[MemoryNode, ...]
    cross_socket: Link
    distances: tuple[tuple[int, ...], ...]
    source: Path | None = None

    @property
    def cpu_count(self) -> int:
        return sum(len(node.cpus) for node in self.nodes)

    @property
    def sockets(self) -> tuple[int, ...]:
        return tuple(sorted({node.socket for node in self.nodes}))

    @property
    def initiators(self) -> tuple[MemoryNode, ...]:
        """Nodes that hold CPUs, one per socket."""
        return tuple(node for node in self.nodes if node.cpus)

    def initiator_of(self, socket: int) -> MemoryNode:
        return next(node for node in self.initiators if node.socket == socket)

    def performance(self, initiator: MemoryNode, target: MemoryNode) -> Performance:
        device = target.device
        if initiator.socket == target.socket:
            return Performance(device.read_latency_ns, device.write_latency_ns,
                               device.read_bandwidth, device.write_bandwidth)
        link = self.cross_socket
        return Performance(device.read_latency_ns + link.latency_ns,
                           device.write_latency_ns + link.latency_ns,
                           min(device.read_bandwidth, link.bandwidth),
                           min(device.write_bandwidth, link.bandwidth))

    def local_performance(self, target: MemoryNode) -> Performance:
        """Performance from the CPUs of the target's own socket (HMAT ``access0``)."""
        return self.performance(self.initiator_of(target.socket), target)

    def node(self, node_id: int) -> MemoryNode:
        return self.nodes[node_id]

    def fastest_node(self) -> MemoryNode:
        return min(self.nodes, key=lambda node: node.device.read_latency_ns + node.device.write_latency_ns)


def derived_distances(nodes: tuple[MemoryNode, ...], cross_socket: Link) -> tuple[tuple[int, ...], ...]:
    """ACPI SLIT distances from latencies: 10 for local, 10 x latency ratio elsewhere.

    A node is seen from the CPUs of its own socket, relative to that socket's
    own memory; the matrix is made symmetric by taking the larger direction,
    and Linux needs every remote entry above 10.
    """
    by_socket = {node.socket: node for node in nodes if node.cpus}

    def one_way(source: MemoryNode, target: MemoryNode) -> int:
        latency = target.device.read_latency_ns
        if target.socket != source.socket:
            latency += cross_socket.latency_ns
        ratio = latency / by_socket[source.socket].device.read_latency_ns
        return min(254, max(LOCAL_DISTANCE + 1, round(LOCAL_DISTANCE * ratio)))

    return tuple(
        tuple(LOCAL_DISTANCE if a is b else max(one_way(a, b), one_way(b, a)) for b in nodes) for a in nodes
    )
