"""VMs: bring a system up (cold, or warm from a saved state), find them, take them down.

Each VM lives in ``<state>/vms/<name>/``: its record (vm.json), a qcow2 overlay
(base images are never written), the console log, QMP socket and NVDIMM
backing files. After the first ready boot of an (image, system, backend,
accelerator) the VM state is saved once; later starts restore it in about a
second, on a fresh overlay over the disk as it was at save time.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.accel import Accelerator, choose_accel
from testbed.bringup import bringup_script
from testbed.catalog import Catalog, default_catalog
from testbed.errors import UserError
from testbed.hostmem import check_host_memory
from testbed.image import Image, require_image
from testbed.kernel import OwnKernel, copy_modules
from testbed.machine import Machine, VmBackend, make_machine
from testbed.model import Emulation, System
from testbed.paths import cache_dir, state_dir
from testbed.proc import run
from testbed.render_qemu import QEMU_BINARY, GuestBoot, VmConfig, VmFiles, machine_args
from testbed.share import GUEST_MOUNT, PLACEHOLDER, host_directory, mount_script, share_args

if TYPE_CHECKING:  # SSH (paramiko) is loaded on first connection: `llamas ls` reads records, not guests
    from testbed.channel.client import GuestClient
    from testbed.ssh import GuestShell

# Kernel arguments measured to shorten a TCG boot (each saves boot time under TCG); panic=-1 with
# -no-reboot makes a failed boot end QEMU instead of hanging.
KERNEL_CMDLINE = ("console=ttyS0 root=/dev/vda rw quiet mitigations=off tsc=reliable no_timer_check "
                  "cryptomgr.notests 8250.nr_uarts=1 i8042.noaux i8042.nokbd i8042.nopnp audit=0 panic=-1")
READY_MARKER = "LLAMAS_READY"
GUEST_DAEMON = "guestd"  # installed by the image; speaks guest/PROTOCOL.md on stdin/stdout
BOOT_TIMEOUT = {Accelerator.KVM: 60.0, Accelerator.TCG: 180.0}
RESTORE_TIMEOUT = 60.0
Log = Callable[[str], None]


class BootFailed(UserError):
    pass


class BootKind(StrEnum):
    COLD = "cold"  # booted the kernel
    WARM = "warm"  # restored from a saved state


@dataclass(frozen=True)
class VmRecord:
    name: str
    system: str  # path of the system YAML
    catalog: str  # the device catalog the system was read with
    backend: VmBackend
    accel: Accelerator
    accel_reason: str  # why this accelerator (KVM works, or why not)
    ssh_port: int
    image: str
    handle: str  # the QEMU pid or the libvirt domain name
    started: float
    boot: BootKind
    boot_seconds: float
    cmdline: str
    # Defaults from here on: older records lack these.
    share: str = ""  # the host directory mounted at GUEST_MOUNT
    kernel: str = ""  # the user's kernel (testbed/kernel.py); empty: the image's, with its initrd
    initrd: str = ""
    modules: str = ""  # the lib/modules/<release> tree copied into the guest
    kernel_key: str = ""  # the content of those three, for the saved states

    def write(self, directory: Path) -> None:
        (directory / "vm.json").write_text(json.dumps(asdict(self), indent=2) + "\n")

    @classmethod
    def read(cls, directory: Path) -> VmRecord:
        data = json.loads((directory / "vm.json").read_text())
        return cls(**{**data, "backend": VmBackend(data["backend"]), "accel": Accelerator(data["accel"]),
                      "boot": BootKind(data["boot"])})


def vms_dir() -> Path:
    return state_dir() / "vms"


class Vm:
    """A running VM. A context manager: leaving the block takes it down."""

    def __init__(self, record: VmRecord, system: System, image: Image) -> None:
        self.record = record
        self.system = system
        self.image = image
        self.files = VmFiles(vms_dir() / record.name)
        self._shell: GuestShell | None = None

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def machine(self) -> Machine:
        return make_machine(self.record.backend, self.config(), self.name, self.record.handle)

    def alive(self) -> bool:
        return self.machine.alive()

    def config(self, incoming: Path | None = None) -> VmConfig:
        record = self.record
        boot = GuestBoot(Path(record.kernel) if record.kernel else self.image.kernel,
                         Path(record.initrd) if record.initrd else self.image.initrd, record.cmdline)
        share = Path(self.record.share) if self.record.share else None
        return VmConfig(self.system, self.record.accel, self.files, boot, self.record.ssh_port, incoming, share)

    def shell(self, timeout: float = 30.0) -> GuestShell:
        """The VM's SSH connection, opened on first use and reopened if it dropped."""
        from testbed.ssh import GuestShell

        if self._shell is None or not self._shell.alive:
            self._shell = GuestShell.connect(self.record.ssh_port, self.image.client_key, self.image.host_key,
                                             timeout)
        return self._shell

    def guest(self) -> GuestClient:
        """A client of the guest daemon, on its own channel of the VM's SSH connection."""
        from testbed.channel.client import GuestClient

        return GuestClient(lambda: self.shell().open_exec(GUEST_DAEMON))

    def console_tail(self, lines: int = 25) -> str:
        return console_tail(self.files.console, lines)

    def close(self) -> None:
        if self._shell is not None:
            self._shell.close()
            self._shell = None

    def down(self) -> None:
        self.close()
        self.machine.stop()
        shutil.rmtree(self.files.directory, ignore_errors=True)

    def __enter__(self) -> Vm:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()


