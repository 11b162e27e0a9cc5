"""The HMAT a system gets: latency and bandwidth for every initiator/target pair.

QEMU stores each HMAT table as 16-bit entries times one base unit, so
bandwidths are rounded here to what the guest will actually see (MiB/s,
reported by Linux as "MB/s"); renderers and verification share these numbers.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.model import (
    MEMTIER_ADISTANCE_DRAM,
    MEMTIER_CHUNK_SIZE,
    Emulation,
    MemoryNode,
    System,
)
from testbed.units import MIB

HMAT_MAX_ENTRY = 65534  # QEMU: values may not span more than this many base units


@dataclass(frozen=True)
class HmatEntry:
    initiator: int  # node id holding the CPUs
    target: int  # memory node id
    read_latency_ns: int
    write_latency_ns: int
    read_bandwidth_mib: int  # MiB/s; what the guest's sysfs calls MB/s
    write_bandwidth_mib: int


def hmat_targets(system: System) -> tuple[MemoryNode, ...]:
    """Nodes the firmware describes; CXL type-3 memory is described by the device's CDAT instead."""
    return tuple(node for node in system.nodes if node.emulation is not Emulation.CXL_TYPE3)


def hmat_entries(system: System) -> tuple[HmatEntry, ...]:
    pairs = [(initiator, target) for initiator in system.initiators for target in hmat_targets(system)]
    perfs = [system.performance(initiator, target) for initiator, target in pairs]
    step = _bandwidth_step([bw for perf in perfs for bw in (perf.read_bandwidth, perf.write_bandwidth)])
    return tuple(
        HmatEntry(initiator.id, target.id, round(perf.read_latency_ns), round(perf.write_latency_ns),
                  _quantize(perf.read_bandwidth, step), _quantize(perf.write_bandwidth, step))
        for (initiator, target), perf in zip(pairs, perfs, strict=True)
    )


def local_entry(system: System, node: MemoryNode) -> HmatEntry:
    """The entry from the CPUs of the node's own socket: what the guest shows as ``access0``."""
    initiator = system.initiator_of(node.socket).id
    return next(e for e in hmat_entries(system) if e.initiator == initiator and e.target == node.id)


def expected_tier(system: System, node: MemoryNode) -> int | None:
    """The Linux memory tier id the guest should put ``node`` in (None: set by the device's CDAT).

    Mirrors mm/memory-tiers.c: nodes with CPUs set the DRAM baseline; other
    nodes get an abstract distance scaled by their latency and bandwidth
    relative to it (integer arithmetic, left to right, as the kernel does).
    """
    if node.emulation is Emulation.CXL_TYPE3:
        return None
    if node.cpus:
        return MEMTIER_ADISTANCE_DRAM // MEMTIER_CHUNK_SIZE
    dram = local_entry(system, system.initiators[0])
    perf = local_entry(system, node)
    adist = (MEMTIER_ADISTANCE_DRAM * (perf.read_latency_ns + perf.write_latency_ns)
             // (dram.read_latency_ns + dram.write_latency_ns)
             * (dram.read_bandwidth_mib + dram.write_bandwidth_mib)
             // (perf.read_bandwidth_mib + perf.write_bandwidth_mib))
    return adist // MEMTIER_CHUNK_SIZE


def _bandwidth_step(bandwidths: list[float]) -> int:
    """The smallest power-of-two MiB/s unit that keeps every entry within 16 bits."""
    step = 1
    while max(bandwidths) / MIB / step > HMAT_MAX_ENTRY:
        step *= 2
    return step


def _quantize(bandwidth: float, step: int) -> int:
    return max(step, round(bandwidth / MIB / step) * step)
