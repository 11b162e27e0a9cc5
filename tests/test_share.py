"""A host directory in the guest: the QEMU options it renders, how it keys saved states, and proof
that QEMU restores a state saved with a share into another directory but not into a VM without one."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from testbed.accel import Accelerator
from testbed.catalog import default_catalog
from testbed.cli import build_parser
from testbed.errors import UserError
from testbed.image import Image
from testbed.machine import QemuMachine, VmBackend
from testbed.render_libvirt import domain_xml
from testbed.render_qemu import GuestBoot, VmConfig, VmFiles, qemu_argv
from testbed.share import host_directory, mount_script, share_args
from testbed.vms import BootKind, Vm, VmRecord, snapshot_key


def config(directory: Path, share: Path | None, incoming: Path | None = None) -> VmConfig:
    boot = GuestBoot(Path("/image/vmlinux"), Path("/image/initrd.img"), "console=ttyS0")
    return VmConfig(default_catalog().load_system("dram-cxl"), Accelerator.TCG, VmFiles(directory), boot,
                    ssh_port=2222, incoming=incoming, share=share)


def record(share: str) -> VmRecord:
    return VmRecord(name="vm", system="dram-cxl", catalog="devices", backend=VmBackend.QEMU, accel=Accelerator.TCG,
                    accel_reason="test", ssh_port=2222, image="image", handle="", started=0.0, boot=BootKind.COLD,
                    boot_seconds=0.0, cmdline="console=ttyS0", share=share)


def test_a_share_is_a_9p_device_in_a_fixed_slot_on_pcie0() -> None:
    assert share_args(Path("/home/me/build")) == [
        "-fsdev", "local,id=share0,path=/home/me/build,security_model=none",
        "-device", "virtio-9p-pci,fsdev=share0,mount_tag=host,id=share,bus=pcie.0,addr=0x9"]


def test_a_comma_in_the_directory_is_doubled_as_qemus_option_syntax_wants() -> None:
    assert "path=/tmp/a,,b,security_model=none" in share_args(Path("/tmp/a,b"))[1]


def test_the_share_follows_the_network_and_comes_before_an_incoming_state() -> None:
    without = qemu_argv(config(Path("/vm"), None))
    argv = qemu_argv(config(Path("/vm"), Path("/build"), incoming=Path("/state.bin")))
    assert argv == [*without, *share_args(Path("/build")), "-incoming", "file:/state.bin"]
    assert not any("9p" in arg or "fsdev" in arg for arg in without)


def test_libvirt_passes_the_same_device_on_its_command_line_and_still_validates(tmp_path: Path) -> None:
    xml = domain_xml(config(Path("/vm"), Path("/build")), "llamas-dram-cxl", run_as=(0, 0))
    for arg in share_args(Path("/build")):
        assert f'<qemu:arg value="{arg}" />' in xml
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_guest_loads_the_9p_drivers_and_mounts_the_tag_at_mnt_host() -> None:
    script = mount_script()
    assert "modprobe -a 9pnet_virtio 9p" in script
    assert script.endswith("mount -t 9p -o trans=virtio,version=9p2000.L host /mnt/host")


def test_a_share_must_be_an_existing_directory(tmp_path: Path) -> None:
    assert host_directory(tmp_path) == tmp_path.resolve()
    with pytest.raises(UserError, match="no such directory"):
        host_directory(tmp_path / "missing")
    (tmp_path / "file").write_text("")
    with pytest.raises(UserError, match="not a directory"):
        host_directory(tmp_path / "file")


def test_saved_states_are_keyed_by_whether_there_is_a_share_not_by_which_directory(tmp_path: Path) -> None:
    def key(share: str) -> str:
        return snapshot_key(Vm(record(share), default_catalog().load_system("dram-cxl"), Image(tmp_path)))

    assert key("/home/me/build") == key("/srv/other")
    assert key("") != key("/home/me/build")


def test_a_record_written_before_shares_existed_still_reads(tmp_path: Path) -> None:
    record("/build").write(tmp_path)
    data = json.loads((tmp_path / "vm.json").read_text())
    del data["share"]
    (tmp_path / "vm.json").write_text(json.dumps(data))
    assert VmRecord.read(tmp_path) == replace(record("/build"), share="")


def test_llamas_up_takes_a_share() -> None:
    assert build_parser().parse_args(["up", "dram-cxl", "--share", "build/"]).share == "build/"
    assert build_parser().parse_args(["up", "dram-cxl"]).share is None


def test_qemu_restores_a_share_into_another_directory_but_not_into_a_vm_without_one(tmp_path: Path) -> None:
    """What the snapshot key rests on, shown on QEMU itself (no guest: the firmware finds nothing to boot)."""
    state = tmp_path / "state.bin"
    for name in ("saved", "other-dir", "no-share", "a", "b"):
        (tmp_path / name).mkdir()
    saved = QemuMachine(replace(config(tmp_path / "saved", tmp_path / "a"), boot=None, ssh_port=None))
    saved.start()
    saved.save(state)
    restored = QemuMachine(replace(config(tmp_path / "other-dir", tmp_path / "b", state), boot=None, ssh_port=None))
    try:
        restored.start()
        assert restored.alive()
    finally:
        restored.stop()
    mismatched = QemuMachine(replace(config(tmp_path / "no-share", None, state), boot=None, ssh_port=None))
    try:
        with pytest.raises((UserError, OSError)):  # QEMU exits while we ask it how the restore goes
            mismatched.start()
    finally:
        mismatched.stop()
    qemu_said = VmFiles(tmp_path / "no-share").qemu_log.read_text()
    assert "Unknown savevm section or instance '0000:00:09.0/virtio-9p'" in qemu_said
