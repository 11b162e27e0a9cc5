"""guestd in a real guest: moving pages, DAMON's ranking, soft-dirty write counts, per-region residency, DAMOS.

Each test runs memtouch with buffers of 32-64 MiB in a shared ``dram-cxl`` VM
(node 0 DRAM with the CPUs, node 1 a CPU-less CXL node): migration under TCG
runs at ~60 MiB/s, so bigger buffers only make the tests slower.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from policies.damos import Damos
from testbed.channel.client import GuestClient
from testbed.channel.replies import DamonRegion, ObserveReply, ResidencyQuery
from testbed.memtouch import RegionLayout, memtouch_input, parse_output
from testbed.units import MIB
from testbed.values import AddressRange, MemoryPolicy, MemoryPolicyKind, NodeView, PolicyContext
from testbed.vms import Vm
from testbed.workload import parse_workload

MEMTOUCH = "/opt/llamas/bin/memtouch"
PAGE = 4096
DRAM, CXL = 0, 1


def memtouch_spec(regions: list[dict[str, Any]]) -> str:
    workload = parse_workload({"name": "guestd-test", "description": "buffers for guestd's tests",
                               "regions": regions, "phases": [{"epochs": 600}]}, Path("tests/vm/test_guestd.py"))
    return memtouch_input(workload)


@contextmanager
def workload(guest: GuestClient, regions: list[dict[str, Any]],
             node: int = DRAM) -> Iterator[tuple[int, dict[str, RegionLayout]]]:
    """memtouch with ``regions`` first touched on ``node``: its pid and buffers by name; killed afterwards."""
    run = guest.run([MEMTOUCH, "-"], stdin=memtouch_spec(regions),
                    memory=MemoryPolicy(MemoryPolicyKind.PREFERRED, (node,)))
    try:
        layout = parse_output([next(run.output(timeout=120)).line])  # printed once every page is touched
        yield run.pid, {region.name: region for region in layout.regions}
    finally:
        run.kill("KILL")


def numa_maps_bytes(vm: Vm, pid: int, buffer: RegionLayout) -> dict[int, int]:
    """Bytes per node of the mappings that hold ``buffer``, as the kernel's numa_maps counts them."""
    ends = {}
    for line in vm.shell().run(f"cat /proc/{pid}/maps").stdout.splitlines():
        low, _, high = line.split()[0].partition("-")
        ends[int(low, 16)] = int(high, 16)
    per_node: dict[int, int] = {}
    for line in vm.shell().run(f"cat /proc/{pid}/numa_maps").stdout.splitlines():
        fields = line.split()
        start = int(fields[0], 16)
        if start >= buffer.address + buffer.size or ends[start] <= buffer.address:
            continue
        for field in fields[2:]:
            key, _, value = field.partition("=")
            if key[:1] == "N" and key[1:].isdigit():
                per_node[int(key[1:])] = per_node.get(int(key[1:]), 0) + int(value) * PAGE
    return per_node


def observe_when_damon_has_data(guest: GuestClient, pid: int, until: Callable[[ObserveReply], bool] | None = None,
                                **options: Any) -> ObserveReply:
    """An observation once DAMON has aggregated a few times after the watch (it adapts its regions), and
    ``until`` holds of it."""
    deadline = time.monotonic() + 60
    while True:
        observation = guest.observe(pid, **options)
        damon = observation.damon
        if damon is not None and damon.time is not None and len(damon.regions) >= 10 and \
                (until is None or until(observation)):
            return observation
        assert time.monotonic() < deadline, f"no DAMON regions for pid {pid} within 60 s: {damon}"
        time.sleep(1)


def overlap_share(start: int, end: int, buffer: RegionLayout) -> float:
    """How much of [start, end) lies in ``buffer``, as a share of [start, end)."""
    return max(0, min(end, buffer.address + buffer.size) - max(start, buffer.address)) / (end - start)


def test_migrate_moves_a_buffer_and_numa_maps_agrees(booted: Callable[[str], Vm]) -> None:
    vm = booted("dram-cxl")
    with vm.guest() as guest, workload(guest, [{"name": "buffer", "size": "64MiB", "pattern": "uniform",
                                                 "accesses": 0}]) as (pid, buffers):
        buffer = buffers["buffer"]
        assert numa_maps_bytes(vm, pid, buffer).get(DRAM, 0) >= buffer.size
        result = guest.migrate(pid, CXL, buffer.size, ranges=[AddressRange(buffer.address, buffer.size)],
                               timeout=120)
        assert result.moved_bytes >= 0.99 * buffer.size, result
        placed = numa_maps_bytes(vm, pid, buffer)
        assert placed.get(CXL, 0) >= 0.99 * buffer.size
        assert placed.get(DRAM, 0) <= 0.01 * buffer.size + MIB  # the buffer's mapping may hold a few other pages


