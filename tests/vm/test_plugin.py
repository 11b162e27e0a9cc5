"""The pytest plugin on a real guest, as another project would use it: a host directory shared
into dram-cxl and used both ways, files copied over SSH, and the NUMA nodes the guest sees."""

from __future__ import annotations

from pathlib import Path

from testbed.image import Image
from testbed.pytest_plugin import LlamasVms
from testbed.vms import BootKind


def test_a_shared_host_directory_is_read_and_written_in_a_restored_dram_cxl_guest(
        guest_image: Image, llamas_vm: LlamasVms, tmp_path: Path) -> None:
    # guest_image: built once per session, and VMs kept in the session's own state directory.
    build = tmp_path / "build"
    build.mkdir()
    (build / "input.txt").write_text("written on the host\n")
    vm = llamas_vm("dram-cxl", share=build)
    # Restored from a state saved with the share device (the first time, right after the cold boot).
    assert vm.vm.record.boot == BootKind.WARM
    result = vm.run("cat /mnt/host/input.txt && echo written in the guest > /mnt/host/output.txt")
    assert result.rc == 0, result.stderr
    assert result.stdout == "written on the host\n"
    assert (build / "output.txt").read_text() == "written in the guest\n"

    vm.put(build / "input.txt", "/root/copied.txt")
    vm.get("/root/copied.txt", tmp_path / "back.txt")
    assert (tmp_path / "back.txt").read_text() == "written on the host\n"

    nodes = vm.numa()
    assert [node.id for node in nodes] == [0, 1]
    assert nodes[1].cpus == () and nodes[1].total_bytes > 0  # the CXL expander: memory, no CPUs
    report = vm.verify()
    assert report.ok, report.table()
