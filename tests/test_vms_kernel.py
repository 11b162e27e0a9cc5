"""Your own kernel (testbed/kernel.py) without a VM: the checks of what the user gives, the initrd made
for it, what it copies into the guest, and how it keys saved states."""

from __future__ import annotations

import io
import lzma
import shutil
import struct
import subprocess
import tarfile
import time
from pathlib import Path
from typing import cast

import pytest

from testbed.accel import Accelerator
from testbed.catalog import default_catalog
from testbed.cli import main
from testbed.errors import UserError
from testbed.image import Image
from testbed.kernel import MODULES_UPLOAD, copy_modules, kernel_release, newc_archive, own_kernel
from testbed.machine import VmBackend
from testbed.render_qemu import VmFiles
from testbed.ssh import CommandResult, GuestShell
from testbed.vms import BootKind, Vm, VmRecord, snapshot_key

RELEASE = "6.13.0-dev"
MODULES_DEP = """\
kernel/drivers/block/virtio_blk.ko.xz:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko
kernel/fs/jbd2/jbd2.ko:
kernel/drivers/cxl/cxl_acpi.ko: kernel/drivers/cxl/core/cxl_core.ko
kernel/drivers/cxl/core/cxl_core.ko:
"""


def bzimage(release: str = RELEASE) -> bytes:
    header = bytearray(0x400)
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<H", header, 0x20E, 0x100)  # the string sits 0x200 further on, at 0x300
    version = f"{release} (dev@host) #1 SMP PREEMPT_DYNAMIC\0".encode()
    header[0x300:0x300 + len(version)] = version
    return bytes(header)


def modules_tree(root: Path, release: str = RELEASE) -> Path:
    """What `make modules_install INSTALL_MOD_PATH=root` leaves: lib/modules/<release> with modules.dep."""
    tree = root / "lib/modules" / release
    for line in MODULES_DEP.splitlines():
        module = tree / line.partition(":")[0]
        module.parent.mkdir(parents=True, exist_ok=True)
        content = f"module {module.name}".encode()
        module.write_bytes(lzma.compress(content) if module.suffix == ".xz" else content)
    (tree / "modules.dep").write_text(MODULES_DEP)
    (tree / "build").symlink_to(root)  # points into the kernel's source tree on the host
    return tree


def test_options_without_a_kernel() -> None:
    assert own_kernel(None) is None
    with pytest.raises(UserError, match=r"^--initrd and --modules go with --kernel$"):
        own_kernel(None, modules="lib/modules/6.13.0")


def test_a_missing_kernel_a_directory_and_a_file_that_is_no_kernel_are_named(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=rf"^{tmp_path}/bzImage: no such file$"):
        own_kernel(tmp_path / "bzImage")
    with pytest.raises(UserError, match=rf"^{tmp_path}: a directory, not a file$"):
        own_kernel(tmp_path)
    (tmp_path / "notes.txt").write_text("not a kernel")
    with pytest.raises(UserError, match=r"notes.txt: not a kernel image \(neither a bzImage nor an ELF vmlinux\)$"):
        own_kernel(tmp_path / "notes.txt")
    (tmp_path / "bzImage").write_bytes(bzimage())
    with pytest.raises(UserError, match=rf"^{tmp_path}/initrd.img: no such file$"):
        own_kernel(tmp_path / "bzImage", initrd=tmp_path / "initrd.img")


def test_the_cli_says_what_is_wrong_in_one_line_and_exits_2(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["up", "dram-cxl", "--kernel", str(tmp_path / "bzImage")]) == 2
    assert capsys.readouterr().err == f"llamas: {tmp_path}/bzImage: no such file\n"
    (tmp_path / "bzImage").write_bytes(bzimage())
    assert main(["up", "dram-cxl", "--kernel", str(tmp_path / "bzImage"), "--modules", str(tmp_path / "m")]) == 2
    assert capsys.readouterr().err == f"llamas: {tmp_path}/m: no such directory\n"


def test_the_release_comes_from_a_bzimage_header_or_a_vmlinux_banner() -> None:
    assert kernel_release(bzimage("6.12.9-llamas+"), "bzImage") == "6.12.9-llamas+"
    vmlinux = b"\x7fELF" + bytes(64) + b"Linux version 6.14.0-rc2 (dev@host) (gcc 14) #3 SMP\n" + bytes(8)
    assert kernel_release(vmlinux, "vmlinux") == "6.14.0-rc2"
    with pytest.raises(UserError, match=r"^vmlinux: no 'Linux version' banner"):
        kernel_release(b"\x7fELF" + bytes(64), "vmlinux")


