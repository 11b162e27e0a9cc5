"""A system as a libvirt domain (pure functions; golden-file tested).

The topology is native libvirt XML: NUMA cells (CPU-less ones without
``cpus``), distances and ``<interconnects>``. What libvirt 11.3 cannot
express goes through ``<qemu:commandline>``: CXL type-3 devices, the
user-mode network with a loopback port forward, a shared host directory (the
QEMU backend's 9p device in its fixed slot, so saved states match), and NVDIMM nodes — an NVDIMM
needs a memory-less NUMA node, and libvirt renders a memory-less cell as a
zero-sized RAM backend that QEMU rejects (so ``<memory model='nvdimm'>``,
which must name a cell, cannot be used either).
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

from testbed.accel import Accelerator
from testbed.errors import UserError
from testbed.hmat import hmat_entries
from testbed.model import Emulation, MemoryNode, System
from testbed.render_qemu import (
    QEMU_BINARY,
    VmConfig,
    cxl_args,
    distance_args,
    hmat_args,
    network_args,
    nvdimm_node_args,
)
from testbed.share import share_args
from testbed.units import MIB

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)


def domain_xml(vm: VmConfig, name: str, run_as: tuple[int, int] | None = None) -> str:
    """The domain for ``vm``; ``run_as`` (uid, gid) makes QEMU run as that user, so it can read
    the user's own image and VM files instead of libvirt relabelling them."""
    domain = ET.Element("domain", type="kvm" if vm.accel == Accelerator.KVM else "qemu")
    ET.SubElement(domain, "name").text = name
    # Derived from the name: a restore must keep the saved domain's UUID.
    ET.SubElement(domain, "uuid").text = str(uuid.uuid5(uuid.NAMESPACE_URL, f"llamas:{name}"))
    _memory(domain, vm.system)
    ET.SubElement(domain, "vcpu").text = str(vm.system.cpu_count)
    _os(domain, vm)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    _cpu(domain, vm.system)
    ET.SubElement(domain, "on_reboot").text = "destroy"
    _devices(domain, vm)
    if run_as is not None:
        seclabel = ET.SubElement(domain, "seclabel", type="static", model="dac", relabel="no")
        ET.SubElement(seclabel, "label").text = f"+{run_as[0]}:+{run_as[1]}"
    _qemu_commandline(domain, vm)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def _memory(domain: ET.Element, system: System) -> None:
    ram = sum(n.size for n in system.nodes if n.emulation is Emulation.NUMA_NODE) // MIB
    nvdimms = _nvdimm_nodes(system)
    if nvdimms:
        maxmem = ram + sum(n.backing_size for n in nvdimms) // MIB
        ET.SubElement(domain, "maxMemory", slots=str(len(nvdimms)), unit="MiB").text = str(maxmem)
    ET.SubElement(domain, "memory", unit="MiB").text = str(ram)


def _os(domain: ET.Element, vm: VmConfig) -> None:
    os_element = ET.SubElement(domain, "os")
    ET.SubElement(os_element, "type", arch="x86_64", machine="q35").text = "hvm"
    if vm.boot:
        ET.SubElement(os_element, "kernel").text = str(vm.boot.kernel)
        ET.SubElement(os_element, "initrd").text = str(vm.boot.initrd)
        ET.SubElement(os_element, "cmdline").text = vm.boot.cmdline


def _cpu(domain: ET.Element, system: System) -> None:
    cpu = ET.SubElement(domain, "cpu", mode="maximum", check="none")
    sockets = len(system.sockets)
    ET.SubElement(cpu, "topology", sockets=str(sockets), dies="1", cores=str(system.cpu_count // sockets),
                  threads="1")
    # Without this the guest's CXL driver cannot create regions ("Failed to synchronize CPU cache state").
    ET.SubElement(cpu, "feature", policy="disable", name="hypervisor")
    numa = ET.SubElement(cpu, "numa")
    cells = _cells(system)
    for node in cells:
        attributes = {"id": str(node.id), "memory": str(node.size // MIB), "unit": "MiB"}
        if node.cpus:
            attributes["cpus"] = f"{node.cpus[0]}-{node.cpus[-1]}"
        cell = ET.SubElement(numa, "cell", attributes)
        distances = ET.SubElement(cell, "distances")
        for other in cells:
            ET.SubElement(distances, "sibling", id=str(other.id), value=str(system.distances[node.id][other.id]))
    _interconnects(numa, system, {node.id for node in cells})


def _cells(system: System) -> list[MemoryNode]:
    """Plain RAM nodes become cells; they must come first, since cell ids run 0..n-1."""
    cells = [node for node in system.nodes if node.emulation is Emulation.NUMA_NODE]
    if [node.id for node in cells] != list(range(len(cells))):
        raise UserError(f"{system.source}: the libvirt backend needs the plain RAM (numa-node) nodes listed "
                        "before NVDIMM and CXL type-3 nodes")
    return cells


def _nvdimm_nodes(system: System) -> list[MemoryNode]:
    return [node for node in system.nodes if node.emulation is Emulation.NVDIMM]


def _interconnects(numa: ET.Element, system: System, cells: set[int]) -> None:
    """HMAT; libvirt treats a pair as one link, so only one direction of each is written."""
    links = ET.SubElement(numa, "interconnects")
    written: set[frozenset[int]] = set()
    for entry in hmat_entries(system):
        if entry.target not in cells:
            continue
        pair = frozenset((entry.initiator, entry.target))
        if pair in written:
            continue
        written.add(pair)
        ends = {"initiator": str(entry.initiator), "target": str(entry.target)}
        for kind, latency in (("read", entry.read_latency_ns), ("write", entry.write_latency_ns)):
            ET.SubElement(links, "latency", ends, type=kind, value=str(latency))
        for kind, bandwidth in (("read", entry.read_bandwidth_mib), ("write", entry.write_bandwidth_mib)):
            ET.SubElement(links, "bandwidth", ends, type=kind, value=str(bandwidth), unit="MiB")


def _devices(domain: ET.Element, vm: VmConfig) -> None:
    devices = ET.SubElement(domain, "devices")
    ET.SubElement(devices, "emulator").text = f"/usr/bin/{QEMU_BINARY}"  # libvirt wants a path
    if vm.boot:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
        ET.SubElement(disk, "source", file=str(vm.files.disk))
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(vm.files.console))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")


def _qemu_commandline(domain: ET.Element, vm: VmConfig) -> None:
    args = _nvdimm_args(vm) + cxl_args(vm.system)
    if vm.ssh_port is not None:
        args += network_args(vm.ssh_port)
    if vm.share is not None:
        args += share_args(vm.share)
    if not args:
        return
    commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
    for arg in args:
        ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)


def _nvdimm_args(vm: VmConfig) -> list[str]:
    """NVDIMM nodes with their distances and HMAT entries, after libvirt's own cells."""
    system = vm.system
    nvdimms = _nvdimm_nodes(system)
    if not nvdimms:
        return []
    ids = {node.id for node in nvdimms}
    described = [node.id for node in system.nodes if node.emulation is not Emulation.CXL_TYPE3]
    pairs = [(a, b) for a in described for b in described if a != b and (a in ids or b in ids)]
    args = ["-machine", "nvdimm=on"] + [arg for node in nvdimms for arg in nvdimm_node_args(system, node, vm.files)]
    args += distance_args(system, pairs)
    return args + hmat_args(entry for entry in hmat_entries(system) if entry.target in ids)
