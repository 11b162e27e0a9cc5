"""Every machine in the catalog boots and the guest sees exactly what its YAML says."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from testbed.catalog import default_catalog
from testbed.verify import verify_vm
from testbed.vms import BootFailed, Vm, all_vms, up

SYSTEMS = [system.name for system in default_catalog().systems()]


@pytest.mark.parametrize("system", SYSTEMS)
def test_every_system_boots_and_verifies_on_qemu(system: str, booted: Callable[[str], Vm]) -> None:
    vm = booted(system)
    report = verify_vm(vm)
    assert report.ok, report.table()
    assert vm.shell().run("uname -r").stdout.startswith("6.12.")


def test_libvirt_gives_the_same_guest(fresh_vm: Callable[..., Vm]) -> None:
    vm = fresh_vm("three-tier", name="test-libvirt", backend="libvirt")
    assert vm.record.backend == "libvirt"
    report = verify_vm(vm)
    assert report.ok, report.table()


def test_a_warm_start_restores_a_ready_guest_with_the_right_clock(fresh_vm: Callable[..., Vm]) -> None:
    first = fresh_vm("dram-pmem", name="test-warm-1")
    second = fresh_vm("dram-pmem", name="test-warm-2")  # the same machine: restored from the saved state
    assert second.record.boot == "warm"
    assert second.record.ssh_port != first.record.ssh_port
    guest_time = float(second.shell().run("date +%s.%N").stdout)
    assert abs(guest_time - time.time()) < 2.0
    # The restored guest is a whole machine: its devices are still NUMA nodes and it has its own disk.
    assert verify_vm(second).ok
    # PMEM onlined as normal memory: a workload that fills DRAM spills over instead of being OOM-killed.
    zones = second.shell().run("cat /sys/devices/system/node/node1/memory*/valid_zones").stdout.split()
    assert set(zones) == {"Normal"}, zones
    second.shell().run("echo written-by-second > /root/mark")
    assert first.shell().run("cat /root/mark 2>/dev/null || echo absent").stdout.strip() == "absent"


def test_a_broken_kernel_command_line_fails_with_the_console_tail(guest_image: object) -> None:
    started = time.monotonic()
    with pytest.raises(BootFailed) as failure:
        up("dram-only", name="test-broken", warm=False, extra_cmdline="root=/dev/vdz", log=print)
    message = str(failure.value)
    assert "cannot mount the root file system /dev/vdz" in message
    assert "console" in message.lower()
    assert time.monotonic() - started < 120
    leftover = [vm for vm in all_vms() if vm.name == "test-broken"]
    assert leftover and not leftover[0].machine.alive()  # stale: shown by `llamas ls`, cleared by down
    leftover[0].down()


def test_down_leaves_no_process_and_no_files(fresh_vm: Callable[..., Vm]) -> None:
    vm = fresh_vm("dram-only", name="test-down")
    machine = vm.machine
    assert machine.alive()
    vm.down()
    assert not machine.alive()
    assert not vm.files.directory.exists()