def test_modules_are_the_release_tree_or_found_under_install_mod_path(tmp_path: Path) -> None:
    tree = modules_tree(tmp_path / "install")
    (tmp_path / "bzImage").write_bytes(bzimage())
    kernel = tmp_path / "bzImage"
    assert own_kernel(kernel, modules=tree) == own_kernel(kernel, modules=tmp_path / "install")
    chosen = own_kernel(kernel, modules=tmp_path / "install")
    assert chosen is not None and chosen.modules == tree and chosen.initrd is None
    with pytest.raises(UserError, match=r"^.*/empty: no modules.dep \(expected the lib/modules/6.13.0-dev tree"):
        (tmp_path / "empty").mkdir()
        own_kernel(kernel, modules=tmp_path / "empty")
    (tmp_path / "bzImage").write_bytes(bzimage("6.12.0"))
    with pytest.raises(UserError, match=r"6.13.0-dev: modules of 6.13.0-dev, but the kernel is 6.12.0$"):
        own_kernel(kernel, modules=tree)
    with pytest.raises(UserError, match=r"bzImage: not a directory$"):
        own_kernel(kernel, modules=kernel)


def cpio_file(archive: bytes, name: str) -> bytes:
    """One file of a cpio archive, as GNU cpio reads it (the proof the format is right)."""
    done = subprocess.run(["cpio", "--quiet", "-i", "--to-stdout", name], input=archive, capture_output=True,
                          check=True)
    return done.stdout


def test_the_initrd_is_the_images_with_this_kernels_root_modules_appended(tmp_path: Path) -> None:
    image = Image(tmp_path / "image")
    image.directory.mkdir()
    image.initrd.write_bytes(newc_archive({"init": b"#!/bin/busybox sh\n", "modules.order": b"debian.ko\n"}))
    (tmp_path / "bzImage").write_bytes(bzimage())
    kernel = own_kernel(tmp_path / "bzImage", modules=modules_tree(tmp_path / "install"))
    assert kernel is not None
    files = VmFiles(tmp_path / "vm")
    files.directory.mkdir()
    initrd = kernel.initrd_for(image, files)
    assert initrd == files.initrd == kernel.booted_initrd(files)
    data = initrd.read_bytes()
    assert data.startswith(image.initrd.read_bytes())
    appended = data[len(image.initrd.read_bytes()):]
    # Dependencies first; virtio_blk decompressed (busybox insmod cannot); crc32c_generic and virtio_net are
    # not modules of this kernel, and cxl_acpi is not for the initrd.
    assert cpio_file(appended, "modules.order") == b"virtio_blk.ko\njbd2.ko\next4.ko\n"
    assert cpio_file(appended, "modules/virtio_blk.ko") == b"module virtio_blk.ko.xz"
    assert kernel.initrd_for(image, files).read_bytes() == data  # the same bytes each time, for restores


def test_without_modules_the_image_initrd_loads_nothing(tmp_path: Path) -> None:
    image = Image(tmp_path)
    image.initrd.write_bytes(newc_archive({"modules.order": b"debian.ko\n"}))
    (tmp_path / "bzImage").write_bytes(bzimage())
    kernel = own_kernel(tmp_path / "bzImage")
    assert kernel is not None
    appended = kernel.initrd_for(image, VmFiles(tmp_path)).read_bytes()[len(newc_archive({"modules.order": b""})):]
    assert cpio_file(appended, "modules.order") == b""


def test_a_users_initrd_is_booted_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(bzimage())
    (tmp_path / "initrd.img").write_bytes(b"mine")
    kernel = own_kernel(tmp_path / "bzImage", initrd=tmp_path / "initrd.img")
    assert kernel is not None
    assert kernel.initrd_for(Image(tmp_path / "image"), VmFiles(tmp_path / "vm")) == tmp_path / "initrd.img"


