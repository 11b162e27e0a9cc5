"""The guest image: built from the Debian archive only, cached by what it is made of.

Two stages, each cached under the user's cache directory:
1. a root file system from ``debootstrap`` (keyed by ``images/recipe.yaml`` and the extra packages;
   ~1.5 min),
2. the bootable image (keyed by the recipe, the overlay, the initrd script,
   the guest code, memtouch's compiler flags and the extra packages; ~30 s): overlay files, guest
   daemon and workloads, a fresh client key pair and guest host key, an
   uncompressed ``vmlinux`` (booted through its PVH entry, which saves
   decompression under TCG), a small initrd with only the modules the root disk
   and network need, and an ext4 disk made with ``mkfs.ext4 -d`` (no loop
   device) converted to qcow2.

Extra Debian packages (``llamas image build --packages a,b``, or the ``LLAMAS_GUEST_PACKAGES``
setting, comma-separated) join the recipe's in debootstrap's include list. Each package set is an
image of its own: a build replaces older images of its set only.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import lzma
import os
import re
import shutil
import struct
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from testbed.catalog import REPO_ROOT
from testbed.errors import UserError
from testbed.paths import cache_dir, state_dir
from testbed.proc import run, run_bytes
from testbed.yamlfields import Fields, load_yaml

IMAGES_DIR = REPO_ROOT / "images"
RECIPE_FILE = IMAGES_DIR / "recipe.yaml"
GUEST_DIR = REPO_ROOT / "guest"
GUEST_LIB = Path("opt/llamas/lib")
GUEST_BIN = Path("opt/llamas/bin")
DISK_HEADROOM = 512 * 2**20
PACKAGES_SETTING = "LLAMAS_GUEST_PACKAGES"
# Debian Policy 5.6.1: lowercase letters, digits, plus, minus and periods; two or more, the first alphanumeric.
DEBIAN_PACKAGE_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]+")
Log = Callable[[str], None]


@dataclass(frozen=True)
class Recipe:
    suite: str
    mirror: str
    variant: str
    packages: tuple[str, ...]
    remove: tuple[str, ...]
    initrd_modules: tuple[str, ...]


def load_recipe(path: Path = RECIPE_FILE) -> Recipe:
    fields = Fields(load_yaml(path), path)
    recipe = Recipe(
        suite=fields.text("suite"), mirror=fields.text("mirror"), variant=fields.text("variant"),
        packages=tuple(str(value) for _, value, _ in fields.items("packages")),
        remove=tuple(str(value) for _, value, _ in fields.items("remove")),
        initrd_modules=tuple(str(value) for _, value, _ in fields.items("initrd_modules")),
    )
    fields.done()
    return recipe


@dataclass(frozen=True)
class Image:
    """A built image in the cache."""

    directory: Path

    @property
    def key(self) -> str:
        return self.directory.name

    @property
    def disk(self) -> Path:
        return self.directory / "base.qcow2"

    @property
    def kernel(self) -> Path:
        return self.directory / "vmlinux"

    @property
    def initrd(self) -> Path:
        return self.directory / "initrd.img"

    @property
    def client_key(self) -> Path:
        """The private key the host logs in with."""
        return self.directory / "id_ed25519"

    @property
    def host_key(self) -> Path:
        """The guest's public host key, pinned by every SSH connection."""
        return self.directory / "ssh_host_ed25519_key.pub"

    def manifest(self) -> dict[str, Any]:
        return dict(json.loads((self.directory / "manifest.json").read_text()))


def images_dir() -> Path:
    return cache_dir() / "images"


def guest_packages(names: Iterable[str] | None = None, source: str = "packages") -> tuple[str, ...]:
    """The extra Debian packages of the image: ``names`` (from ``source``, for the error), or else the
    LLAMAS_GUEST_PACKAGES setting; sorted and without repeats, so that one set has one image key."""
    if names is None:
        names, source = os.environ.get(PACKAGES_SETTING, "").split(","), PACKAGES_SETTING
    packages = {name.strip() for name in names} - {""}
    for name in sorted(packages):
        if not DEBIAN_PACKAGE_NAME.fullmatch(name):
            raise UserError(f"{source}: {name!r} is not a Debian package name (lowercase letters, digits, "
                            "'+', '-' and '.'; two or more, the first a letter or digit)")
    return tuple(sorted(packages))


