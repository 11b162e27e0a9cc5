"""A host directory shared into the guest over virtio-9p, mounted at one fixed path.

The device is part of the machine from boot (QEMU has no hot-added fsdev), so a
warm-start snapshot is keyed by whether a VM has a share, never by which
directory it is: the directory is host-side only and not in the migration
stream, and the tag, which is, is always the same. The guest mounts it only
after a restore, because QEMU refuses to migrate once the guest has attached it.
"""

from __future__ import annotations

from pathlib import Path

from testbed.errors import UserError

SHARE_TAG = "host"  # the 9p mount tag the guest mounts by
GUEST_MOUNT = "/mnt/host"
SHARE_SLOT = 0x09  # a fixed PCI slot, so that the device set of a saved state never moves
# The lean init runs no udev, so nobody loads the drivers on demand.
SHARE_MODULES = ("9pnet_virtio", "9p")
PLACEHOLDER = Path("/share")  # what a snapshot key renders instead of the directory


def share_args(directory: Path) -> list[str]:
    """QEMU options for the share; ``security_model=none``: files keep the host's owners and modes as
    they are, and files the guest's root creates belong to the user QEMU runs as."""
    path = str(directory).replace(",", ",,")  # a comma in QEMU's option syntax is written twice
    return ["-fsdev", f"local,id=share0,path={path},security_model=none",
            "-device", f"virtio-9p-pci,fsdev=share0,mount_tag={SHARE_TAG},id=share,bus=pcie.0,addr={SHARE_SLOT:#x}"]


def mount_script() -> str:
    """Run in the guest once it is up: after the restore, since a mounted share cannot be saved."""
    return (f"set -eu; modprobe -a {' '.join(SHARE_MODULES)}; mkdir -p {GUEST_MOUNT}; "
            f"mount -t 9p -o trans=virtio,version=9p2000.L {SHARE_TAG} {GUEST_MOUNT}")


def host_directory(share: str | Path) -> Path:
    """The directory to share, absolute; it must exist, since QEMU would not start without it."""
    directory = Path(share).expanduser().resolve()
    if not directory.is_dir():
        problem = "not a directory" if directory.exists() else "no such directory"
        raise UserError(f"share {share}: {problem}")
    return directory
