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


@pytest.mark.llamas_systems("dram-cxl", "cxl-type3")
def test_memory_bound_to_the_cxl_node_lands_there(llamas_vm: LlamasVms) -> None:
    vm = llamas_vm(share=PROJECT)
    cxl = next(node for node in vm.numa() if not node.cpus)  # the node with memory and no CPUs
    result = vm.run(f"numactl --membind={cxl.id} python3 /mnt/host/place.py {MIB}")
    assert result.rc == 0, result.stderr
    assert json.loads(result.stdout) == {str(cxl.id): MIB * 2**20 // 4096}


@pytest.mark.llamas_systems("dram-cxl", "cxl-type3")
def test_memory_first_touched_by_a_cpu_lands_on_its_node(llamas_vm: LlamasVms) -> None:
    vm = llamas_vm(share=PROJECT)
    result = vm.run(f"python3 /mnt/host/place.py {MIB}")
    assert result.rc == 0, result.stderr
    local = next(node for node in vm.numa() if node.cpus)
    assert json.loads(result.stdout) == {str(local.id): MIB * 2**20 // 4096}