def test_damon_and_soft_dirty_tell_busy_written_and_idle_buffers_apart(booted: Callable[[str], Vm]) -> None:
    vm = booted("dram-cxl")
    regions = [{"name": "written", "size": "32MiB", "pattern": "uniform", "accesses": 200_000, "write_fraction": 0.5},
               {"name": "idle", "size": "32MiB", "pattern": "uniform", "accesses": 0},
               {"name": "read", "size": "32MiB", "pattern": "uniform", "accesses": 200_000}]
    with vm.guest() as guest, workload(guest, regions) as (pid, buffers):
        guest.watch(pid)
        queries = [ResidencyQuery(buffer.address, buffer.size) for buffer in buffers.values()]

        def rates(observation: ObserveReply) -> dict[str, float]:
            damon = observation.damon.regions if observation.damon else ()
            return {name: sum(region.nr_accesses * overlap_share(region.start, region.end, buffer) *
                              (region.end - region.start) for region in damon) / buffer.size
                    for name, buffer in buffers.items()}

        # DAMON adapts its regions: until it has split the busy buffers out of the address space around them,
        # its samples rarely land on them (a loaded host slows that down). Wait for that, within a minute;
        # this also clears the soft-dirty bits of the first touch.
        observe_when_damon_has_data(guest, pid, until=lambda o: rates(o)["written"] > 0 and rates(o)["read"] > 0)
        # One aggregation is 20 samples; the rates are summed over several, so that one unlucky aggregation
        # (a region merged across two buffers, a stalled vCPU) cannot decide the test.
        rate = dict.fromkeys(buffers, 0.0)
        for _ in range(4):
            time.sleep(1)
            observation = guest.observe(pid, ranges=queries)
            rate = {name: rate[name] + value for name, value in rates(observation).items()}
        assert rate["written"] > 2 * rate["idle"] and rate["read"] > 2 * rate["idle"], rate
        written = {name: sum(chunk.written_pages or 0 for chunk in area.chunks) * PAGE / buffer.size
                   for (name, buffer), area in zip(buffers.items(), observation.ranges, strict=True)}
        assert written["written"] > 0.5, written  # 100k stores a second over 8192 pages
        assert written["read"] < 0.05 and written["idle"] < 0.05, written


def test_region_nodes_match_numa_maps(booted: Callable[[str], Vm]) -> None:
    vm = booted("dram-cxl")
    with vm.guest() as guest, workload(guest, [{"name": "buffer", "size": "64MiB", "pattern": "uniform",
                                                 "accesses": 50_000}]) as (pid, buffers):
        buffer = buffers["buffer"]
        half = buffer.size // 2
        guest.migrate(pid, CXL, half, ranges=[AddressRange(buffer.address, half)], timeout=120)
        guest.watch(pid)

        def inside(observation: ObserveReply) -> list[DamonRegion]:
            regions = observation.damon.regions if observation.damon else ()
            return [region for region in regions
                    if buffer.address <= region.start and region.end <= buffer.address + buffer.size]

        # Until DAMON has split the buffer from its neighbours: a region reaching past it may span a gap
        # between mappings, so its bytes cannot be prorated by address.
        observation = observe_when_damon_has_data(
            guest, pid, until=lambda seen: sum(region.end - region.start for region in inside(seen)) >= half,
            soft_dirty=False, region_nodes=True)
        assert observation.damon is not None
        regions = observation.damon.regions
        assert all(region.sampled_pages and region.sampled_pages <= 64 for region in regions)
        assert sum(region.sampled_pages or 0 for region in regions) <= 16384
        for node in (DRAM, CXL):
            # The whole process: the regions' estimates against numa_maps' exact counts.
            estimated = sum((region.nodes or {}).get(node, 0) for region in regions)
            exact = observation.resident_bytes.get(node, 0)
            assert abs(estimated - exact) <= 0.1 * exact + 2 * MIB, (node, estimated, exact)
        # The buffer: its first half on CXL, its second half in DRAM.
        for node, part in ((CXL, (buffer.address, buffer.address + half)),
                           (DRAM, (buffer.address + half, buffer.address + buffer.size))):
            estimated = sum((region.nodes or {}).get(node, 0) for region in inside(observation))
            expected = sum(max(0, min(region.end, part[1]) - max(region.start, part[0]))
                           for region in inside(observation))
            assert abs(estimated - expected) <= 0.1 * expected, (node, estimated, expected)


def test_the_damos_policys_schemes_promote_a_busy_buffer_in_the_kernel(booted: Callable[[str], Vm]) -> None:
    vm = booted("dram-cxl")
    with vm.guest() as guest, workload(guest, [{"name": "busy", "size": "32MiB", "pattern": "uniform",
                                                 "accesses": 200_000}], node=CXL) as (pid, buffers):
        nodes = tuple(NodeView(node.id, node.total_bytes, node.free_bytes, node.cpus, node.tier,
                               node.hmat.read_latency_ns if node.hmat else None, None, None, None)
                      for node in guest.nodes())
        context = PolicyContext("", {}, nodes, 1.0, 64 * MIB, 0.005, (), Path("/nonexistent"))
        assert numa_maps_bytes(vm, pid, buffers["busy"]).get(CXL, 0) >= 0.9 * buffers["busy"].size
        damos = guest.damos(Damos().setup(context).damos)  # per-node kdamonds, quota weights, young filters
        # DAMON finds the last hot pages of the 2 GiB node slowly (its regions split at random), and under CI's
        # load the demotion scheme sends some back (a CI run stopped at 74.7% after 90 s): a majority is the claim.
        deadline = time.monotonic() + 120
        while (placed := numa_maps_bytes(vm, pid, buffers["busy"])).get(DRAM, 0) < 0.5 * buffers["busy"].size:
            assert time.monotonic() < deadline, (placed, guest.damos_stats(damos.id).schemes)
            time.sleep(2)
        report = guest.damos_stop(damos.id)
        assert report.schemes[0].action == "migrate_hot" and report.schemes[0].stats["sz_applied"] > 0
