"""`llamas render` as `llamas up` would start the VM: real paths, and libvirt XML that validates."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from testbed.accel import Accelerator
from testbed.catalog import default_catalog
from testbed.image import planned_image
from testbed.kernel import own_kernel
from testbed.preview import planned_domain, planned_vm
from testbed.vms import KERNEL_CMDLINE, vms_dir

SYSTEMS = [system.name for system in default_catalog().systems()]


@pytest.fixture(autouse=True)
def state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))


def test_the_plan_has_the_vms_directory_the_images_kernel_and_the_kernel_arguments() -> None:
    (vms_dir() / "dram-cxl").mkdir(parents=True)  # a VM of that name exists: `up` would take the next
    name, config = planned_vm("dram-cxl", Accelerator.TCG)
    assert name == "dram-cxl-2"
    assert config.files.directory == vms_dir() / "dram-cxl-2"
    assert config.boot is not None
    assert (config.boot.kernel, config.boot.initrd) == (planned_image().kernel, planned_image().initrd)
    assert config.boot.cmdline == KERNEL_CMDLINE


def test_the_plan_boots_the_users_kernel_with_the_initrd_made_in_the_vms_directory(tmp_path: Path) -> None:
    kernel = tmp_path / "bzImage"
    kernel.write_bytes(b"\x7fELF" + bytes(64))
    _, config = planned_vm("dram-cxl", Accelerator.TCG, own_kernel(kernel))
    assert config.boot is not None
    assert (config.boot.kernel, config.boot.initrd) == (kernel, vms_dir() / "dram-cxl/initrd.img")


@pytest.mark.parametrize("name", SYSTEMS)
def test_the_planned_libvirt_domain_validates_with_real_paths(name: str, tmp_path: Path) -> None:
    xml = planned_domain(name, Accelerator.TCG)
    for placeholder in ("VM_DIR", "KERNEL_CMDLINE"):
        assert placeholder not in xml
    assert f"<kernel>{planned_image().kernel}</kernel>" in xml
    assert f'<source file="{vms_dir() / name / "disk.qcow2"}" />' in xml
    assert f"<label>+{os.getuid()}:+{os.getgid()}</label>" in xml  # QEMU runs as the user, as `up` has it
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    done = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
