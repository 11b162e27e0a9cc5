"""Loading devices and systems from YAML into the typed model, with validation.

A catalog is a directory: one YAML per device, and ``systems/`` with one YAML
per machine. A system names devices from its catalog or gives a path to a
device file (relative to the system file).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import yaml

from testbed.errors import ConfigError
from testbed.model import (
    MEMORY_BLOCK,
    Device,
    DeviceKind,
    Emulation,
    FrequencyLatency,
    Link,
    MemoryNode,
    System,
    derived_distances,
)
from testbed.units import parse_bandwidth, parse_latency, parse_rate, parse_size
from testbed.yamlfields import Fields, boolean, choice, load_yaml, named_file, whole

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CATALOG = REPO_ROOT / "devices"
# CXL fixed memory windows are 256 MiB granular.
CXL_GRANULE = 256 * 2**20
MIN_BOOT_NODE = 512 * 2**20
DEFAULT_CROSS_SOCKET = Link(latency_ns=70.0, bandwidth=40e9)


@dataclass(frozen=True)
class Plausible:
    """A quantity in a device or system file and the range it must be in: outside it, it is
    a slip (``80 ms`` for ``80 ns``), not a memory."""

    kind: str  # "memory latency"
    convert: Callable[[object], float]  # the text as written -> the internal unit
    unit: str  # the internal unit, for the message
    low: float
    high: float
    shown: tuple[str, str]  # low and high as a user writes them

    def parse(self, value: object) -> float:
        number = self.convert(value)
        if not self.low <= number <= self.high:
            raise ValueError(f"{value} is {number:.15g} {self.unit}; a {self.kind} is between "
                             f"{self.shown[0]} and {self.shown[1]}")
        return number


# No memory answers a load in under 1 ns (that is a register or cache) or takes over 100 us (that is
# storage); the catalog's devices span 50 ns (RAT's hot case) to 900 ns (Optane writes).
MEMORY_LATENCY = Plausible("memory latency", parse_latency, "ns", 1.0, 100e3, ("1ns", "100us"))
# 1 MB/s is below any memory bus; 10 TB/s is several HBM3 stacks. The catalog spans 2.5GB/s to 400GB/s.
MEMORY_BANDWIDTH = Plausible("memory bandwidth", parse_bandwidth, "B/s", 1e6, 10e12, ("1MB/s", "10TB/s"))
# What crossing sockets adds; zero is allowed (a link as fast as local memory).
LINK_LATENCY = Plausible("cross-socket latency", parse_latency, "ns", 0.0, 100e3, ("0ns", "100us"))


def default_catalog() -> Catalog:
    return Catalog(Path(os.environ.get("LLAMAS_CATALOG", DEFAULT_CATALOG)))


@dataclass(frozen=True)
class Catalog:
    root: Path

    @property
    def systems_dir(self) -> Path:
        return self.root / "systems"

    def device_files(self) -> list[Path]:
        return sorted(self.root.glob("*.yaml"))

    def system_files(self) -> list[Path]:
        return sorted(self.systems_dir.glob("*.yaml"))

    def devices(self) -> dict[str, Device]:
        devices: dict[str, Device] = {}
        for path in self.device_files():
            device = load_device(path)
            if device.name in devices:
                raise ConfigError(path, "name", f"device {device.name!r} is also defined in "
                                  f"{devices[device.name].source}")
            devices[device.name] = device
        return devices

    def system_path(self, name_or_path: str) -> Path:
        """A system named in the catalog, or a path to a system file."""
        return named_file(name_or_path, self.systems_dir, "system")

    def load_system(self, name_or_path: str) -> System:
        path = self.system_path(name_or_path)
        return parse_system(load_yaml(path), path, self)

    def systems(self) -> list[System]:
        return [self.load_system(str(path)) for path in self.system_files()]

    def resolve_device(self, reference: str, system_file: Path) -> Device | None:
        if reference.endswith((".yaml", ".yml")):
            path = (system_file.parent / reference).resolve()
            return load_device(path) if path.exists() else None
        return self.devices().get(reference)


def load_device(path: Path) -> Device:
    return parse_device(load_yaml(path), path)


def parse_device(data: object, path: Path) -> Device:
    fields = Fields(data, path)
    device = Device(
        name=fields.text("name"),
        kind=fields.get("kind", choice(DeviceKind)),
        read_latency_ns=fields.get("read_latency", MEMORY_LATENCY.parse),
        write_latency_ns=fields.get("write_latency", MEMORY_LATENCY.parse),
        read_bandwidth=fields.get("read_bandwidth", MEMORY_BANDWIDTH.parse),
        write_bandwidth=fields.get("write_bandwidth", MEMORY_BANDWIDTH.parse),
        emulation=fields.get("emulation", choice(Emulation)),
        description=fields.text("description"),
        latency_model=_latency_model(fields) if fields.has("latency_model") else None,
        source=path,
        endurance_writes=fields.get("endurance", _positive(_number), None),
        exposed=fields.get("exposed", boolean, False),
        persistent=fields.get("persistent", boolean, False),
    )
    fields.raw("latency_model", None)
    fields.done()
    return device


def _latency_model(fields: Fields) -> FrequencyLatency:
    model = fields.sub("latency_model")
    model.get("type", choice(_LatencyModelType))
    result = FrequencyLatency(
        hot_latency_ns=model.get("hot_latency", MEMORY_LATENCY.parse),
        cold_latency_ns=model.get("cold_latency", MEMORY_LATENCY.parse),
        hot_rate=model.get("hot_rate", _positive(parse_rate)),
    )
    model.done()
    if result.hot_latency_ns > result.cold_latency_ns:
        raise model.error("hot_latency", "must not exceed cold_latency (hot data is the fast case)")
    return result


class _LatencyModelType(StrEnum):
    ACCESS_FREQUENCY = "access-frequency"


def parse_system(data: object, path: Path, catalog: Catalog) -> System:
    fields = Fields(data, path)
    name = fields.text("name")
    description = fields.text("description")
    sockets = [_socket_cpus(value, path, where) for _, value, where in fields.items("sockets")]
    if not sockets:
        raise fields.error("sockets", "needs at least one socket")
    if len(set(sockets)) > 1:
        raise fields.error("sockets", f"every socket needs the same number of cpus (QEMU's -smp topology), "
                           f"got {sockets}")
    nodes = _nodes(fields, catalog, sockets)
    cross_socket = _link(fields.sub("cross_socket")) if fields.has("cross_socket") else DEFAULT_CROSS_SOCKET
    fields.raw("cross_socket", None)
    distances = (_distances(fields, len(nodes)) if fields.has("distances")
                 else derived_distances(nodes, cross_socket))
    fields.done()
    return System(name=name, description=description, nodes=nodes, cross_socket=cross_socket,
                  distances=distances, source=path)


def _socket_cpus(value: object, path: Path, where: str) -> int:
    socket = Fields(value, path, where)
    cpus = socket.get("cpus", whole(1))
    socket.done()
    return cpus


def _nodes(fields: Fields, catalog: Catalog, sockets: list[int]) -> tuple[MemoryNode, ...]:
    nodes: list[MemoryNode] = []
    next_cpu = 0
    for index, value, where in fields.items("nodes"):
        node_fields = Fields(value, fields.path, where)
        reference = node_fields.text("device")
        device = catalog.resolve_device(reference, fields.path)
        if device is None:
            known = ", ".join(sorted(catalog.devices()))
            raise node_fields.error("device", f"unknown device {reference!r} (known: {known})")
        size = node_fields.get("size", parse_size)
        socket = node_fields.get("socket", whole(0), 0)
        node_fields.done()
        if socket >= len(sockets):
            raise node_fields.error("socket", f"socket {socket} does not exist (this system has "
                                    f"{len(sockets)}: 0-{len(sockets) - 1})")
        _check_size(node_fields, device, size)
        owns_cpus = all(node.socket != socket for node in nodes)
        cpus: tuple[int, ...] = ()
        if owns_cpus:
            _check_cpu_node(node_fields, device, size, socket)
            cpus = tuple(range(next_cpu, next_cpu + sockets[socket]))
            next_cpu += sockets[socket]
        nodes.append(MemoryNode(id=index, device=device, size=size, socket=socket, cpus=cpus))
    _check_nodes(fields, nodes, len(sockets))
    return tuple(nodes)


def _check_size(fields: Fields, device: Device, size: int) -> None:
    granule = CXL_GRANULE if device.emulation is Emulation.CXL_TYPE3 else MEMORY_BLOCK
    if size <= 0 or size % granule:
        raise fields.error("size", f"a {device.emulation} node must be a positive multiple of "
                           f"{granule // 2**20}MiB (the guest onlines memory in such blocks), got {size} bytes")


def _check_cpu_node(fields: Fields, device: Device, size: int, socket: int) -> None:
    """The first node of each socket holds that socket's CPUs and boots the guest."""
    if device.emulation is not Emulation.NUMA_NODE:
        raise fields.error("device", f"the first node of socket {socket} holds its CPUs, so it must be a "
                           f"numa-node device, not {device.emulation}")
    if size < MIN_BOOT_NODE:
        raise fields.error("size", f"the first node of socket {socket} holds its CPUs and kernel memory: "
                           f"needs at least {MIN_BOOT_NODE // 2**20}MiB, got {size // 2**20}MiB")