def up(system_ref: str, *, catalog: Catalog | None = None, name: str | None = None,
       backend: VmBackend = VmBackend.QEMU, accel: Accelerator | None = None, warm: bool = True,
       extra_cmdline: str = "", image: Image | None = None, log: Log = print, owned: bool = False,
       share: str | Path | None = None, kernel: OwnKernel | None = None) -> Vm:
    """Start a VM for a system (a name in ``catalog``, or a path) and return it ready: SSH works and
    every device is a NUMA node.

    ``share``: a host directory the guest sees, read-write, at ``/mnt/host`` (testbed/share.py).
    ``kernel``: the user's kernel to boot instead of the image's (testbed/kernel.py).

    ``image`` defaults to the one built from the current code; an experiment passes the one it
    started with, so that its runs stay comparable whatever changes meanwhile. ``owned``: the VM dies
    with this process, however it ends (a run's VM; ``llamas up`` leaves its VM running).
    """
    from testbed.ssh import known_hosts_line

    catalog = catalog or default_catalog()
    system = catalog.load_system(system_ref)
    check_host_memory(system)
    shared = host_directory(share) if share is not None else None
    image = image or require_image()
    chosen = choose_accel(accel)
    log(f"accelerator: {chosen.name} ({chosen.reason})")
    name = name or free_name(system.name)
    directory = _claim(name)
    record = VmRecord(name=name, system=str(catalog.system_path(system_ref).resolve()),
                      catalog=str(catalog.root.resolve()), backend=backend, accel=chosen.name,
                      accel_reason=chosen.reason, ssh_port=_free_port(), image=image.key, handle="",
                      started=time.time(), boot=BootKind.COLD, boot_seconds=0.0,
                      cmdline=f"{KERNEL_CMDLINE} {extra_cmdline}".strip(), share=str(shared or ""))
    vm = Vm(record, system, image)
    (directory / "known_hosts").write_text(known_hosts_line(record.ssh_port, image.host_key))
    record.write(directory)
    try:
        if kernel is not None:
            _update(vm, kernel=str(kernel.kernel), initrd=str(kernel.initrd_for(image, vm.files)),
                    modules=str(kernel.modules or ""), kernel_key=kernel.key)
        if warm and not restorable(system):
            log(f"{vm.name}: boots cold: a CXL type-3 device does not survive a saved state")
            warm = False
        _start(vm, warm, log, owned)
        if shared is not None:
            vm.shell().run(mount_script())
            log(f"{vm.name}: {shared} is at {GUEST_MOUNT}")
        return vm
    except BootFailed:
        vm.close()
        vm.machine.stop()  # the directory stays, with its console log, until `llamas down`
        raise
    except BaseException:
        vm.down()
        raise


def restorable(system: System) -> bool:
    """Whether a saved state of the machine restores intact. QEMU 10 does not bring a CXL type-3 device
    back whole: after a restore the guest's own memory on it reads back corrupt (measured: the next module
    load oopses in the slab allocator, on the image's kernel too; a cold boot, dram-cxl, three-tier and
    dram-pmem restored are fine), so such a machine always boots cold."""
    return not any(node.device.emulation is Emulation.CXL_TYPE3 for node in system.nodes)


