"""Your own kernel in the guest: ``llamas up SYSTEM --kernel PATH [--initrd PATH] [--modules DIR]``.

The VM boots the given bzImage (or an ELF ``vmlinux`` with a PVH entry) instead of the image's.
Its initrd is the one given, or else the image's with the modules it loads replaced: the image's
initrd loads the image kernel's modules for the root disk and network, which another kernel
rejects, so an archive is appended that overwrites the load list (and, with ``--modules``, brings
this kernel's builds of those modules; without, they must be built in). The kernel unpacks
concatenated cpio archives in order, later files replacing earlier ones, so the image's busybox
and init serve any kernel.

The rest of the modules (CXL, DAX, NVDIMM, 9p) are copied into the guest's root disk over the VM's
SSH connection after the cold boot, before the bring-up loads them. Copied rather than shared:
the bring-up runs before the warm-start state is saved, and QEMU cannot save a VM whose guest has
a 9p export mounted; and a second disk would take the guest's first virtio disk name from the
root disk under libvirt, whose root disk sits behind a root port. The copy lands in the VM's
overlay, which the saved state keeps, so warm starts pay nothing; the saved state is keyed by
the kernel's, initrd's and modules' content, so it is never reused across kernels.
"""

from __future__ import annotations

import hashlib
import os
import re
import struct
import tarfile
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.errors import UserError
from testbed.image import Image, load_recipe, module_bytes, module_file, module_load_order, module_names
from testbed.render_qemu import VmFiles

if TYPE_CHECKING:
    from testbed.ssh import GuestShell

BZIMAGE_SIGNATURE = (0x202, b"HdrS")  # x86 boot protocol: the setup header's magic
BZIMAGE_VERSION_POINTER = 0x20E  # the kernel version string's offset, less 0x200
ELF_MAGIC = b"\x7fELF"
BANNER = re.compile(rb"Linux version (\S+) \(")  # linux_banner, in an uncompressed vmlinux
MODULES_UPLOAD = "/var/tmp/llamas-modules.tar.gz"  # on the root disk: /tmp is RAM the guest needs
PathArg = str | os.PathLike[str]


@dataclass(frozen=True)
class OwnKernel:
    """A kernel the user built, checked; what a VM boots instead of the image's."""

    kernel: Path
    initrd: Path | None  # the user's own; None: the image's, loading this kernel's modules
    modules: Path | None  # a lib/modules/<release> tree, copied into the guest

    @cached_property
    def key(self) -> str:
        """The content of everything this kernel brings: a saved VM state belongs to one."""
        digest = hashlib.sha256()
        files = {"kernel": self.kernel, **({"initrd": self.initrd} if self.initrd else {})}
        if self.modules is not None:  # by their place in the tree, not on the host: a copied tree is the same
            files |= {f"modules/{path.relative_to(self.modules)}": path for path in _tree_files(self.modules)}
        for name, path in files.items():
            digest.update(name.encode() + b"\0" + path.read_bytes() + b"\0")
        return digest.hexdigest()[:16]

    def booted_initrd(self, files: VmFiles) -> Path:
        """The initrd a VM with these ``files`` boots: the user's, or the one made for it there."""
        return self.initrd or files.initrd

    def initrd_for(self, image: Image, files: VmFiles) -> Path:
        """The initrd to boot: the user's, or the image's made to load this kernel's modules."""
        if self.initrd is not None:
            return self.booted_initrd(files)
        archived: dict[str, bytes] = {}
        if self.modules is not None:
            dep = (self.modules / "modules.dep").read_text()
            # A module the kernel does not list is built in (or, like crc32c_generic in newer kernels, gone).
            wanted = [name for name in load_recipe().initrd_modules if name in module_names(dep)]
            for relative in module_load_order(dep, wanted):
                archived[f"modules/{module_file(relative)}"] = module_bytes(self.modules / relative)
        archived["modules.order"] = "".join(f"{Path(name).name}\n" for name in archived).encode()
        files.initrd.write_bytes(image.initrd.read_bytes() + newc_archive(archived))
        return self.booted_initrd(files)


