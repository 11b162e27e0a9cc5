"""VM lifecycle checks that need no VM: host memory, and what a failed boot reports."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.accel import Accelerator
from testbed.catalog import Catalog, default_catalog
from testbed.errors import UserError
from testbed.hostmem import check_host_memory, host_available_memory
from testbed.image import Image
from testbed.machine import QemuMachine, VmBackend
from testbed.render_qemu import VmConfig, VmFiles, guest_memory, qemu_argv
from testbed.vms import (
    BootFailed,
    BootKind,
    Vm,
    VmRecord,
    _wait_ready,
    restorable,
)

GIB = 2**30


def meminfo(tmp_path: Path, available_kib: int | None) -> Path:
    path = tmp_path / "meminfo"
    lines = ["MemTotal:       24576000 kB", "MemFree:          812344 kB"]
    if available_kib is not None:
        lines.append(f"MemAvailable:   {available_kib} kB")
    path.write_text("\n".join([*lines, "Buffers:           1024 kB"]) + "\n")
    return path


def big_system(catalog: Catalog) -> Path:
    """dram-cxl with 64GiB of CXL memory: more than this (or any CI) host has."""
    text = (catalog.systems_dir / "dram-cxl.yaml").read_text()
    assert "name: dram-cxl\n" in text and "{device: cxl-expander, size: 2GiB}" in text
    path = catalog.systems_dir / "dram-cxl-big.yaml"
    path.write_text(text.replace("name: dram-cxl\n", "name: dram-cxl-big\n")
                    .replace("{device: cxl-expander, size: 2GiB}", "{device: cxl-expander, size: 64GiB}"))
    return path


def test_a_guest_bigger_than_the_hosts_available_memory_is_refused(catalog_copy: Catalog, tmp_path: Path) -> None:
    system = catalog_copy.load_system(str(big_system(catalog_copy)))
    fake = meminfo(tmp_path, 20 * GIB // 1024)
    with pytest.raises(UserError) as refused:
        check_host_memory(system, fake)
    assert str(refused.value) == (f"dram-cxl-big: the guest needs 65GiB of memory, this host has 20GiB available "
                                  f"(MemAvailable in {fake})")


def test_a_guest_that_fits_is_let_through(tmp_path: Path) -> None:
    system = default_catalog().load_system("dram-cxl")
    check_host_memory(system, meminfo(tmp_path, 3 * GIB // 1024))  # exactly its 1GiB + 2GiB


def test_a_shortfall_shows_in_the_rounded_numbers(tmp_path: Path) -> None:
    system = default_catalog().load_system("dram-cxl")  # 3GiB
    with pytest.raises(UserError, match=r"needs 3GiB of memory, this host has 2.9GiB available"):
        check_host_memory(system, meminfo(tmp_path, 3 * GIB // 1024 - 1))


def test_without_memavailable_there_is_no_check(tmp_path: Path) -> None:
    system = default_catalog().load_system("dram-cxl")
    assert host_available_memory(meminfo(tmp_path, None)) is None
    assert host_available_memory(tmp_path / "missing") is None
    check_host_memory(system, meminfo(tmp_path, None))
    assert host_available_memory(meminfo(tmp_path, 1000)) == 1000 * 1024


@pytest.mark.parametrize("name", [system.name for system in default_catalog().systems()])
def test_guest_memory_is_what_the_qemu_memory_backends_allocate(name: str) -> None:
    system = default_catalog().load_system(name)
    argv = qemu_argv(VmConfig(system, Accelerator.TCG, VmFiles(Path("/vm"))))
    sizes = [int(size) * 2**20 for arg in argv if arg.startswith("memory-backend-")
             for size in re.findall(r",size=(\d+)M", arg)]
    assert sizes and sum(sizes) == guest_memory(system)


def test_a_qemu_that_exits_during_boot_is_quoted_in_the_error(tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))
    record = VmRecord(name="test-boot", system="dram-cxl", catalog="devices", backend=VmBackend.QEMU,
                      accel=Accelerator.TCG, accel_reason="test", ssh_port=2222, image="none", handle="",
                      started=time.time(), boot=BootKind.COLD, boot_seconds=0.0, cmdline="console=ttyS0")
    vm = Vm(record, default_catalog().load_system("dram-cxl"), Image(tmp_path / "image"))
    vm.files.directory.mkdir(parents=True)
    vm.files.console.touch()
    vm.files.qemu_log.write_text("qemu-system-x86_64: cannot set up guest memory 'cxlmem1': "
                                 "Cannot allocate memory\n")
    with pytest.raises(BootFailed) as failure:
        _wait_ready(vm, QemuMachine(vm.config()), timeout=5)  # never started, so not alive
    message = str(failure.value)
    assert "the VM stopped during boot" in message and "(no console output)" in message
    assert f"QEMU ({vm.files.qemu_log}), last lines:\nqemu-system-x86_64: cannot set up guest memory" in message


def _gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return True
        if state == "Z":  # exited, waiting for init to reap it
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("tied", [True, False])
def test_a_runs_vm_process_dies_with_the_run_even_when_the_run_is_killed(tied: bool) -> None:
    # A stand-in for `llamas run`: it starts a long child (QEMU's place) as QemuMachine.start does, then is
    # killed with SIGKILL, which runs no cleanup of its own.
    starter = ("import subprocess, sys\n"
               "from testbed.machine import tied_to_caller\n"
               "argv = ['sleep', '60']\n"
               f"child = subprocess.Popen(tied_to_caller(argv) if {tied} else argv, start_new_session=True)\n"
               "print(child.pid, flush=True)\n"
               "sys.stdin.read()\n")
    run = subprocess.Popen([sys.executable, "-c", starter], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert run.stdout is not None
    child = int(run.stdout.readline())
    try:
        time.sleep(0.3)  # setpriv has exec'd the child by now
        assert not _gone(child, within=0.1)
        run.kill()
        run.wait(timeout=10)
        assert _gone(child, within=5) is tied
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)


def test_only_a_machine_with_a_cxl_type3_device_boots_cold_every_time() -> None:
    catalog = default_catalog()
    assert not restorable(catalog.load_system("cxl-type3"))
    assert all(restorable(catalog.load_system(name)) for name in ("dram-cxl", "three-tier", "dram-pmem"))
