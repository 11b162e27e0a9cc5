"""`llamas stats` and `llamas migrate` on a real process in a real guest."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator

import pytest

from testbed.cli import main
from testbed.vms import Vm

# 48 MiB written once, on node 0; then it says so and waits.
READY = "/tmp/holder.ready"
HOLDER = (f"rm -f {READY}; numactl --membind=0 python3 -c 'import time; b = bytearray(48 << 20); "
          f"b[::4096] = b\"x\" * (len(b) // 4096); open(\"{READY}\", \"w\").close(); time.sleep(600)' "
          "> /dev/null 2>&1 & echo $!")


@pytest.fixture
def holder(booted: Callable[[str], Vm]) -> Iterator[tuple[Vm, int]]:
    vm = booted("dram-cxl")
    pid = int(vm.shell().run(HOLDER).stdout)
    vm.shell().run(f"for _ in $(seq 300); do [ -e {READY} ] && exit 0; sleep 0.1; done; exit 1")
    yield vm, pid
    vm.shell().run(f"kill {pid}", check=False)


def node_pages(vm: Vm, pid: int) -> dict[int, int]:
    maps = vm.shell().run(f"cat /proc/{pid}/numa_maps").stdout
    pages: dict[int, int] = {}
    for node, count in re.findall(r"\bN(\d+)=(\d+)", maps):
        pages[int(node)] = pages.get(int(node), 0) + int(count)
    return pages


def test_stats_shows_nodes_counters_and_the_process(holder: tuple[Vm, int], capsys: pytest.CaptureFixture[str]
                                                    ) -> None:
    vm, pid = holder
    assert main(["stats", vm.name, "--pid", str(pid), "--window", "1"]) == 0
    out = capsys.readouterr().out
    assert "HMAT latency r/w" in out and "250/250 ns" in out  # the CXL node as the guest sees it
    assert "pgmigrate_success" in out
    assert f"pid {pid}:" in out and "DAMON regions" in out


def test_migrate_moves_a_process_to_the_cxl_node(holder: tuple[Vm, int], capsys: pytest.CaptureFixture[str]
                                                 ) -> None:
    vm, pid = holder
    before = node_pages(vm, pid)
    assert before.get(0, 0) > 12_288  # the 48 MiB buffer, and the rest of the process
    assert main(["migrate", vm.name, "--pid", str(pid), "--to-node", "1"]) == 0
    assert re.search(r"moved \d+ pages", capsys.readouterr().out)
    after = node_pages(vm, pid)
    assert after.get(1, 0) >= 12_288
    # What stays is shared with other processes (libraries), which move_pages leaves in place.
    assert after.get(0, 0) < before[0] - 12_288


def test_migrate_of_a_gone_process_is_one_clear_line(booted: Callable[[str], Vm],
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    vm = booted("dram-cxl")
    assert main(["migrate", vm.name, "--pid", "999999", "--to-node", "1"]) == 2
    assert "999999" in capsys.readouterr().err