def own_kernel(kernel: PathArg | None, initrd: PathArg | None = None,
               modules: PathArg | None = None) -> OwnKernel | None:
    """Check the user's kernel options; None when there is no ``kernel`` (the image's is booted)."""
    if kernel is None:
        if initrd is not None or modules is not None:
            raise UserError("--initrd and --modules go with --kernel")
        return None
    kernel_path = _existing_file(kernel)
    image = kernel_path.read_bytes()
    if not (_is_bzimage(image) or image.startswith(ELF_MAGIC)):
        raise UserError(f"{kernel}: not a kernel image (neither a bzImage nor an ELF vmlinux)")
    tree = _modules_tree(modules, kernel_release(image, kernel)) if modules is not None else None
    return OwnKernel(kernel_path, _existing_file(initrd) if initrd is not None else None, tree)


def kernel_release(image: bytes, name: PathArg) -> str:
    """What ``uname -r`` will say: from a bzImage's setup header, or a vmlinux's banner."""
    if _is_bzimage(image):
        (pointer,) = struct.unpack_from("<H", image, BZIMAGE_VERSION_POINTER)
        return image[pointer + 0x200:].split(b" ", 1)[0].decode(errors="replace")
    found = BANNER.search(image)
    if found is None:
        raise UserError(f"{name}: no 'Linux version' banner, so its modules cannot be matched to it")
    return found[1].decode(errors="replace")


def copy_modules(shell: GuestShell, modules: Path) -> None:
    """Copy the modules tree into the guest's /lib/modules (run once, after a cold boot)."""
    target = f"/lib/modules/{modules.name}"
    with shell.sftp() as sftp, sftp.open(MODULES_UPLOAD, "wb") as upload:
        upload.set_pipelined(True)
        # Level 1: modules shrink to about a third, and a higher level costs more time than it saves.
        with tarfile.open(fileobj=upload, mode="w:gz", compresslevel=1) as archive:
            archive.add(modules, arcname=".", filter=_as_root)
    shell.run(f"rm -rf {target} && mkdir -p {target} && tar -xzf {MODULES_UPLOAD} -C {target} && "
              f"rm {MODULES_UPLOAD}", timeout=600)


def _as_root(member: tarfile.TarInfo) -> tarfile.TarInfo | None:
    """Files owned by root in the guest; the ``build`` and ``source`` links point into the host's tree."""
    if member.issym():
        return None
    member.uid = member.gid = 0
    member.uname = member.gname = "root"
    return member


def newc_archive(files: dict[str, bytes]) -> bytes:
    """A cpio "newc" archive of regular files, owned by root and dated 0, so that the same files give
    the same bytes (a restored VM's initrd must be the one it was saved with)."""
    trailer = "TRAILER!!!"
    archive = bytearray()
    for inode, (name, data) in enumerate([*files.items(), (trailer, b"")], start=1):
        mode = 0 if name == trailer else 0o100644
        # inode, mode, uid, gid, links, mtime, size, dev major/minor, rdev major/minor, name size, checksum
        fields = (inode, mode, 0, 0, 1, 0, len(data), 0, 0, 0, 0, len(name) + 1, 0)
        archive += b"070701" + b"".join(b"%08X" % field for field in fields) + name.encode() + b"\0"
        archive += bytes(-len(archive) % 4) + data
        archive += bytes(-len(archive) % 4)
    return bytes(archive)


def _is_bzimage(image: bytes) -> bool:
    offset, signature = BZIMAGE_SIGNATURE
    return image[offset:offset + len(signature)] == signature


def _existing_file(path: PathArg) -> Path:
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        problem = "a directory, not a file" if resolved.is_dir() else "no such file"
        raise UserError(f"{path}: {problem}")
    return resolved


def _modules_tree(modules: PathArg, release: str) -> Path:
    """The lib/modules/<release> tree: ``modules`` itself, or under it (the INSTALL_MOD_PATH given)."""
    directory = Path(modules).expanduser().resolve()
    if not directory.is_dir():
        raise UserError(f"{modules}: {'not a directory' if directory.exists() else 'no such directory'}")
    tree = directory if (directory / "modules.dep").is_file() else directory / "lib/modules" / release
    if not (tree / "modules.dep").is_file():
        raise UserError(f"{modules}: no modules.dep (expected the lib/modules/{release} tree that "
                        "`make modules_install` writes)")
    if tree.name != release:
        raise UserError(f"{modules}: modules of {tree.name}, but the kernel is {release}")
    return tree


def _tree_files(tree: Path) -> list[Path]:
    return sorted(path for path in tree.rglob("*") if path.is_file() and not path.is_symlink())