def booter(system: System, catalog: Catalog, image: Image | None = None, log: Log = print) -> Callable[[str], Vm]:
    """A factory of ready VMs of ``system``, each named by its caller (one per policy run)."""
    def boot(name: str) -> Vm:
        return up(str(system.source), catalog=catalog, name=name, image=image, log=log, owned=True)
    return boot


def _start(vm: Vm, warm: bool, log: Log, owned: bool) -> Vm:
    # Named after the image first, so that a new image build can drop the states of older ones.
    snapshot = Snapshot(cache_dir() / "snapshots" / f"{vm.image.key}-{snapshot_key(vm)}")
    if warm and snapshot.exists():
        try:
            return _restore(vm, snapshot, log, owned)
        except UserError as error:
            log(f"warm start failed ({error}); discarding the saved state and booting cold")
            vm.machine.stop()
            snapshot.discard()
    _cold_boot(vm, log, owned)
    if not warm:
        return vm
    log("saving the ready VM for warm starts")
    vm.close()
    snapshot.save_from(vm)
    return _restore(vm, snapshot, log, owned)


def _cold_boot(vm: Vm, log: Log, owned: bool) -> None:
    started = time.monotonic()
    _prepare_files(vm, vm.image.disk)
    machine = make_machine(vm.record.backend, vm.config(), vm.name, owned=owned)
    machine.start()
    _update(vm, handle=machine.handle)
    _wait_ready(vm, machine, BOOT_TIMEOUT[vm.record.accel])
    if vm.record.modules:  # before the bring-up, which loads drivers from them
        copy_modules(vm.shell(), Path(vm.record.modules))
    script = bringup_script(vm.system)
    if script:
        vm.shell().run(script, timeout=120)
    _update(vm, boot=BootKind.COLD, boot_seconds=round(time.monotonic() - started, 2))
    log(f"{vm.name}: cold boot to ready in {vm.record.boot_seconds:.1f} s ({vm.record.backend}, "
        f"{vm.record.accel})")


def _restore(vm: Vm, snapshot: Snapshot, log: Log, owned: bool) -> Vm:
    started = time.monotonic()
    _prepare_files(vm, snapshot.disk)
    machine = make_machine(vm.record.backend, vm.config(incoming=snapshot.state), vm.name, owned=owned)
    machine.start()
    _update(vm, handle=machine.handle)
    # The guest's clock stopped at save time; set it from the host's.
    vm.shell(timeout=RESTORE_TIMEOUT).run(f"date -s @{time.time():.3f} > /dev/null")
    _update(vm, boot=BootKind.WARM, boot_seconds=round(time.monotonic() - started, 2))
    log(f"{vm.name}: warm start to ready in {vm.record.boot_seconds:.1f} s ({vm.record.backend}, "
        f"{vm.record.accel})")
    return vm


def _prepare_files(vm: Vm, backing: Path) -> None:
    """A fresh overlay over ``backing`` and empty NVDIMM backing files; a fresh console log."""
    files = vm.files
    for stale in (files.disk, files.console):
        stale.unlink(missing_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(backing), str(files.disk)])
    for node in vm.system.nodes:
        if node.emulation is Emulation.NVDIMM:
            with files.nvdimm(node).open("wb") as backing_file:
                backing_file.truncate(node.backing_size)
    files.console.touch()


def _wait_ready(vm: Vm, machine: Machine, timeout: float) -> None:
    """The lean init prints a marker on the serial console once sshd runs (polling SSH
    would not do: user networking accepts connections before sshd listens)."""
    deadline = time.monotonic() + timeout
    while READY_MARKER not in vm.files.console.read_text(errors="replace"):
        if not machine.alive():
            raise BootFailed(f"{vm.name}: the VM stopped during boot. Console ({vm.files.console}), last "
                             f"lines:\n{vm.console_tail()}{qemu_output(vm.files)}")
        if time.monotonic() > deadline:
            raise BootFailed(f"{vm.name}: not ready after {timeout:.0f} s. Console ({vm.files.console}), "
                             f"last lines:\n{vm.console_tail()}")
        time.sleep(0.05)


