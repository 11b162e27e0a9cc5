"""Human-readable views of the catalog: device and system tables, one system in detail."""

from __future__ import annotations

from collections.abc import Iterable

from testbed.hmat import expected_tier, hmat_entries
from testbed.model import Device, System
from testbed.table import render_table
from testbed.units import format_bandwidth, format_latency, format_size


def devices_table(devices: Iterable[Device]) -> str:
    rows = [[d.name, d.kind, format_latency(d.read_latency_ns), format_latency(d.write_latency_ns),
             format_bandwidth(d.read_bandwidth), format_bandwidth(d.write_bandwidth), d.emulation,
             "access-frequency" if d.latency_model else "-"] for d in devices]
    return render_table(["device", "kind", "read lat", "write lat", "read bw", "write bw", "emulation",
                         "latency model"], rows)


def systems_table(systems: Iterable[System]) -> str:
    rows = [[s.name, len(s.sockets), s.cpu_count, len(s.nodes),
             " + ".join(f"{format_size(n.size)} {n.device.name}" for n in s.nodes)] for s in systems]
    return render_table(["system", "sockets", "cpus", "nodes", "memory"], rows)


def show_system(system: System) -> str:
    return "\n\n".join([
        f"{system.name}: {system.description}",
        _nodes(system),
        "Memory tiers (expected from HMAT, as Linux computes them):\n" + _tiers(system),
        "Distances (ACPI SLIT):\n" + _distances(system),
        "HMAT (initiator -> target: read/write latency, read/write bandwidth):\n" + _hmat(system),
    ])


def _nodes(system: System) -> str:
    rows = [[n.id, n.device.name, n.device.kind, format_size(n.size), n.socket,
             _cpu_list(n.cpus), n.emulation] for n in system.nodes]
    return render_table(["node", "device", "kind", "size", "socket", "cpus", "emulation"], rows)


def _tiers(system: System) -> str:
    tiers: dict[int | None, list[int]] = {}
    for node in system.nodes:
        tiers.setdefault(expected_tier(system, node), []).append(node.id)
    lines = [f"  memory_tier{tier}: nodes {', '.join(map(str, ids))}"
             for tier, ids in sorted(((t, i) for t, i in tiers.items() if t is not None))]
    if None in tiers:
        lines.append(f"  set by the device's CDAT: nodes {', '.join(map(str, tiers[None]))}")
    return "\n".join(lines)


def _distances(system: System) -> str:
    ids = [n.id for n in system.nodes]
    rows = [[source, *system.distances[source]] for source in ids]
    return render_table(["node", *map(str, ids)], rows)


def _hmat(system: System) -> str:
    rows = [[f"{e.initiator} -> {e.target}", f"{e.read_latency_ns}ns", f"{e.write_latency_ns}ns",
             f"{e.read_bandwidth_mib}MiB/s", f"{e.write_bandwidth_mib}MiB/s"] for e in hmat_entries(system)]
    return render_table(["pair", "read lat", "write lat", "read bw", "write bw"], rows)


def _cpu_list(cpus: tuple[int, ...]) -> str:
    if not cpus:
        return "-"
    return str(cpus[0]) if len(cpus) == 1 else f"{cpus[0]}-{cpus[-1]}"