def image_key(packages: tuple[str, ...] = ()) -> str:
    """A hash of everything the image is made of; a change to any of it means a rebuild."""
    from testbed import memtouch  # it loads numpy (for scoring); finding an image (`llamas ls`) must not

    inputs = [RECIPE_FILE, IMAGES_DIR / "initrd-init", Path(__file__)]
    inputs += _files_under(IMAGES_DIR / "overlay") + _files_under(GUEST_DIR)
    # memtouch's source is under guest/, but the binary the image ships is also made of the flags it is built with.
    flags = " ".join(memtouch.MEMTOUCH_CFLAGS)
    return hashlib.sha256(f"{_hash_files(inputs)} {flags} {','.join(packages)}".encode()).hexdigest()[:16]


def planned_image(packages: tuple[str, ...] | None = None) -> Image:
    """Where the image of this code with ``packages`` (default: the LLAMAS_GUEST_PACKAGES setting) is,
    or will be once built."""
    return Image(images_dir() / image_key(guest_packages() if packages is None else packages))


def current_image(packages: tuple[str, ...] | None = None) -> Image | None:
    """The image of this code with ``packages``, if it is built."""
    image = planned_image(packages)
    return image if (image.directory / "manifest.json").exists() else None


def require_image(packages: tuple[str, ...] | None = None) -> Image:
    chosen = guest_packages() if packages is None else packages
    image = current_image(chosen)
    if image is None:
        packages_option = f" --packages {','.join(chosen)}" if chosen else ""
        raise UserError(f"no guest image for this version of the code: run `llamas image build{packages_option}`")
    return image


def build_image(force: bool = False, log: Log = print, packages: tuple[str, ...] | None = None) -> Image:
    """The image of this code with ``packages`` (default: the LLAMAS_GUEST_PACKAGES setting), built if
    it is not in the cache."""
    packages = guest_packages() if packages is None else packages
    existing = current_image(packages)
    if existing and not force:
        log(f"image {existing.key} is up to date ({existing.directory})")
        return existing
    _require_root()
    recipe = load_recipe()
    rootfs = _build_rootfs(recipe, packages, force, log)
    key = image_key(packages)
    final = images_dir() / key
    work = images_dir() / f"{key}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    started = time.monotonic()
    staging = work / "root"
    log("image: copying the root file system")
    run(["cp", "-a", str(rootfs), str(staging)])
    _customise(staging, work, recipe, log)
    release = _kernel(staging, work)
    _initrd(staging, work, recipe, release)
    log("image: making the disk")
    _disk(staging, work)
    _write_manifest(work, staging, recipe, release, key, packages)
    shutil.rmtree(staging)
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)
    log(f"image {key} built in {time.monotonic() - started:.0f} s: {final}")
    _prune(key, rootfs, packages)
    return Image(final)


def _prune(current: str, rootfs: Path, packages: tuple[str, ...] = ()) -> None:
    """Older images of this package set, their saved VM states and older root file systems of the set:
    a new build replaces them. Other package sets' images are theirs to replace.

    An image a VM still runs from is kept (its disk is a layer of the VM's overlay).
    """
    keep = {current} | _images_in_use()
    stale = [path for path in images_dir().iterdir()
             if path.name not in keep and _image_packages(path) in (None, packages)]
    images = {path.name for path in images_dir().iterdir()} - {path.name for path in stale}
    stale += [path for path in (cache_dir() / "snapshots").glob("*") if path.name.split("-")[0] not in images]
    stale += [path for path in rootfs.parent.iterdir() if path != rootfs and _flavour(path) == _flavour(rootfs)]
    for path in stale:
        shutil.rmtree(path, ignore_errors=True)


