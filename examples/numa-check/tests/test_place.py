"""This project's tests, run in virtual machines with CXL memory through the llamas pytest plugin.

The plugin (installed with the testbed) gives the ``llamas_vm`` fixture and the ``llamas_systems``
marker; this directory is shared into each guest at /mnt/host, so the guest runs the code as it is
here.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from testbed.pytest_plugin import LlamasVms  # for the type only

PROJECT = Path(__file__).parent.parent
MIB = 32


# Where pages land: on dram-cxl (a CXL expander as a CPU-less node) and three-tier (CXL and persistent memory).
@pytest.mark.llamas_systems("dram-cxl", "three-tier")
def test_memory_bound_to_the_cxl_node_lands_there(llamas_vm: LlamasVms) -> None:
    vm = llamas_vm(share=PROJECT)
    cxl = next(node for node in vm.numa() if not node.cpus)  # the node with memory and no CPUs
    result = vm.run(f"numactl --membind={cxl.id} python3 /mnt/host/place.py {MIB}")
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout) == {str(cxl.id): MIB * 2**20 // 4096}


@pytest.mark.llamas_systems("dram-cxl", "three-tier")
def test_memory_first_touched_by_a_cpu_lands_on_its_node(llamas_vm: LlamasVms) -> None:
    vm = llamas_vm(share=PROJECT)
    result = vm.run(f"python3 /mnt/host/place.py {MIB}")
    assert result.rc == 0, result.stderr
    local = next(node for node in vm.numa() if node.cpus)
    assert json.loads(result.stdout) == {str(local.id): MIB * 2**20 // 4096}


# A real CXL type-3 device (QEMU's cxl-type3 behind a CXL root port): its region, committed, and its memory
# online as system RAM on its own node. Only looked at: under TCG a guest that touches this memory hangs
# (QEMU 10, measured), so no pages are placed on it here.
@pytest.mark.llamas_systems("cxl-type3")
def test_the_cxl_type3_device_is_a_committed_region_online_on_its_own_node(llamas_vm: LlamasVms) -> None:
    vm = llamas_vm()
    regions = json.loads(vm.run("cxl list -R").stdout)
    assert [(region["type"], region["decode_state"]) for region in regions] == [("ram", "commit")]
    devices = json.loads(vm.run("daxctl list").stdout)
    assert [device["mode"] for device in devices] == ["system-ram"]
    node = next(node for node in vm.numa() if node.id == devices[0]["target_node"])
    assert not node.cpus and node.total_bytes == regions[0]["size"]
