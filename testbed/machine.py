"""The two VM backends behind one interface: a QEMU process we manage, or a libvirt domain.

Both boot the same rendered machine, save its state to a file (stopping it),
and start again from such a file (resuming it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from enum import StrEnum
from pathlib import Path
from typing import Any, Protocol

from testbed.errors import UserError
from testbed.proc import run
from testbed.qmp import Qmp, QmpError
from testbed.render_libvirt import domain_xml
from testbed.render_qemu import VmConfig, qemu_argv

LIBVIRT_SYSTEM_URI = "qemu:///system"
LIBVIRT_SESSION_URI = "qemu:///session"
SETPRIV = "setpriv"  # util-linux, essential on Debian


class VmBackend(StrEnum):
    QEMU = "qemu"  # a QEMU process this package starts and talks to over QMP
    LIBVIRT = "libvirt"  # a libvirt domain


class Machine(Protocol):
    backend: VmBackend

    def start(self) -> None:
        """Boot, or restore ``vm.incoming`` and resume it."""

    def save(self, state: Path) -> None:
        """Pause, write the whole VM state to ``state`` and stop."""

    def alive(self) -> bool: ...

    def stop(self) -> None: ...

    @property
    def handle(self) -> str:
        """What finds this VM again from another process: a pid or a domain name."""


def make_machine(backend: VmBackend, vm: VmConfig, name: str, handle: str | None = None, *,
                 owned: bool = False) -> Machine:
    """``owned``: the VM is this process's alone (a run's) and must not outlive it, even if the process is
    killed (QEMU only: a libvirt domain belongs to libvirtd)."""
    if backend == VmBackend.QEMU:
        return QemuMachine(vm, int(handle) if handle else None, owned=owned)
    return LibvirtMachine(vm, handle or f"llamas-{name}")


def tied_to_caller(argv: list[str]) -> list[str]:
    """``argv`` run so that the kernel sends it SIGTERM when the thread that started it dies, however it dies
    (``kill -9`` included): util-linux's setpriv sets the parent-death signal, which survives the exec."""
    return [SETPRIV, "--pdeathsig", "TERM", "--", *argv]


class QemuMachine:
    backend = VmBackend.QEMU

    def __init__(self, vm: VmConfig, pid: int | None = None, owned: bool = False) -> None:
        self.vm = vm
        self.pid = pid
        self.owned = owned
        self._process: subprocess.Popen[bytes] | None = None  # set when this process started QEMU

    @property
    def handle(self) -> str:
        return str(self.pid)

    def start(self) -> None:
        log = self.vm.files.qemu_log.open("ab")
        # A session of its own: Ctrl-C in the terminal reaches us, not QEMU; we stop it ourselves.
        argv = qemu_argv(self.vm)
        # Started from the runner's main thread, so "its parent dies" means the run's process ended.
        process = subprocess.Popen(tied_to_caller(argv) if self.owned else argv, stdin=subprocess.DEVNULL,
                                   stdout=log, stderr=log, start_new_session=True)
        log.close()
        self._process = process
        self.pid = process.pid
        if self.vm.incoming:
            self._resume_incoming()

    def _resume_incoming(self) -> None:
        with Qmp(self.vm.files.qmp) as qmp:
            while qmp.execute("query-status")["status"] == "inmigrate":
                time.sleep(0.01)
            status = qmp.execute("query-migrate")
            if status.get("status") == "failed":
                raise UserError(f"restoring {self.vm.incoming} failed: {status.get('error-desc', status)}")
            qmp.execute("cont")

    def save(self, state: Path) -> None:
        with Qmp(self.vm.files.qmp) as qmp:
            # Stopped first: live migration of a running TCG guest can trip a QEMU 10.0
            # assertion (tlb_reset_dirty_range_all) with several memory backends.
            qmp.execute("stop")
            qmp.execute("migrate", uri=f"file:{state}")
            while (status := qmp.execute("query-migrate")).get("status") not in ("completed", "failed"):
                time.sleep(0.02)
            if status["status"] == "failed":
                raise UserError(f"saving the VM state failed: {status.get('error-desc', status)}")
        self.stop()

    def alive(self) -> bool:
        if self._process is not None:
            return self._process.poll() is None
        if self.pid is None:
            return False
        try:
            cmdline = Path(f"/proc/{self.pid}/cmdline").read_bytes()
        except OSError:
            return False
        # The pid may have been reused: it is our QEMU only if it names this VM's QMP socket.
        return str(self.vm.files.qmp).encode() in cmdline

    def stop(self) -> None:
        if not self.alive():
            return
        try:
            with Qmp(self.vm.files.qmp, timeout=5) as qmp:
                qmp.execute("quit")
        except (QmpError, OSError):
            pass
        deadline = time.monotonic() + 5
        while self.alive() and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.alive() and self.pid:
            os.kill(self.pid, signal.SIGKILL)
        if self._process is not None:
            self._process.wait()


class LibvirtMachine:
    backend = VmBackend.LIBVIRT

    def __init__(self, vm: VmConfig, domain_name: str) -> None:
        self.vm = vm
        self.domain_name = domain_name
        self._connection: Any = None

    @property
    def connection(self) -> Any:
        if self._connection is None:
            self._connection = libvirt_connection()
        return self._connection

    @property
    def handle(self) -> str:
        return self.domain_name

    def _xml(self) -> str:
        return domain_xml(self.vm, self.domain_name, run_as=(os.getuid(), os.getgid()))

    def start(self) -> None:
        import libvirt

        if self.vm.incoming:
            self.connection.restoreFlags(str(self.vm.incoming), self._xml(), libvirt.VIR_DOMAIN_SAVE_RUNNING)
        else:
            self.connection.createXML(self._xml(), 0)  # transient: nothing is left defined after it stops

    def save(self, state: Path) -> None:
        self._domain().save(str(state))  # libvirt pauses, writes the state and stops the domain

    def alive(self) -> bool:
        import libvirt

        try:
            return bool(self._domain().isActive())
        except libvirt.libvirtError:
            return False

    def stop(self) -> None:
        import libvirt

        with contextlib.suppress(libvirt.libvirtError):
            self._domain().destroy()

    def _domain(self) -> Any:
        return self.connection.lookupByName(self.domain_name)


def libvirt_uri() -> str:
    return LIBVIRT_SYSTEM_URI if os.geteuid() == 0 else LIBVIRT_SESSION_URI


def libvirt_connection() -> Any:
    """A libvirt connection; as root, start libvirtd (and virtlogd) when nothing runs them."""
    import libvirt

    # libvirt prints every error to stderr by default; ours are raised and reported instead.
    libvirt.registerErrorHandler(lambda _context, _error: None, None)
    uri = libvirt_uri()
    try:
        return libvirt.open(uri)
    except libvirt.libvirtError as error:
        if uri != LIBVIRT_SYSTEM_URI:
            raise UserError(f"cannot connect to libvirt at {uri}: {error}") from None
    print("libvirt: libvirtd is not running; starting virtlogd and libvirtd")
    run(["virtlogd", "-d"])
    run(["libvirtd", "-d"])
    deadline = time.monotonic() + 30
    while True:
        try:
            return libvirt.open(uri)
        except libvirt.libvirtError as error:
            if time.monotonic() > deadline:
                raise UserError(f"libvirtd did not come up at {uri}: {error}") from None
            time.sleep(0.2)