def _image_packages(directory: Path) -> tuple[str, ...] | None:
    """The extra packages a cached image was built with; None for a build that never finished."""
    try:
        manifest = json.loads((directory / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return tuple(manifest.get("extra_packages", ()))  # older manifests: none


def _flavour(rootfs: Path) -> str:
    """The package-set part of a root file system's name (empty for the recipe's packages alone)."""
    return rootfs.name.removesuffix(".building").partition("+")[2]


def _images_in_use() -> set[str]:
    records = (state_dir() / "vms").glob("*/vm.json")
    return {str(json.loads(record.read_text()).get("image")) for record in records}


def _require_root() -> None:
    if os.geteuid() != 0:
        raise UserError("building the guest image needs root (debootstrap chroots into the new system): "
                        "run `sudo llamas image build`")


def rootfs_dir(packages: tuple[str, ...]) -> Path:
    """Keyed by the recipe, and by the extra packages after a '+' (the recipe's alone keep the plain key)."""
    key = _hash_files([RECIPE_FILE])[:16]
    if packages:
        key += "+" + hashlib.sha256(",".join(packages).encode()).hexdigest()[:8]
    return cache_dir() / "rootfs" / key


def _build_rootfs(recipe: Recipe, packages: tuple[str, ...], force: bool, log: Log) -> Path:
    rootfs = rootfs_dir(packages)
    if rootfs.exists() and not force:
        return rootfs
    partial = rootfs.with_name(f"{rootfs.name}.building")
    shutil.rmtree(partial, ignore_errors=True)
    partial.parent.mkdir(parents=True, exist_ok=True)
    included = (*recipe.packages, *packages)
    log(f"image: debootstrap {recipe.suite} ({recipe.variant}, {len(included)} packages); about 1.5 minutes")
    run(["debootstrap", f"--variant={recipe.variant}", f"--include={','.join(included)}",
         recipe.suite, str(partial), recipe.mirror])
    shutil.rmtree(rootfs, ignore_errors=True)
    partial.rename(rootfs)
    return rootfs


def _customise(root: Path, work: Path, recipe: Recipe, log: Log) -> None:
    for pattern in recipe.remove:
        for path in root.glob(pattern):
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    shutil.copytree(IMAGES_DIR / "overlay", root, dirs_exist_ok=True, symlinks=True)
    (root / "etc/hostname").write_text("llamas-guest\n")
    _install_guest_code(root, log)
    _enable_systemd_units(root, ["systemd-networkd.service", "ssh.service", "llamas-ready.service"])
    _keys(root, work)


def _install_guest_code(root: Path, log: Log) -> None:
    from testbed import memtouch

    shutil.copytree(GUEST_DIR / "guestd", root / GUEST_LIB / "guestd",
                    ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
    log("image: building the workloads")
    (root / GUEST_BIN).mkdir(parents=True, exist_ok=True)
    shutil.copy2(memtouch.build_memtouch(cache_dir() / "workloads"), root / GUEST_BIN / "memtouch")


def _enable_systemd_units(root: Path, units: Iterable[str]) -> None:
    """Only the systemd boot (a benchmark baseline) uses these; the lean init ignores them."""
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for unit in units:
        link = wants / unit
        if not link.exists() and not link.is_symlink():
            shipped = root / "etc/systemd/system" / unit
            link.symlink_to(f"/etc/systemd/system/{unit}" if shipped.exists() else f"/usr/lib/systemd/system/{unit}")


def _keys(root: Path, work: Path) -> None:
    """A fresh client key pair and guest host key per image; the host key is pinned, never learned."""
    for old in (root / "etc/ssh").glob("ssh_host_*"):
        old.unlink()
    host_key = root / "etc/ssh/ssh_host_ed25519_key"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llamas-guest", "-f", str(host_key)])
    shutil.copy2(host_key.with_suffix(".pub"), work / "ssh_host_ed25519_key.pub")
    client_key = work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "llamas-host", "-f", str(client_key)])
    ssh_dir = root / "root/.ssh"
    ssh_dir.mkdir(mode=0o700, exist_ok=True)
    authorized = ssh_dir / "authorized_keys"
    shutil.copy2(client_key.with_suffix(".pub"), authorized)
    authorized.chmod(0o600)


def _kernel(root: Path, work: Path) -> str:
    images = sorted((root / "boot").glob("vmlinuz-*"))
    if len(images) != 1:
        raise UserError(f"expected one kernel in the image's /boot, found {[p.name for p in images]}")
    (work / "vmlinux").write_bytes(extract_vmlinux(images[0].read_bytes()))
    return images[0].name.removeprefix("vmlinuz-")


def extract_vmlinux(bzimage: bytes) -> bytes:
    """The ELF kernel inside a bzImage (x86 boot protocol: setup header fields at 0x1f1 and 0x248)."""
    if bzimage[0x202:0x206] != b"HdrS":
        raise UserError("not an x86 bzImage (no HdrS signature)")
    setup_sectors = bzimage[0x1F1] or 4
    payload_offset, payload_length = struct.unpack_from("<II", bzimage, 0x248)
    start = (setup_sectors + 1) * 512 + payload_offset
    payload = bzimage[start:start + payload_length]
    if payload.startswith(b"\x28\xb5\x2f\xfd"):
        # The kernel build appends the uncompressed size (4 bytes) after the zstd frame.
        return _zstd_decompress(payload[:-4])
    if payload.startswith(b"\xfd7zXZ\x00"):
        return lzma.decompress(payload)
    if payload.startswith(b"\x1f\x8b"):
        return gzip.decompress(payload)
    raise UserError(f"unsupported kernel compression (payload starts with {payload[:4].hex()})")


def _zstd_decompress(data: bytes) -> bytes:
    return run_bytes(["zstd", "-d", "-c", "-q"], input_bytes=data)


def _initrd(root: Path, work: Path, recipe: Recipe, release: str) -> None:
    tree = work / "initrd"
    for directory in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        (tree / directory).mkdir(parents=True, exist_ok=True)
    shutil.copy2(root / "usr/bin/busybox", tree / "bin/busybox")
    shutil.copy2(IMAGES_DIR / "initrd-init", tree / "init")
    module_dir = root / "lib/modules" / release
    order = module_load_order((module_dir / "modules.dep").read_text(), recipe.initrd_modules)
    for relative in order:
        (tree / "modules" / module_file(relative)).write_bytes(module_bytes(module_dir / relative))
    (tree / "modules.order").write_text("".join(f"{module_file(r)}\n" for r in order))
    files = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    archive = run_bytes(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0"], tree,
                        "\n".join([".", *files]).encode())
    (work / "initrd.img").write_bytes(archive)
    shutil.rmtree(tree)


def module_load_order(modules_dep: str, wanted: Iterable[str]) -> list[str]:
    """Module paths for ``wanted`` and everything they depend on, dependencies first."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in modules_dep.splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    order: list[str] = []

    def visit(path: str) -> None:
        if path in order:
            return
        for dependency in deps[path]:
            visit(dependency)
        order.append(path)

    for name in wanted:
        if name not in by_name:
            raise UserError(f"kernel module {name!r} (images/recipe.yaml initrd_modules) is not in the kernel")
        visit(by_name[name])
    return order


def module_names(modules_dep: str) -> set[str]:
    """The modules a kernel has (not those built in), as modprobe names them."""
    return {_module_name(line.partition(":")[0]) for line in modules_dep.splitlines() if line}


def _module_name(path: str) -> str:
    return module_file(path).removesuffix(".ko").replace("-", "_")


def module_file(path: str) -> str:
    """A module's file name, uncompressed."""
    return Path(path).name.removesuffix(".xz").removesuffix(".zst").removesuffix(".gz")


def module_bytes(path: Path) -> bytes:
    """A module, decompressed: busybox insmod cannot read compressed modules."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return _zstd_decompress(data)
    return data


def _disk(root: Path, work: Path) -> None:
    used = sum(p.lstat().st_size for p in root.rglob("*"))
    raw = work / "disk.raw"
    with raw.open("wb") as file:
        file.truncate(used + DISK_HEADROOM)
    run(["mkfs.ext4", "-q", "-F", "-L", "llamas-root", "-d", str(root), str(raw)])
    run(["qemu-img", "convert", "-O", "qcow2", str(raw), str(work / "base.qcow2")])
    raw.unlink()


def _write_manifest(work: Path, root: Path, recipe: Recipe, release: str, key: str,
                    packages: tuple[str, ...]) -> None:
    manifest = {
        "key": key,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "suite": recipe.suite,
        "kernel": release,
        "extra_packages": list(packages),
        "packages": installed_packages((root / "var/lib/dpkg/status").read_text()),
    }
    (work / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")


def installed_packages(dpkg_status: str) -> dict[str, str]:
    packages = {}
    for stanza in dpkg_status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line and line[0] != " ")
        if fields.get("Status", "").endswith(" installed"):
            packages[fields["Package"]] = fields["Version"]
    return dict(sorted(packages.items()))


def _files_under(directory: Path) -> list[Path]:
    return sorted(p for p in directory.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")


def _hash_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0" + path.read_bytes() + b"\0")
    return digest.hexdigest()
