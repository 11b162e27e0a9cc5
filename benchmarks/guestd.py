"""guestd's speed in a real guest: observing ~1000 DAMON regions, the daemon's CPU use, migrating pages.

1. Round trip of ``observe`` for a process whose DAMON watch holds ~1000 regions
   (a 256 MiB buffer read at random, ``min_regions`` = ``max_regions`` = 1000),
   beside the channel's own round trip (``hello``), which is subtracted.
   Target: at most 10 ms on top of the channel.
2. The daemon's CPU time (utime + stime of its /proc/PID/stat) over 30 s of one
   observation per second, as policies are run, and over 30 s of watching only
   (DAMON recording into its trace instance). Target: at most 1% of a vCPU.
3. ``migrate`` against numactl's ``migratepages`` for the same 256 MiB idle
   buffer, each way between DRAM and the slow node. Target: at least 90%.

    .venv/bin/python benchmarks/guestd.py [--system dram-cxl] [--rounds 20] [--cpu-seconds 30]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
import timeit
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from testbed.channel.client import GuestClient
from testbed.image import build_image
from testbed.memtouch import RegionLayout, memtouch_input, parse_output
from testbed.table import render_table
from testbed.units import MIB
from testbed.values import AddressRange, MemoryPolicy, MemoryPolicyKind, Monitoring
from testbed.vms import Vm, up
from testbed.workload import parse_workload

MEMTOUCH = "/opt/llamas/bin/memtouch"
BUFFER = 256 * MIB
DRAM, SLOW = 0, 1
REGIONS = 1000
# (label, soft_dirty, region_nodes): what the orchestrator asks for is the last row.
OBSERVATIONS = (
    ("DAMON regions only", False, False),
    ("+ soft-dirty write counts", True, False),
    ("+ region nodes (move_pages)", False, True),
    ("+ both", True, True),
)


@contextmanager
def buffer_process(guest: GuestClient, accesses: int) -> Iterator[tuple[int, RegionLayout]]:
    """memtouch holding one 256 MiB buffer on DRAM, read at random ``accesses`` times a second."""
    spec = parse_workload({"name": "bench", "description": "one buffer",
                           "regions": [{"name": "buffer", "size": f"{BUFFER // MIB}MiB", "pattern": "uniform",
                                        "accesses": accesses}],
                           "phases": [{"epochs": 3600}]}, Path(__file__))
    run = guest.run([MEMTOUCH, "-"], stdin=memtouch_input(spec),
                    memory=MemoryPolicy(MemoryPolicyKind.PREFERRED, (DRAM,)))
    try:
        [buffer] = parse_output([next(run.output(timeout=300)).line]).regions
        yield run.pid, buffer
    finally:
        run.kill("KILL")


def median_ms(call: Callable[[], object], rounds: int) -> float:
    return statistics.median(timeit.repeat(call, number=1, repeat=rounds)) * 1e3


def wait_for_regions(guest: GuestClient, pid: int) -> int:
    """DAMON's region count once it has grown to about ``REGIONS`` (it splits a little per aggregation)."""
    deadline = time.monotonic() + 300
    while True:
        damon = guest.observe(pid, soft_dirty=False).damon
        count = len(damon.regions) if damon else 0
        if count >= 0.9 * REGIONS or time.monotonic() > deadline:
            return count
        time.sleep(2)


def observation_table(guest: GuestClient, pid: int, rounds: int) -> str:
    regions = wait_for_regions(guest, pid)
    channel = median_ms(guest.hello, rounds)
    rows: list[list[object]] = [["hello (the channel)", f"{channel:.1f}", "", "", ""]]
    for label, soft_dirty, region_nodes in OBSERVATIONS:
        costs: list[float] = []

        def observe(soft_dirty: bool = soft_dirty, region_nodes: bool = region_nodes,
                    costs: list[float] = costs) -> None:
            costs.append(guest.observe(pid, soft_dirty=soft_dirty, region_nodes=region_nodes).cost_s)

        total = median_ms(observe, rounds)
        rows.append([label, f"{total:.1f}", f"{total - channel:.1f}", f"{statistics.median(costs) * 1e3:.1f}",
                     "yes" if total - channel <= 10 else "no"])
    title = f"observe, {regions} DAMON regions, median of {rounds} (ms)"
    return title + "\n" + render_table(["request", "round trip", "over channel", "daemon", "<= 10 ms"], rows)


