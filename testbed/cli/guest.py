"""Commands that talk to a running guest's daemon: stats, migrate."""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Any

from testbed.channel.errors import GuestError
from testbed.errors import UserError
from testbed.table import render_table
from testbed.units import format_size
from testbed.values import AddressRange, Monitoring

if TYPE_CHECKING:
    from testbed.channel.client import GuestClient
    from testbed.channel.replies import NodeInfo, ObserveReply
    from testbed.vms import Vm

MIGRATION_COUNTERS = ("pgmigrate_success", "pgmigrate_fail", "pgpromote_success", "pgdemote_kswapd",
                      "pgdemote_direct", "numa_pte_updates", "numa_hint_faults")


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    stats = commands.add_parser("stats", help="what the guest daemon sees: nodes, counters, a process's memory")
    stats.add_argument("name", help="a VM from `llamas ls`")
    stats.add_argument("--pid", type=int, help="also watch this process with DAMON for --window and show it")
    stats.add_argument("--window", type=float, default=2.0, help="seconds of DAMON monitoring (default 2)")
    stats.add_argument("--top", type=int, default=10, help="regions to list, hottest first (default 10)")
    stats.add_argument("--json", action="store_true", help="everything, as JSON")
    stats.set_defaults(handler=stats_command)

    migrate = commands.add_parser("migrate", help="move a process's memory to a node (move_pages)")
    migrate.add_argument("name", help="a VM from `llamas ls`")
    migrate.add_argument("--pid", type=int, required=True)
    migrate.add_argument("--range", dest="range_", metavar="START-END",
                         help="addresses to move (hex or decimal); default: every mapping of the process")
    migrate.add_argument("--to-node", type=int, required=True)
    migrate.add_argument("--budget", type=int, default=2**40, help="at most this many bytes (default: no limit)")
    migrate.set_defaults(handler=migrate_command)


def stats_command(args: argparse.Namespace) -> int:
    from testbed.vms import running_vm

    vm = running_vm(args.name)
    with vm.guest() as guest:
        nodes = guest.nodes()
        counters = guest.vmstat().counters
        observed = _watch(guest, args.pid, args.window) if args.pid is not None else None
    if args.json:
        print(json.dumps({"nodes": [asdict(n) for n in nodes], "vmstat": counters,
                          "process": asdict(observed) if observed else None}, indent=2, default=str))
        return 0
    print(_nodes_table(nodes))
    print("\nkernel migration counters: " + ", ".join(f"{name} {counters.get(name, 0)}"
                                                      for name in MIGRATION_COUNTERS))
    if observed is not None:
        print(f"\n{_process_text(observed, args.top)}")
    return 0


def migrate_command(args: argparse.Namespace) -> int:
    from testbed.vms import running_vm

    vm = running_vm(args.name)
    ranges = [_parse_range(args.range_)] if args.range_ else _mappings(vm, args.pid)
    with vm.guest() as guest:
        try:
            result = guest.migrate(args.pid, args.to_node, args.budget, ranges=ranges, timeout=3600)
        except GuestError as error:
            raise UserError(f"migrate: {error}") from None
    failed = ", ".join(f"{count} {errno}" for errno, count in result.failed.items()) or "none"
    rate = result.moved_bytes / result.seconds / 2**20 if result.seconds else 0.0
    print(f"moved {result.moved_pages} pages ({format_size(result.moved_bytes)}) to node {result.node} in "
          f"{result.seconds:.2f} s ({rate:.0f} MiB/s); already there: {result.already_on_node}; "
          f"not present: {result.not_present}; failed: {failed}"
          + ("; the process exited part way" if result.process_exited else "")
          + ("; stopped at the budget" if result.budget_exhausted else ""))
    return 0


def _watch(guest: GuestClient, pid: int, window: float) -> ObserveReply:
    """DAMON needs a few aggregations to say anything, so watch for a moment before looking."""
    guest.watch(pid, Monitoring())
    guest.observe(pid)  # starts the soft-dirty window
    time.sleep(window)
    return guest.observe(pid)


def _nodes_table(nodes: list[NodeInfo]) -> str:
    rows: list[list[Any]] = []
    for node in nodes:
        hmat = node.hmat
        rows.append([node.id, format_size(node.total_bytes), format_size(node.free_bytes),
                     ",".join(map(str, node.cpus)) or "-", "-" if node.tier is None else node.tier,
                     f"{hmat.read_latency_ns}/{hmat.write_latency_ns} ns" if hmat else "-",
                     f"{hmat.read_bandwidth_mbps}/{hmat.write_bandwidth_mbps} MB/s" if hmat else "-"])
    return render_table(["node", "size", "free", "cpus", "tier", "HMAT latency r/w", "HMAT bandwidth r/w"], rows)


def _process_text(observed: ObserveReply, top: int) -> str:
    resident = ", ".join(f"node {node}: {format_size(size)}" for node, size in sorted(observed.resident_bytes.items()))
    lines = [f"pid {observed.pid}: {format_size(sum(observed.resident_bytes.values()))} resident ({resident}); "
             f"CPU {observed.user_s + observed.system_s:.1f} s; affinity {list(observed.affinity)}"]
    damon = observed.damon
    if damon is None or not damon.regions:
        return "\n".join([*lines, "no DAMON regions yet (try a longer --window)"])
    hottest = sorted(damon.regions, key=lambda region: (-region.nr_accesses, -region.age))[:top]
    rows = [[f"{r.start:#x}-{r.end:#x}", format_size(r.end - r.start), r.nr_accesses, r.age,
             "-" if r.written_pages is None else r.written_pages] for r in hottest]
    lines.append(f"{len(damon.regions)} DAMON regions ({damon.source}); hottest {len(rows)}:")
    lines.append(render_table(["range", "size", "accesses", "age", "pages written"], rows))
    return "\n".join(lines)


def _parse_range(text: str) -> AddressRange:
    try:
        start_text, end_text = text.split("-")
        start, end = int(start_text, 0), int(end_text, 0)
    except ValueError:
        raise UserError(f"--range {text!r}: expected START-END, e.g. 0x7f0000000000-0x7f0004000000") from None
    if end <= start:
        raise UserError(f"--range {text!r}: the end must be above the start")
    return AddressRange(start, end - start)


def _mappings(vm: Vm, pid: int) -> list[AddressRange]:
    """Every mapping of the process, from /proc/PID/maps, but the kernel's own ([vdso], [vvar], [vsyscall])."""
    maps = vm.shell().run(f"cat /proc/{pid}/maps", check=False)
    if maps.exit_code != 0:
        raise UserError(f"pid {pid} is not running in {vm.name}")
    ranges = []
    for line in maps.stdout.splitlines():
        fields = line.split()
        if len(fields) > 5 and fields[5].startswith("[v"):
            continue
        start, end = (int(part, 16) for part in fields[0].split("-"))
        ranges.append(AddressRange(start, end - start))
    return ranges
