"""Your own kernel on a real guest: the image's kernel given as if it were the user's, with a modules
tree of just what the machines need (as a kernel developer's `make modules_install` leaves one)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from testbed.bringup import CXL_MODULES, NVDIMM_MODULES
from testbed.image import Image, load_recipe, module_load_order, rootfs_dir
from testbed.kernel import own_kernel
from testbed.paths import cache_dir
from testbed.share import SHARE_MODULES
from testbed.verify import verify_vm
from testbed.vms import BootKind, Vm, snapshot_key


def modules_tree(image: Image, target: Path) -> Path:
    """The image kernel's modules the guests load, with the kernel's own module indexes."""
    release = str(image.manifest()["kernel"])
    source = rootfs_dir(()) / "lib/modules" / release
    tree = target / "lib/modules" / release
    wanted = [*load_recipe().initrd_modules, *CXL_MODULES, *NVDIMM_MODULES, *SHARE_MODULES]
    for relative in module_load_order((source / "modules.dep").read_text(), wanted):
        (tree / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source / relative, tree / relative)
    for index in source.glob("modules.*"):
        shutil.copy2(index, tree / index.name)
    return tree


# cxl-type3 boots cold every time (a CXL type-3 device does not survive a saved state: testbed.vms.restorable);
# three-tier is saved and restored. Each loads its own drivers from the copied tree.
@pytest.mark.parametrize(("system", "warm", "driver"), [("cxl-type3", False, "cxl_acpi"), ("three-tier", True, "nfit")])
def test_a_kernel_of_ones_own_with_its_modules_brings_the_machine_up(
        system: str, warm: bool, driver: str, guest_image: Image, fresh_vm: Callable[..., Vm],
        tmp_path: Path) -> None:
    kernel = own_kernel(guest_image.kernel, modules=modules_tree(guest_image, tmp_path / "install"))
    assert kernel is not None and kernel.modules is not None
    release = kernel.modules.name
    vm = fresh_vm(system, kernel=kernel)
    # A saved state of its own (there may be one from an earlier session), never the image kernel's.
    own_state = cache_dir() / "snapshots" / f"{guest_image.key}-{snapshot_key(vm)}"
    assert own_state.exists() or not warm
    assert snapshot_key(vm) != snapshot_key(Vm(replace(vm.record, kernel_key=""), vm.system, vm.image))
    assert vm.record.kernel == str(guest_image.kernel) and vm.record.initrd == str(vm.files.initrd)
    shell = vm.shell()
    assert shell.run("uname -r").stdout.strip() == release
    assert shell.run(f"test -f /lib/modules/{release}/modules.dep", check=False).exit_code == 0
    assert f"{driver} " in shell.run("cat /proc/modules").stdout  # loaded by the bring-up from the copied tree
    report = verify_vm(vm)
    assert report.ok, report.table()

    vm.down()
    again = fresh_vm(system, kernel=kernel)
    assert again.record.boot == (BootKind.WARM if warm else BootKind.COLD)
    assert again.shell().run(f"modprobe -a {' '.join(SHARE_MODULES)}", check=False).exit_code == 0
    assert verify_vm(again).ok
