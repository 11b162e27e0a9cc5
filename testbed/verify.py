"""Does the guest see the machine its YAML describes? Expected vs seen, line by line.

The comparison is a pure function of the system and the guest's facts (its
NUMA nodes as the guest daemon reports them, and its DAX devices), so it is
unit-tested without a VM.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from testbed.channel.replies import Hmat, NodeInfo
from testbed.hmat import expected_tier, local_entry
from testbed.model import Emulation, MemoryNode, System
from testbed.table import render_table
from testbed.units import format_size

if TYPE_CHECKING:
    from testbed.vms import Vm

# The kernel keeps part of each node for itself (page structures, firmware areas); node 0
# also pays for memory onlined later (seen: 12% of 1 GiB with a 1 GiB NVDIMM onlined).
SIZE_TOLERANCE = 0.15
HMAT_FIELDS = (("read latency", "read_latency_ns", "read_latency_ns", "ns"),
               ("write latency", "write_latency_ns", "write_latency_ns", "ns"),
               ("read bandwidth", "read_bandwidth_mib", "read_bandwidth_mbps", "MB/s"),
               ("write bandwidth", "write_bandwidth_mib", "write_bandwidth_mbps", "MB/s"))


@dataclass(frozen=True)
class Check:
    node: int
    what: str
    expected: str
    seen: str
    ok: bool


@dataclass(frozen=True)
class Report:
    checks: tuple[Check, ...]

    @property
    def passed(self) -> int:
        return sum(check.ok for check in self.checks)

    @property
    def ok(self) -> bool:
        return self.passed == len(self.checks)

    def table(self) -> str:
        rows = [[c.node, c.what, c.expected, c.seen, "pass" if c.ok else "FAIL"] for c in self.checks]
        return render_table(["node", "check", "expected", "seen", "result"], rows)


@dataclass(frozen=True)
class GuestFacts:
    nodes: dict[int, NodeInfo]  # what the guest daemon reports, by node id
    dax_nodes: dict[int, str]  # node id -> what backs its system-ram DAX device ("nvdimm" or "cxl")


def verify(system: System, facts: GuestFacts) -> Report:
    checks: list[Check] = []
    for node in system.nodes:
        seen = facts.nodes.get(node.id)
        checks.append(Check(node.id, "online", node.device.name, "yes" if seen else "missing", seen is not None))
        if seen is not None:
            checks += _node_checks(system, node, seen, facts)
    return Report(tuple(checks))


def _node_checks(system: System, node: MemoryNode, seen: NodeInfo, facts: GuestFacts) -> list[Check]:
    total = seen.total_bytes
    checks = [
        Check(node.id, "size", f"{format_size(node.size)} (-{SIZE_TOLERANCE:.0%})", format_size(total),
              node.size * (1 - SIZE_TOLERANCE) <= total <= node.size),
        Check(node.id, "cpus", _cpus(node.cpus), _cpus(seen.cpus), node.cpus == seen.cpus),
    ]
    if node.emulation is not Emulation.NUMA_NODE:
        backing = facts.dax_nodes.get(node.id, "nothing")
        wanted = "cxl" if node.emulation is Emulation.CXL_TYPE3 else "nvdimm"
        checks.append(Check(node.id, "memory from", f"{wanted} (system-ram DAX)", backing, backing == wanted))
    tier = expected_tier(system, node)
    seen_tier = seen.tier
    checks.append(Check(node.id, "memory tier", "from the device's CDAT" if tier is None else str(tier),
                        str(seen_tier), seen_tier is not None and (tier is None or tier == seen_tier)))
    if node.emulation is Emulation.CXL_TYPE3:
        return checks  # CXL performance and distances come from CDAT, not from our HMAT/SLIT
    checks += _distance_checks(system, node, seen)
    return checks + _hmat_checks(system, node, seen.hmat)


def _distance_checks(system: System, node: MemoryNode, seen: NodeInfo) -> list[Check]:
    checks = []
    for other in system.nodes:
        if other.emulation is Emulation.CXL_TYPE3:
            continue
        expected = system.distances[node.id][other.id]
        value = seen.distances.get(other.id)
        checks.append(Check(node.id, f"distance to {other.id}", str(expected), str(value), value == expected))
    return checks


def _hmat_checks(system: System, node: MemoryNode, hmat: Hmat | None) -> list[Check]:
    entry = local_entry(system, node)
    checks = []
    for label, ours, theirs, unit in HMAT_FIELDS:
        expected = getattr(entry, ours)
        value = getattr(hmat, theirs) if hmat else None
        checks.append(Check(node.id, f"HMAT {label}", f"{expected} {unit}",
                            "missing" if value is None else f"{value} {unit}", value == expected))
    return checks


def _cpus(cpus: tuple[int, ...]) -> str:
    return ",".join(map(str, cpus)) or "-"


def dax_backing(daxctl_devices: list[dict[str, Any]], cxl_regions: list[dict[str, Any]]) -> dict[int, str]:
    """Which NUMA nodes are system-ram DAX devices, and whether a CXL region backs them.

    ``daxctl list`` names the device and its target node; ``cxl list -R -X``
    lists each CXL region with the DAX devices it made.
    """
    cxl_devices = {dax["chardev"] for region in cxl_regions
                   for dax in region.get("daxregion", {}).get("devices", [])}
    return {int(dax["target_node"]): "cxl" if dax["chardev"] in cxl_devices else "nvdimm"
            for dax in daxctl_devices if dax.get("mode") == "system-ram" and dax.get("online_memblocks", 0) > 0}


def verify_vm(vm: Vm) -> Report:
    shell = vm.shell()
    daxctl = json.loads(shell.run("daxctl list 2>/dev/null || echo []").stdout or "[]")
    regions = json.loads(shell.run("cxl list -R -X 2>/dev/null || echo []").stdout or "[]")
    with vm.guest() as guest:
        nodes = guest.nodes()
    facts = GuestFacts({node.id: node for node in nodes}, dax_backing(daxctl, regions))
    return verify(vm.system, facts)
