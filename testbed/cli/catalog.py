"""Commands that read the device catalog: devices, systems, show, render."""

from __future__ import annotations

import argparse
import shlex
from pathlib import Path

from testbed.accel import Accelerator
from testbed.machine import VmBackend

PREVIEW_DIR = Path("VM_DIR")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    commands.add_parser("devices", help="list the device catalog").set_defaults(handler=devices)
    commands.add_parser("systems", help="list the machines").set_defaults(handler=systems)
    show = commands.add_parser("show", help="one machine: nodes, tiers, distances, HMAT")
    show.add_argument("system", help="a name from devices/systems/ or a path to a system YAML")
    show.set_defaults(handler=show_command)
    render = commands.add_parser("render", help="the QEMU command line or libvirt XML for a machine")
    render.add_argument("system", help="a name from devices/systems/ or a path to a system YAML")
    render.add_argument("--backend", type=VmBackend, choices=list(VmBackend), default=VmBackend.QEMU)
    render.add_argument("--accel", type=Accelerator, choices=list(Accelerator), default=Accelerator.TCG)
    render.set_defaults(handler=render_command)


def devices(args: argparse.Namespace) -> int:
    from testbed.catalog import default_catalog
    from testbed.describe import devices_table

    print(devices_table(default_catalog().devices().values()))
    return 0


def systems(args: argparse.Namespace) -> int:
    from testbed.catalog import default_catalog
    from testbed.describe import systems_table

    print(systems_table(default_catalog().systems()))
    return 0


def show_command(args: argparse.Namespace) -> int:
    from testbed.catalog import default_catalog
    from testbed.describe import show_system

    print(show_system(default_catalog().load_system(args.system)))
    return 0


def render_command(args: argparse.Namespace) -> int:
    print(render(args.system, args.backend, args.accel))
    return 0


def render(system_name: str, backend: VmBackend, accel: Accelerator) -> str:
    """A preview with placeholder paths: what `llamas up` runs, one option per line."""
    from testbed.catalog import default_catalog
    from testbed.render_libvirt import domain_xml
    from testbed.render_qemu import GuestBoot, VmConfig, VmFiles, qemu_argv

    system = default_catalog().load_system(system_name)
    boot = GuestBoot(PREVIEW_DIR / "vmlinux", PREVIEW_DIR / "initrd.img", "KERNEL_CMDLINE")
    vm = VmConfig(system, accel, VmFiles(PREVIEW_DIR), boot=boot, ssh_port=2222)
    if backend == VmBackend.LIBVIRT:
        return domain_xml(vm, f"llamas-{system.name}").rstrip()
    argv = qemu_argv(vm)
    lines = [argv[0]]
    index = 1
    while index < len(argv):
        takes_value = index + 1 < len(argv) and not argv[index + 1].startswith("-")
        lines.append(shlex.join(argv[index:index + 1 + takes_value]))
        index += 1 + takes_value
    return " \\\n  ".join(lines)