def test_the_key_follows_the_kernels_and_the_modules_content(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(bzimage())
    tree = modules_tree(tmp_path / "install")

    def key() -> str:
        kernel = own_kernel(tmp_path / "bzImage", modules=tree)
        assert kernel is not None
        return kernel.key

    first = key()
    assert key() == first
    (tree / "kernel/fs/jbd2/jbd2.ko").write_bytes(b"rebuilt")
    second = key()
    assert second != first
    (tmp_path / "bzImage").write_bytes(bzimage() + b"rebuilt")
    assert key() not in (first, second)


class FakeUpload(io.BytesIO):
    def __init__(self, uploads: dict[str, bytes], path: str) -> None:
        super().__init__()
        self._uploads, self._path = uploads, path

    def set_pipelined(self, pipelined: bool) -> None:
        pass

    def close(self) -> None:
        self._uploads[self._path] = self.getvalue()
        super().close()


class FakeSftp:
    def __init__(self, uploads: dict[str, bytes]) -> None:
        self.uploads = uploads

    def open(self, path: str, mode: str) -> FakeUpload:
        assert mode == "wb"
        return FakeUpload(self.uploads, path)

    def __enter__(self) -> FakeSftp:
        return self

    def __exit__(self, *exc: object) -> None:
        pass


class FakeShell:
    def __init__(self) -> None:
        self.uploads: dict[str, bytes] = {}
        self.commands: list[str] = []

    def sftp(self) -> FakeSftp:
        return FakeSftp(self.uploads)

    def run(self, command: str, timeout: float = 120.0, check: bool = True) -> CommandResult:
        self.commands.append(command)
        return CommandResult(command, 0, "", "")


def test_modules_are_copied_owned_by_root_without_the_links_into_the_source_tree(tmp_path: Path) -> None:
    tree = modules_tree(tmp_path / "install")
    shell = FakeShell()
    copy_modules(cast(GuestShell, shell), tree)
    with tarfile.open(fileobj=io.BytesIO(shell.uploads[MODULES_UPLOAD]), mode="r:gz") as archive:
        members = {member.name: member for member in archive.getmembers()}
    assert "./kernel/fs/ext4/ext4.ko" in members and "./modules.dep" in members
    assert "./build" not in members
    assert {(member.uid, member.gid) for member in members.values()} == {(0, 0)}
    assert shell.commands == [f"rm -rf /lib/modules/{RELEASE} && mkdir -p /lib/modules/{RELEASE} && "
                              f"tar -xzf {MODULES_UPLOAD} -C /lib/modules/{RELEASE} && rm {MODULES_UPLOAD}"]


def vm_with(tmp_path: Path, **kernel: str) -> Vm:
    record = VmRecord(name="vm", system="dram-cxl", catalog="devices", backend=VmBackend.QEMU,
                      accel=Accelerator.TCG, accel_reason="test", ssh_port=2222, image="image", handle="",
                      started=time.time(), boot=BootKind.COLD, boot_seconds=0.0, cmdline="console=ttyS0", **kernel)
    return Vm(record, default_catalog().load_system("dram-cxl"), Image(tmp_path / "image"))


def test_a_vm_boots_the_users_kernel_and_its_saved_states_are_the_kernels_own(tmp_path: Path) -> None:
    image_kernel = vm_with(tmp_path)
    boot = image_kernel.config().boot
    assert boot is not None
    assert (boot.kernel, boot.initrd) == (tmp_path / "image/vmlinux", tmp_path / "image/initrd.img")
    own = vm_with(tmp_path, kernel="/build/bzImage", initrd="/vm/initrd.img", kernel_key="a")
    boot = own.config().boot
    assert boot is not None and (boot.kernel, boot.initrd) == (Path("/build/bzImage"), Path("/vm/initrd.img"))
    keys = {snapshot_key(vm) for vm in (image_kernel, own, vm_with(tmp_path, kernel="/build/bzImage", kernel_key="b"))}
    assert len(keys) == 3


def test_a_copied_modules_tree_keeps_its_key(tmp_path: Path) -> None:
    (tmp_path / "bzImage").write_bytes(bzimage())
    tree = modules_tree(tmp_path / "install")
    copy = tmp_path / "elsewhere" / RELEASE
    copy.parent.mkdir()
    shutil.copytree(tree, copy, symlinks=True)
    keys = {kernel.key for kernel in (own_kernel(tmp_path / "bzImage", modules=tree),
                                      own_kernel(tmp_path / "bzImage", modules=copy)) if kernel}
    assert len(keys) == 1