def _update(vm: Vm, **changes: Any) -> None:
    vm.record = VmRecord(**{**asdict(vm.record), **changes})
    vm.record.write(vm.files.directory)


class Snapshot:
    """A ready VM saved to a file, with its disk as it was at save time."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @property
    def state(self) -> Path:
        return self.directory / "state.bin"

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    def exists(self) -> bool:
        return self.state.exists() and self.disk.exists()

    def save_from(self, vm: Vm) -> None:
        """Save ``vm`` (which stops it); written aside and renamed, so a crash leaves no half snapshot."""
        partial = self.directory.with_name(self.directory.name + ".saving")
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir(parents=True)
        vm.machine.save(partial / "state.bin")
        shutil.copy2(vm.files.disk, partial / "disk.qcow2")
        self.discard()
        partial.rename(self.directory)

    def discard(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)


def snapshot_key(vm: Vm) -> str:
    """Everything a saved state depends on: image, machine, kernel arguments, bring-up, backend, QEMU,
    whether there is a share (its device, not its directory: testbed/share.py), and the user's kernel.

    libvirt restores only into a domain with the saved UUID, and two domains may not share
    one, so there a saved state belongs to one VM name.
    """
    placeholder = VmFiles(Path("/snapshot"))
    identity = {"image": vm.image.key, "backend": vm.record.backend, "accel": vm.record.accel,
                "domain": vm.name if vm.record.backend == VmBackend.LIBVIRT else None,
                "machine": machine_args(vm.system, vm.record.accel, placeholder), "cmdline": vm.record.cmdline,
                "bringup": bringup_script(vm.system), "qemu": run([QEMU_BINARY, "--version"]).splitlines()[0]}
    if vm.record.share:  # only then, so that the states saved before shares existed keep their keys
        identity["share"] = share_args(PLACEHOLDER)
    if vm.record.kernel_key:  # likewise
        identity["kernel"] = vm.record.kernel_key
    return hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]


def console_tail(console: Path, lines: int) -> str:
    return _tail(console, lines) or "(no console output)"


def qemu_output(files: VmFiles, lines: int = 10) -> str:
    """QEMU's last words (why it would not start, e.g. "cannot set up guest memory"), as a paragraph
    for an error message; empty when it said nothing or is not ours to read (libvirt keeps its own log)."""
    tail = _tail(files.qemu_log, lines)
    return f"\nQEMU ({files.qemu_log}), last lines:\n{tail}" if tail else ""


def _tail(path: Path, lines: int) -> str:
    if not path.exists():
        return ""
    text = path.read_text(errors="replace").replace("\r", "")
    return "\n".join(text.strip().splitlines()[-lines:])


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def free_name(base: str) -> str:
    """``base``, or ``base-2``, ``base-3``...: the first no VM has."""
    taken = {path.name for path in vms_dir().glob("*")} if vms_dir().exists() else set()
    name, counter = base, 2
    while name in taken:
        name, counter = f"{base}-{counter}", counter + 1
    return name


def _claim(name: str) -> Path:
    directory = vms_dir() / name
    if directory.exists():
        existing = load_vm(name)
        if existing.machine.alive():
            raise UserError(f"a VM named {name!r} is already running (llamas down {name})")
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def load_vm(name: str) -> Vm:
    directory = vms_dir() / name
    if not (directory / "vm.json").exists():
        known = ", ".join(sorted(p.name for p in vms_dir().glob("*"))) if vms_dir().exists() else ""
        raise UserError(f"no VM named {name!r}" + (f" (known: {known})" if known else " (none are running)"))
    record = VmRecord.read(directory)
    image = Image(cache_dir() / "images" / record.image)
    return Vm(record, Catalog(Path(record.catalog)).load_system(record.system), image)


def running_vm(name: str) -> Vm:
    """The VM ``name``, which must be running: commands that talk to its guest need it."""
    vm = load_vm(name)
    if not vm.machine.alive():
        raise UserError(f"VM {name!r} is not running (llamas down {name} clears it)")
    return vm


def all_vms() -> list[Vm]:
    if not vms_dir().exists():
        return []
    return [load_vm(path.name) for path in sorted(vms_dir().iterdir()) if (path / "vm.json").exists()]
