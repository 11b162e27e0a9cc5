"""Commands for the guest image and VM lifecycle: image, up, ls, ssh, verify, down."""

from __future__ import annotations

import argparse
import os
import time
from dataclasses import asdict

from testbed.accel import Accelerator
from testbed.cli.output import json_option, print_json
from testbed.errors import UserError
from testbed.machine import VmBackend
from testbed.table import render_table


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = commands.add_parser("image", help="build or describe the guest image")
    image_commands = image.add_subparsers(dest="image_command", required=True, metavar="ACTION")
    build = image_commands.add_parser("build", help="build the guest image (cached; needs root)")
    build.add_argument("--force", action="store_true", help="rebuild even if the cached image is current")
    _packages_option(build)
    build.set_defaults(handler=image_build)
    info = image_commands.add_parser("info", help="where the image is and what is in it")
    _packages_option(info)
    json_option(info)
    info.set_defaults(handler=image_info)

    start = commands.add_parser("up", help="start a VM for a system and bring its devices up")
    start.add_argument("system", help="a name from devices/systems/ or a path to a system YAML")
    start.add_argument("--name", help="VM name (default: the system's name, made unique)")
    start.add_argument("--backend", type=VmBackend, choices=list(VmBackend), default=VmBackend.QEMU)
    start.add_argument("--accel", type=Accelerator, choices=list(Accelerator),
                       help="default: KVM where it works, else TCG")
    start.add_argument("--cold", action="store_true", help="boot from scratch; do not use or save a warm state")
    start.add_argument("--share", metavar="DIR", help="a host directory the guest sees, read-write, at /mnt/host")
    start.add_argument("--kernel", metavar="PATH", help="boot this kernel (a bzImage, or a vmlinux with a PVH "
                                                         "entry) instead of the image's")
    start.add_argument("--initrd", metavar="PATH", help="with --kernel: its initrd (default: the image's, "
                                                         "loading the kernel's modules from --modules)")
    start.add_argument("--modules", metavar="DIR", help="with --kernel: its lib/modules/<release> tree "
                                                         "(make modules_install), copied into the guest")
    _packages_option(start)
    start.set_defaults(handler=up_command)

    listing = commands.add_parser("ls", help="list VMs, including stale ones")
    json_option(listing)
    listing.set_defaults(handler=ls_command)

    shell = commands.add_parser("ssh", help="a shell or a command in a VM")
    shell.add_argument("name")
    shell.add_argument("remote", nargs=argparse.REMAINDER, help="-- COMMAND... (default: a login shell)")
    shell.set_defaults(handler=ssh_command)

    verify = commands.add_parser("verify", help="check the guest sees the machine its YAML describes")
    verify.add_argument("name")
    json_option(verify)
    verify.set_defaults(handler=verify_command)

    down = commands.add_parser("down", help="stop VMs and remove their files")
    down.add_argument("name", nargs="?")
    down.add_argument("--all", action="store_true", help="every VM, running or stale")
    down.set_defaults(handler=down_command)


def _packages_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--packages", metavar="A,B", help="extra Debian packages in the guest image, comma-separated "
                                                          "(default: the LLAMAS_GUEST_PACKAGES setting)")


def _packages(args: argparse.Namespace) -> tuple[str, ...]:
    from testbed.image import guest_packages

    return guest_packages(None if args.packages is None else args.packages.split(","), "--packages")


def image_build(args: argparse.Namespace) -> int:
    from testbed.image import build_image

    build_image(force=args.force, packages=_packages(args))
    return 0


def image_info(args: argparse.Namespace) -> int:
    from testbed.image import current_image, planned_image

    packages = _packages(args)
    image = current_image(packages)
    if image is None:
        planned = planned_image(packages)
        if args.json:
            print_json({"built": False, "key": planned.key, "directory": planned.directory})
        else:
            print(f"no image built for this code (key {planned.key}; would be in {planned.directory.parent}); "
                  "run `llamas image build`")
        return 1
    manifest = image.manifest()
    size = sum(p.stat().st_size for p in image.directory.iterdir()) / 2**20
    if args.json:
        print_json({"built": True, "key": image.key, "directory": image.directory, "bytes": round(size * 2**20),
                    "manifest": manifest})
        return 0
    extra = ", ".join(manifest.get("extra_packages", [])) or "none"
    print(f"image {image.key}: {image.directory}\n  built {manifest['built']}, {size:.0f} MiB\n"
          f"  Debian {manifest['suite']}, kernel {manifest['kernel']}, {len(manifest['packages'])} packages "
          f"(extra: {extra})")
    return 0


def up_command(args: argparse.Namespace) -> int:
    from testbed.image import require_image
    from testbed.kernel import own_kernel
    from testbed.vms import up

    kernel = own_kernel(args.kernel, args.initrd, args.modules)
    vm = up(args.system, name=args.name, backend=args.backend, accel=args.accel, warm=not args.cold,
            share=args.share, kernel=kernel, image=require_image(_packages(args)))
    vm.close()
    print(f"{vm.name} is up: llamas ssh {vm.name}; llamas verify {vm.name}; llamas down {vm.name}")
    return 0


def ls_command(args: argparse.Namespace) -> int:
    from testbed.vms import all_vms

    rows = []
    if args.json:
        print_json([{**asdict(vm.record), "system": vm.system.name, "alive": vm.machine.alive()}
                    for vm in all_vms()])
        return 0
    for vm in all_vms():
        state = "running" if vm.machine.alive() else "stale"
        age = time.time() - vm.record.started
        rows.append([vm.name, vm.system.name, vm.record.backend, vm.record.accel, vm.record.ssh_port, state,
                     f"{vm.record.boot} {vm.record.boot_seconds:.1f}s", f"{age / 60:.0f} min"])
    if not rows:
        print("no VMs")
        return 0
    print(render_table(["name", "system", "backend", "accel", "ssh port", "state", "boot", "age"], rows))
    return 0


def ssh_command(args: argparse.Namespace) -> int:
    from testbed.vms import running_vm

    vm = running_vm(args.name)
    remote = args.remote[1:] if args.remote[:1] == ["--"] else args.remote
    argv = ["ssh", "-q", "-i", str(vm.image.client_key), "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={vm.files.directory / 'known_hosts'}", "-o", "StrictHostKeyChecking=yes",
            "-p", str(vm.record.ssh_port), "root@127.0.0.1", *remote]
    os.execvp("ssh", argv)


def verify_command(args: argparse.Namespace) -> int:
    from testbed.verify import verify_vm
    from testbed.vms import load_vm

    vm = load_vm(args.name)
    report = verify_vm(vm)
    if args.json:
        print_json({"ok": report.ok, "checks": report.checks})
    else:
        print(report.table())
        print(f"\n{report.passed} of {len(report.checks)} checks pass")
    return 0 if report.ok else 1


def down_command(args: argparse.Namespace) -> int:
    from testbed.vms import all_vms, load_vm

    if args.all == bool(args.name):
        raise UserError("name one VM, or use --all")
    vms = all_vms() if args.all else [load_vm(args.name)]
    for vm in vms:
        vm.down()
        print(f"{vm.name}: down")
    return 0
