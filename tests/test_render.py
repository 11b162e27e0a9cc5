"""Renderers: golden files, and proof that QEMU and libvirt accept what we render."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testbed.accel import Accelerator
from testbed.catalog import default_catalog
from testbed.hmat import hmat_entries
from testbed.model import Emulation, System
from testbed.qmp import Qmp
from testbed.render_libvirt import domain_xml
from testbed.render_qemu import GuestBoot, VmConfig, VmFiles, machine_args, qemu_argv

GOLDEN = Path(__file__).parent / "golden"
SYSTEMS = [system.name for system in default_catalog().systems()]


def preview(system: System, directory: Path = Path("/vm")) -> VmConfig:
    boot = GuestBoot(Path("/image/vmlinux"), Path("/image/initrd.img"), "console=ttyS0")
    return VmConfig(system, Accelerator.TCG, VmFiles(directory), boot, ssh_port=2222)


def check_golden(name: str, text: str) -> None:
    """Compare with tests/golden/NAME; UPDATE_GOLDEN=1 rewrites it after a deliberate change."""
    path = GOLDEN / name
    if os.environ.get("UPDATE_GOLDEN"):
        path.write_text(text)
    assert path.exists(), f"no golden file {path}: run with UPDATE_GOLDEN=1 once and review it"
    assert text == path.read_text(), f"{name} differs from its golden file (UPDATE_GOLDEN=1 after review)"


@pytest.mark.parametrize("name", SYSTEMS)
def test_qemu_argv_matches_golden(name: str) -> None:
    check_golden(f"{name}.qemu.txt", "\n".join(qemu_argv(preview(default_catalog().load_system(name)))) + "\n")


@pytest.mark.parametrize("name", SYSTEMS)
def test_libvirt_xml_matches_golden(name: str) -> None:
    system = default_catalog().load_system(name)
    check_golden(f"{name}.libvirt.xml", domain_xml(preview(system), f"llamas-{name}", run_as=(0, 0)))


def test_hmat_entries_equal_the_yaml_for_dram_cxl() -> None:
    argv = qemu_argv(preview(default_catalog().load_system("dram-cxl")))
    assert "q35,hmat=on" in argv
    lb = [arg for arg in argv if arg.startswith("hmat-lb")]
    pair = "hmat-lb,initiator=0,target=1,hierarchy=memory"
    assert f"{pair},data-type=read-latency,latency=250" in lb  # cxl-expander.yaml: read_latency: 250ns
    assert f"{pair},data-type=write-latency,latency=250" in lb
    assert f"{pair},data-type=read-bandwidth,bandwidth={round(24e9 / 2**20)}M" in lb  # 24GB/s
    assert "hmat-lb,initiator=0,target=0,hierarchy=memory,data-type=read-latency,latency=80" in lb  # DRAM too
    assert len(lb) == 2 * 4  # two targets, read and write latency and bandwidth


def test_hmat_bandwidths_fit_qemus_16_bit_entries() -> None:
    """HBM's 400 GB/s next to PMEM's 2.5 GB/s: QEMU rejects a table spanning more than 65534 units."""
    for system in default_catalog().systems():
        values = [bw for e in hmat_entries(system) for bw in (e.read_bandwidth_mib, e.write_bandwidth_mib)]
        unit = min(value & -value for value in values)  # QEMU's base: the largest power of two dividing all
        assert max(values) // unit <= 65534


def test_every_pci_device_sits_on_pcie0_when_cxl_is_present() -> None:
    argv = qemu_argv(preview(default_catalog().load_system("cxl-type3")))
    devices = [argv[i + 1] for i, arg in enumerate(argv) if arg == "-device"]
    assert any(d.startswith("pxb-cxl,") for d in devices)
    for device in devices:
        if device.startswith(("virtio-", "pxb-cxl")):
            assert "bus=pcie.0" in device


@pytest.mark.parametrize("name", SYSTEMS)
def test_qemu_accepts_the_machine_and_builds_its_nodes(name: str, tmp_path: Path) -> None:
    """Start QEMU paused (no guest), ask it over QMP what it built, quit."""
    system = default_catalog().load_system(name)
    files = VmFiles(tmp_path)
    for node in system.nodes:
        if node.emulation is Emulation.NVDIMM:
            files.nvdimm(node).write_bytes(b"")
            os.truncate(files.nvdimm(node), node.backing_size)
    argv = ["qemu-system-x86_64", "-nodefaults", "-display", "none", "-S",
            "-qmp", f"unix:{files.qmp},server=on,wait=off", *machine_args(system, Accelerator.TCG, files)]
    qemu = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
    try:
        with Qmp(files.qmp, timeout=20) as qmp:
            memdevs = {dev["id"]: dev["size"] for dev in qmp.execute("query-memdev")}
            cpus = qmp.execute("query-cpus-fast")
            qmp.execute("quit")
    finally:
        _, stderr = qemu.communicate(timeout=20)
    assert qemu.returncode == 0, stderr
    for node in system.nodes:
        backend = {Emulation.NUMA_NODE: "mem", Emulation.NVDIMM: "nvmem", Emulation.CXL_TYPE3: "cxlmem"}
        assert memdevs[f"{backend[node.emulation]}{node.id}"] == node.backing_size
    assert len(cpus) == system.cpu_count
    for cpu in cpus:
        socket = cpu["props"]["socket-id"]
        assert cpu["props"]["node-id"] == system.initiator_of(socket).id


@pytest.mark.parametrize("name", SYSTEMS)
def test_libvirt_xml_validates_against_libvirts_schema(name: str, tmp_path: Path) -> None:
    xml = tmp_path / f"{name}.xml"
    xml.write_text(domain_xml(preview(default_catalog().load_system(name)), f"llamas-{name}", run_as=(0, 0)))
    done = subprocess.run(["virt-xml-validate", str(xml), "domain"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_libvirt_cells_leave_out_nvdimm_nodes_and_pass_them_on_the_command_line() -> None:
    xml = domain_xml(preview(default_catalog().load_system("three-tier")), "llamas-three-tier")
    assert '<cell id="1" memory="1024" unit="MiB">' in xml
    assert 'cell id="2"' not in xml
    assert '<qemu:arg value="nvdimm,id=nvdimm2,memdev=nvmem2,node=2" />' in xml
    assert '<qemu:arg value="dist,src=0,dst=2,val=38" />' in xml


def test_render_cli_prints_one_option_per_line(capsys: pytest.CaptureFixture[str]) -> None:
    from testbed.cli import main

    assert main(["render", "dram-cxl"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "qemu-system-x86_64 \\"
    assert "  -machine q35,hmat=on \\" in lines
    assert main(["render", "dram-cxl", "--backend", "libvirt"]) == 0
    assert "<interconnects>" in capsys.readouterr().out