def daemon_cpu_shares(vm: Vm, guest: GuestClient, pid: int, seconds: int, observing: bool) -> tuple[float, float]:
    """The daemon's user and system CPU time over ``seconds``, as shares of one vCPU: watching only (its
    trace reader), or also answering one full observation a second."""
    daemon = guest.hello().daemon_pid
    ticks = int(vm.shell().run("getconf CLK_TCK").stdout)

    def cpu_seconds() -> tuple[float, float]:
        fields = vm.shell().run(f"cat /proc/{daemon}/stat").stdout.rpartition(")")[2].split()
        return int(fields[11]) / ticks, int(fields[12]) / ticks  # utime, stime

    before, began = cpu_seconds(), time.monotonic()
    for second in range(seconds):
        if observing:
            guest.observe(pid, soft_dirty=True, region_nodes=True)
        time.sleep(max(0.0, began + second + 1 - time.monotonic()))
    elapsed = time.monotonic() - began
    user, system = (after - start for after, start in zip(cpu_seconds(), before, strict=True))
    return user / elapsed, system / elapsed


def cpu_table(vm: Vm, guest: GuestClient, pid: int, seconds: int) -> str:
    rows = []
    for label, observing in (("watching only", False), ("one observation a second", True)):
        user, system = daemon_cpu_shares(vm, guest, pid, seconds, observing)
        rows.append([label, f"{user + system:.1%}", f"{user:.1%}", f"{system:.1%}",
                     "yes" if user + system <= 0.01 else "no"])
    return f"daemon CPU over {seconds} s, share of one vCPU (observations with soft-dirty and region nodes)\n" + \
        render_table(["daemon", "total", "user", "system", "<= 1%"], rows)


def migration_table(vm: Vm, guest: GuestClient, pid: int, buffer: RegionLayout, cycles: int) -> str:
    """``migrate`` and ``migratepages`` moving the same buffer each way, medians over ``cycles``.

    Each move starts where the last one left the buffer; which tool goes first alternates.
    """
    def guestd(_source: int, target: int) -> float:
        result = guest.migrate(pid, target, BUFFER, ranges=[AddressRange(buffer.address, buffer.size)], timeout=600)
        assert result.moved_bytes >= 0.99 * BUFFER, result
        return result.seconds

    def migratepages(source: int, target: int) -> float:
        timed = vm.shell().run(f"s=$(date +%s%N); migratepages {pid} {source} {target}; e=$(date +%s%N); "
                               "echo $((e - s))", timeout=600)
        return int(timed.stdout) / 1e9

    seconds: dict[tuple[str, int], list[float]] = {}
    for cycle in range(cycles):
        first, second = (guestd, migratepages) if cycle % 2 == 0 else (migratepages, guestd)
        for tool, source, target in ((first, DRAM, SLOW), (second, SLOW, DRAM), (second, DRAM, SLOW),
                                     (first, SLOW, DRAM)):
            seconds.setdefault((tool.__name__, source), []).append(tool(source, target))
    rows = []
    for source, target in ((DRAM, SLOW), (SLOW, DRAM)):
        ours, theirs = (statistics.median(seconds[tool, source]) for tool in ("guestd", "migratepages"))
        rows.append([f"node {source} -> {target}", f"{BUFFER / MIB / ours:.1f}", f"{BUFFER / MIB / theirs:.1f}",
                     f"{theirs / ours:.0%}"])
    return f"migrating 256 MiB, MiB/s, median of {cycles}\n" + render_table(
        ["direction", "guestd migrate", "migratepages", "guestd / migratepages (>= 90%)"], rows)


def silent(_: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--system", default="dram-cxl")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--cpu-seconds", type=int, default=30)
    parser.add_argument("--cycles", type=int, default=3, help="migrations each way per tool")
    args = parser.parse_args()
    build_image(log=silent)
    print(f"guestd on {args.system}; host load average (1 min) {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores\n")
    vm = up(args.system, name="bench-guestd", log=silent)
    try:
        with vm.guest() as guest:
            with buffer_process(guest, accesses=200_000) as (pid, _):
                guest.watch(pid, Monitoring(min_regions=REGIONS, max_regions=REGIONS))
                print(observation_table(guest, pid, args.rounds), end="\n\n")
                print(cpu_table(vm, guest, pid, args.cpu_seconds), end="\n\n")
            with buffer_process(guest, accesses=0) as (pid, buffer):
                print(migration_table(vm, guest, pid, buffer, args.cycles))
        print(f"\nhost load average (1 min) at the end: {os.getloadavg()[0]:.2f}")
    finally:
        vm.down()


if __name__ == "__main__":
    main()
