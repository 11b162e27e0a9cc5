"""A system as a libvirt domain (pure functions; golden-file tested).

The topology is native libvirt XML: NUMA cells (CPU-less ones without
``cpus``), distances, ``<interconnects>`` and NVDIMM ``<memory>`` devices.
What libvirt cannot express — CXL type-3 devices and the user-mode network
with a loopback port forward — goes through ``<qemu:commandline>``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from testbed.hmat import hmat_entries, hmat_targets
from testbed.model import Emulation, System
from testbed.render_qemu import MIB, VmConfig, cxl_args, network_args

QEMU_NS = "http://libvirt.org/schemas/domain/qemu/1.0"
ET.register_namespace("qemu", QEMU_NS)


def domain_xml(vm: VmConfig, name: str) -> str:
    domain = ET.Element("domain", type="kvm" if vm.accel == "kvm" else "qemu")
    ET.SubElement(domain, "name").text = name
    _memory(domain, vm.system)
    ET.SubElement(domain, "vcpu").text = str(vm.system.cpu_count)
    _os(domain, vm)
    features = ET.SubElement(domain, "features")
    ET.SubElement(features, "acpi")
    ET.SubElement(features, "apic")
    _cpu(domain, vm.system)
    ET.SubElement(domain, "on_reboot").text = "destroy"
    _devices(domain, vm)
    _qemu_commandline(domain, vm)
    ET.indent(domain)
    return ET.tostring(domain, encoding="unicode") + "\n"


def _memory(domain: ET.Element, system: System) -> None:
    ram = sum(n.size for n in system.nodes if n.emulation is Emulation.NUMA_NODE) // MIB
    nvdimms = [n for n in system.nodes if n.emulation is Emulation.NVDIMM]
    if nvdimms:
        maxmem = ram + sum(n.size for n in nvdimms) // MIB
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
    targets = hmat_targets(system)
    for node in targets:
        attributes = {"id": str(node.id), "memory": str(node.size // MIB if node.emulation is Emulation.NUMA_NODE
                                                        else 0), "unit": "MiB"}
        if node.cpus:
            attributes["cpus"] = f"{node.cpus[0]}-{node.cpus[-1]}"
        cell = ET.SubElement(numa, "cell", attributes)
        distances = ET.SubElement(cell, "distances")
        for other in targets:
            ET.SubElement(distances, "sibling", id=str(other.id), value=str(system.distances[node.id][other.id]))
    _interconnects(numa, system)


def _interconnects(numa: ET.Element, system: System) -> None:
    """HMAT; libvirt treats a pair as one link, so only one direction of each is written."""
    links = ET.SubElement(numa, "interconnects")
    written: set[frozenset[int]] = set()
    for entry in hmat_entries(system):
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
    ET.SubElement(devices, "emulator").text = "/usr/bin/qemu-system-x86_64"
    if vm.boot:
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2", discard="unmap")
        ET.SubElement(disk, "source", file=str(vm.files.disk))
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
    for node in vm.system.nodes:
        if node.emulation is Emulation.NVDIMM:
            memory = ET.SubElement(devices, "memory", model="nvdimm", access="shared")
            ET.SubElement(ET.SubElement(memory, "source"), "path").text = str(vm.files.nvdimm(node))
            target = ET.SubElement(memory, "target")
            ET.SubElement(target, "size", unit="MiB").text = str(node.size // MIB)
            ET.SubElement(target, "node").text = str(node.id)
    serial = ET.SubElement(devices, "serial", type="file")
    ET.SubElement(serial, "source", path=str(vm.files.console))
    ET.SubElement(serial, "target", port="0")
    ET.SubElement(devices, "memballoon", model="none")


def _qemu_commandline(domain: ET.Element, vm: VmConfig) -> None:
    args = cxl_args(vm.system)
    if vm.ssh_port is not None:
        args += network_args(vm.ssh_port)
    if not args:
        return
    commandline = ET.SubElement(domain, f"{{{QEMU_NS}}}commandline")
    for arg in args:
        ET.SubElement(commandline, f"{{{QEMU_NS}}}arg", value=arg)
