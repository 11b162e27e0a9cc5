import gzip
import lzma
import struct
from pathlib import Path

import pytest

from testbed import memtouch
from testbed.errors import UserError
from testbed.image import extract_vmlinux, image_key, installed_packages, module_load_order

MODULES_DEP = """\
kernel/fs/ext4/ext4.ko.xz: kernel/lib/crc16.ko.xz kernel/fs/mbcache.ko.xz kernel/fs/jbd2/jbd2.ko.xz
kernel/lib/crc16.ko.xz:
kernel/fs/mbcache.ko.xz:
kernel/fs/jbd2/jbd2.ko.xz:
kernel/drivers/net/virtio_net.ko.xz: kernel/drivers/net/net_failover.ko.xz kernel/net/core/failover.ko.xz
kernel/drivers/net/net_failover.ko.xz: kernel/net/core/failover.ko.xz
kernel/net/core/failover.ko.xz:
kernel/crypto/crc32c_generic.ko.xz:
"""


def test_modules_load_after_their_dependencies() -> None:
    order = module_load_order(MODULES_DEP, ["virtio_net", "ext4"])
    names = [path.rsplit("/", 1)[1] for path in order]
    assert names == ["failover.ko.xz", "net_failover.ko.xz", "virtio_net.ko.xz", "crc16.ko.xz",
                     "mbcache.ko.xz", "jbd2.ko.xz", "ext4.ko.xz"]


def test_an_unknown_module_is_named() -> None:
    with pytest.raises(UserError, match="'virtio_scsi'"):
        module_load_order(MODULES_DEP, ["virtio_scsi"])


def bzimage(payload: bytes) -> bytes:
    header = bytearray(1024)
    header[0x1F1] = 1  # one setup sector: the payload area starts at 1024
    header[0x202:0x206] = b"HdrS"
    struct.pack_into("<II", header, 0x248, 16, len(payload))
    return bytes(header) + b"\0" * 16 + payload + b"trailing"


@pytest.mark.parametrize("compress", [gzip.compress, lzma.compress])
def test_vmlinux_comes_out_of_the_bzimage(compress: object) -> None:
    elf = b"\x7fELF" + bytes(range(200))
    assert extract_vmlinux(bzimage(compress(elf))) == elf  # type: ignore[operator]


def test_not_a_bzimage() -> None:
    with pytest.raises(UserError, match="HdrS"):
        extract_vmlinux(b"\0" * 2048)


def test_installed_packages_from_dpkg_status() -> None:
    status = ("Package: python3\nStatus: install ok installed\nVersion: 3.13.5-1\n\n"
              "Package: gone\nStatus: deinstall ok config-files\nVersion: 1\n\n"
              "Package: cxl\nStatus: install ok installed\nVersion: 81-1\nDescription: x\n more\n")
    assert installed_packages(status) == {"cxl": "81-1", "python3": "3.13.5-1"}


def test_a_new_build_prunes_what_no_vm_uses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from testbed import image

    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))
    for path in ("images/new", "images/old", "images/running", "snapshots/new-1", "snapshots/old-2",
                 "snapshots/running-3", "rootfs/current", "rootfs/previous", "state/vms/vm1"):
        (tmp_path / ("" if path.startswith("state") else "cache") / path).mkdir(parents=True)
    (tmp_path / "state/vms/vm1/vm.json").write_text('{"image": "running"}')
    image._prune("new", tmp_path / "cache/rootfs/current")
    left = sorted(str(p.relative_to(tmp_path / "cache")) for p in (tmp_path / "cache").glob("*/*"))
    assert left == ["images/new", "images/running", "rootfs/current", "snapshots/new-1", "snapshots/running-3"]


def test_the_image_key_covers_memtouchs_compiler_flags(monkeypatch: pytest.MonkeyPatch) -> None:
    key = image_key()
    monkeypatch.setattr(memtouch, "MEMTOUCH_CFLAGS", (*memtouch.MEMTOUCH_CFLAGS, "-march=native"))
    assert image_key() != key
