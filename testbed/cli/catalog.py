"""Commands that read the device catalog: devices, systems, show, render."""

from __future__ import annotations

import argparse
import shlex
from typing import TYPE_CHECKING

from testbed.accel import Accelerator
from testbed.cli.output import json_option, print_json
from testbed.machine import VmBackend

if TYPE_CHECKING:
    from testbed.kernel import OwnKernel


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    listing = commands.add_parser("devices", help="list the device catalog")
    json_option(listing)
    listing.set_defaults(handler=devices)
    machines = commands.add_parser("systems", help="list the machines")
    json_option(machines)
    machines.set_defaults(handler=systems)
    show = commands.add_parser("show", help="one machine: nodes, tiers, distances, HMAT")
    show.add_argument("system", help="a name from devices/systems/ or a path to a system YAML")
    json_option(show)
    show.set_defaults(handler=show_command)
    render = commands.add_parser("render", help="the QEMU command line or libvirt XML for a machine")
    render.add_argument("system", help="a name from devices/systems/ or a path to a system YAML")
    render.add_argument("--backend", type=VmBackend, choices=list(VmBackend), default=VmBackend.QEMU)
    render.add_argument("--accel", type=Accelerator, choices=list(Accelerator), default=Accelerator.TCG)
    render.add_argument("--kernel", metavar="PATH", help="as `llamas up --kernel` would boot it")
    render.add_argument("--initrd", metavar="PATH")
    render.add_argument("--modules", metavar="DIR")
    render.set_defaults(handler=render_command)


def devices(args: argparse.Namespace) -> int:
    from testbed.catalog import default_catalog
    from testbed.describe import devices_table

    found = list(default_catalog().devices().values())
    if args.json:
        print_json(found)
    else:
        print(devices_table(found))
    return 0


def systems(args: argparse.Namespace) -> int:
    from testbed.catalog import default_catalog
    from testbed.describe import systems_table

    found = default_catalog().systems()
    if args.json:
        print_json(found)
    else:
        print(systems_table(found))
    return 0


def show_command(args: argparse.Namespace) -> int:
    from testbed.catalog import default_catalog
    from testbed.describe import show_system
    from testbed.hmat import expected_tier, hmat_entries

    system = default_catalog().load_system(args.system)
    if args.json:  # the machine, and what the guest will be told: HMAT entries and the tiers they make
        print_json({"system": system, "hmat": hmat_entries(system),
                    "memory_tiers": {node.id: expected_tier(system, node) for node in system.nodes}})
    else:
        print(show_system(system))
    return 0


def render_command(args: argparse.Namespace) -> int:
    from testbed.kernel import own_kernel

    print(render(args.system, args.backend, args.accel, own_kernel(args.kernel, args.initrd, args.modules)))
    return 0


def render(system_name: str, backend: VmBackend, accel: Accelerator, kernel: OwnKernel | None = None) -> str:
    """What `llamas up` would start now, with its real paths (testbed/preview.py): the libvirt domain,
    or the QEMU command line one option per line."""
    from testbed.preview import planned_domain, planned_vm
    from testbed.render_qemu import qemu_argv

    if backend == VmBackend.LIBVIRT:
        return planned_domain(system_name, accel, kernel).rstrip()
    argv = qemu_argv(planned_vm(system_name, accel, kernel)[1])
    lines = [argv[0]]
    index = 1
    while index < len(argv):
        takes_value = index + 1 < len(argv) and not argv[index + 1].startswith("-")
        lines.append(shlex.join(argv[index:index + 1 + takes_value]))
        index += 1 + takes_value
    return " \\\n  ".join(lines)