def _check_nodes(fields: Fields, nodes: list[MemoryNode], socket_count: int) -> None:
    if not nodes:
        raise fields.error("nodes", "needs at least one memory node")
    for socket in range(socket_count):
        if all(node.socket != socket for node in nodes):
            raise fields.error("sockets", f"socket {socket} has no memory node to hold its CPUs")
    seen_cxl = False
    for node in nodes:
        # The guest numbers CXL windows after the firmware's (SRAT) nodes.
        if node.emulation is Emulation.CXL_TYPE3:
            seen_cxl = True
        elif seen_cxl:
            raise fields.error(f"nodes[{node.id}]", "cxl-type3 nodes must come after all other nodes "
                               "(the guest kernel numbers CXL memory after the firmware's nodes)")


def _link(fields: Fields) -> Link:
    link = Link(latency_ns=fields.get("latency", LINK_LATENCY.parse),
                bandwidth=fields.get("bandwidth", MEMORY_BANDWIDTH.parse))
    fields.done()
    return link


def _distances(fields: Fields, count: int) -> tuple[tuple[int, ...], ...]:
    rows = []
    for index, row, _ in fields.items("distances"):
        if not isinstance(row, list) or len(row) != count:
            raise fields.error(f"distances[{index}]", f"expected a list of {count} distances, got {row!r}")
        for column, value in enumerate(row):
            valid = range(10, 11) if column == index else range(11, 255)
            if isinstance(value, bool) or value not in valid:
                rule = "10 (a node's distance to itself)" if column == index else "a whole number from 11 to 254"
                raise fields.error(f"distances[{index}][{column}]", f"expected {rule}, got {value!r}")
        rows.append(tuple(row))
    if len(rows) != count:
        raise fields.error("distances", f"expected {count} rows (one per node), got {len(rows)}")
    return tuple(rows)


def system_yaml(system: System) -> str:
    """``system`` as a system file naming its devices by name (the inverse of :func:`parse_system`)."""
    sockets = [{"cpus": len(node.cpus)} for node in system.initiators]
    nodes = [{"device": node.device.name, "size": f"{node.size // 2**20}MiB", "socket": node.socket}
             for node in system.nodes]
    link = {"latency": f"{system.cross_socket.latency_ns:g}ns", "bandwidth": f"{system.cross_socket.bandwidth:g}B/s"}
    data = {"name": system.name, "description": system.description, "sockets": sockets, "nodes": nodes,
            "cross_socket": link, "distances": [list(row) for row in system.distances]}
    return yaml.safe_dump(data, sort_keys=False)


def _number(value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"expected a number, got {value!r}")
    return float(value)


def _positive(parse: Callable[[object], float]) -> Callable[[object], float]:
    def check(value: object) -> float:
        number = parse(value)
        if number <= 0:
            raise ValueError(f"expected a value above zero, got {value!r}")
        return float(number)

    return check
