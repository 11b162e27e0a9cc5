"""A system as a QEMU command line (pure functions; golden-file tested).

The machine part (CPUs, NUMA nodes, HMAT, CXL, NVDIMM) depends only on the
system and the accelerator; the VM part adds the files and ports of one VM.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from testbed.accel import Accelerator
from testbed.hmat import HmatEntry, hmat_entries, hmat_targets
from testbed.model import Emulation, MemoryNode, System
from testbed.share import share_args
from testbed.units import MIB

QEMU_BINARY = "qemu-system-x86_64"
CXL_FIRST_BUS = 12  # bus numbers for pxb-cxl host bridges; 10 apart leaves room for ports
# Fixed PCI slots for the devices libvirt does not manage, clear of the low slots it fills itself.
NIC_SLOT = 0x0A
CXL_FIRST_SLOT = 0x0B


@dataclass(frozen=True)
class VmFiles:
    """Where one VM keeps its runtime files."""

    directory: Path

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def console(self) -> Path:
        return self.directory / "console.log"

    @property
    def initrd(self) -> Path:
        """The initrd made for the user's kernel (testbed/kernel.py)."""
        return self.directory / "initrd.img"

    @property
    def qmp(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def qemu_log(self) -> Path:
        """QEMU's own stdout and stderr (the QEMU backend only)."""
        return self.directory / "qemu.log"

    def nvdimm(self, node: MemoryNode) -> Path:
        return self.directory / f"nvdimm{node.id}.img"


@dataclass(frozen=True)
class GuestBoot:
    kernel: Path
    initrd: Path
    cmdline: str


@dataclass(frozen=True)
class VmConfig:
    system: System
    accel: Accelerator
    files: VmFiles
    boot: GuestBoot | None = None  # None: no guest, e.g. to check the machine starts
    ssh_port: int | None = None
    incoming: Path | None = None  # saved state to restore instead of booting
    share: Path | None = None  # a host directory the guest mounts (testbed/share.py)


def qemu_argv(vm: VmConfig) -> list[str]:
    argv = [QEMU_BINARY, "-name", vm.system.name, "-nodefaults", "-no-user-config", "-display", "none",
            "-no-reboot"]
    argv += machine_args(vm.system, vm.accel, vm.files)
    argv += ["-qmp", f"unix:{vm.files.qmp},server=on,wait=off", "-serial", f"file:{vm.files.console}"]
    if vm.boot:
        argv += ["-kernel", str(vm.boot.kernel), "-initrd", str(vm.boot.initrd), "-append", vm.boot.cmdline]
        argv += ["-drive", f"file={vm.files.disk},if=none,id=disk0,format=qcow2,discard=unmap",
                 "-device", "virtio-blk-pci,drive=disk0,id=vda,bus=pcie.0"]
    if vm.ssh_port is not None:
        argv += network_args(vm.ssh_port)
    if vm.share is not None:
        argv += share_args(vm.share)
    if vm.incoming:
        argv += ["-incoming", f"file:{vm.incoming}"]
    return argv


def machine_args(system: System, accel: Accelerator, files: VmFiles) -> list[str]:
    nvdimm = any(node.emulation is Emulation.NVDIMM for node in system.nodes)
    argv = ["-machine", "q35,hmat=on" + (",nvdimm=on" if nvdimm else ""), "-accel", accel,
            "-cpu", "max,-hypervisor"]
    argv += _cpus(system) + _memory_size(system)
    argv += _numa_nodes(system, files) + _distances(system) + _hmat(system)
    return argv + cxl_args(system)


def network_args(ssh_port: int) -> list[str]:
    """User-mode networking; the guest's sshd is reachable on the host's loopback only."""
    return ["-netdev", f"user,id=net0,hostfwd=tcp:127.0.0.1:{ssh_port}-:22",
            "-device", f"virtio-net-pci,netdev=net0,id=nic0,bus=pcie.0,addr={NIC_SLOT:#x}"]


def cxl_args(system: System) -> list[str]:
    """CXL type-3 devices: each gets a host bridge, a root port and a fixed memory window."""
    nodes = [node for node in system.nodes if node.emulation is Emulation.CXL_TYPE3]
    if not nodes:
        return []
    return ["-machine", "cxl=on"] + [arg for index, node in enumerate(nodes) for arg in _cxl_device(index, node)]


def _cpus(system: System) -> list[str]:
    sockets = len(system.sockets)
    return ["-smp", f"cpus={system.cpu_count},sockets={sockets},cores={system.cpu_count // sockets},threads=1"]


def guest_memory(system: System) -> int:
    """Bytes of host memory the memory-backend objects ask for: every NUMA node's RAM, every CXL
    window's RAM and every NVDIMM's backing file (with its extra block)."""
    return sum(node.backing_size for node in system.nodes)


def _memory_size(system: System) -> list[str]:
    ram = sum(node.size for node in system.nodes if node.emulation is Emulation.NUMA_NODE)
    nvdimms = [node for node in system.nodes if node.emulation is Emulation.NVDIMM]
    if not nvdimms:
        return ["-m", f"{ram // MIB}M"]
    maxmem = ram + sum(node.backing_size for node in nvdimms)
    return ["-m", f"{ram // MIB}M,slots={len(nvdimms)},maxmem={maxmem // MIB}M"]


def _numa_nodes(system: System, files: VmFiles) -> list[str]:
    argv: list[str] = []
    for node in hmat_targets(system):
        argv += _ram_node_args(system, node) if node.emulation is Emulation.NUMA_NODE else \
            nvdimm_node_args(system, node, files)
    for node in system.initiators:
        argv += ["-numa", f"cpu,node-id={node.id},socket-id={node.socket}"]
    return argv


def _initiator(system: System, node: MemoryNode) -> str:
    return "" if node.cpus else f",initiator={system.initiator_of(node.socket).id}"


def _ram_node_args(system: System, node: MemoryNode) -> list[str]:
    return ["-object", f"memory-backend-ram,id=mem{node.id},size={node.size // MIB}M",
            "-numa", f"node,nodeid={node.id},memdev=mem{node.id}{_initiator(system, node)}"]


def nvdimm_node_args(system: System, node: MemoryNode, files: VmFiles) -> list[str]:
    """A memory-less node that the guest fills when it onlines the NVDIMM placed on it."""
    return ["-numa", f"node,nodeid={node.id}{_initiator(system, node)}",
            "-object", f"memory-backend-file,id=nvmem{node.id},share=on,"
                       f"mem-path={files.nvdimm(node)},size={node.backing_size // MIB}M",
            "-device", f"nvdimm,id=nvdimm{node.id},memdev=nvmem{node.id},node={node.id}"]


def _distances(system: System) -> list[str]:
    ids = [node.id for node in hmat_targets(system)]
    return distance_args(system, [(src, dst) for src in ids for dst in ids if src != dst])


def distance_args(system: System, pairs: list[tuple[int, int]]) -> list[str]:
    return [arg for src, dst in pairs
            for arg in ("-numa", f"dist,src={src},dst={dst},val={system.distances[src][dst]}")]


def _hmat(system: System) -> list[str]:
    return hmat_args(hmat_entries(system))


def hmat_args(entries: Iterable[HmatEntry]) -> list[str]:
    argv: list[str] = []
    for entry in entries:
        pair = f"hmat-lb,initiator={entry.initiator},target={entry.target},hierarchy=memory"
        argv += ["-numa", f"{pair},data-type=read-latency,latency={entry.read_latency_ns}",
                 "-numa", f"{pair},data-type=write-latency,latency={entry.write_latency_ns}",
                 "-numa", f"{pair},data-type=read-bandwidth,bandwidth={entry.read_bandwidth_mib}M",
                 "-numa", f"{pair},data-type=write-bandwidth,bandwidth={entry.write_bandwidth_mib}M"]
    return argv


def _cxl_device(index: int, node: MemoryNode) -> list[str]:
    bridge, port = f"cxl.{index}", f"cxlrp{index}"
    return ["-object", f"memory-backend-ram,id=cxlmem{node.id},size={node.size // MIB}M",
            "-device", f"pxb-cxl,bus_nr={CXL_FIRST_BUS + 10 * index},bus=pcie.0,addr={CXL_FIRST_SLOT + index:#x},"
                       f"id={bridge}",
            "-device", f"cxl-rp,port=0,bus={bridge},id={port},chassis=0,slot={index}",
            "-device", f"cxl-type3,bus={port},volatile-memdev=cxlmem{node.id},id=cxl-memdev{node.id}",
            "-machine", f"cxl-fmw.{index}.targets.0={bridge},cxl-fmw.{index}.size={node.size // MIB}M"]
