"""What ``llamas up`` would start, without starting it (``llamas render``).

Real paths, not placeholders: the VM directory ``up`` would use now, the current image's kernel
and initrd (where ``llamas image build`` puts them, if it has not yet) or the user's kernel, and
the kernel arguments. So the libvirt XML validates and ``virsh define`` takes it as it is.
"""

from __future__ import annotations

import os

from testbed.accel import Accelerator
from testbed.catalog import Catalog, default_catalog
from testbed.image import planned_image
from testbed.kernel import OwnKernel
from testbed.render_libvirt import domain_xml
from testbed.render_qemu import GuestBoot, VmConfig, VmFiles
from testbed.vms import KERNEL_CMDLINE, free_name, vms_dir

PREVIEW_SSH_PORT = 2222  # `up` takes a free port when it starts


def planned_vm(system_ref: str, accel: Accelerator, kernel: OwnKernel | None = None,
               catalog: Catalog | None = None) -> tuple[str, VmConfig]:
    """The name and configuration of the VM ``llamas up SYSTEM`` would start now."""
    system = (catalog or default_catalog()).load_system(system_ref)
    name = free_name(system.name)
    files = VmFiles(vms_dir() / name)
    image = planned_image()
    boot = GuestBoot(kernel.kernel, kernel.booted_initrd(files), KERNEL_CMDLINE) if kernel else \
        GuestBoot(image.kernel, image.initrd, KERNEL_CMDLINE)
    return name, VmConfig(system, accel, files, boot, ssh_port=PREVIEW_SSH_PORT)


def planned_domain(system_ref: str, accel: Accelerator, kernel: OwnKernel | None = None,
                   catalog: Catalog | None = None) -> str:
    """The libvirt domain the libvirt backend would define, QEMU running as this user (as it does)."""
    name, config = planned_vm(system_ref, accel, kernel, catalog)
    return domain_xml(config, name, run_as=(os.getuid(), os.getgid()))
