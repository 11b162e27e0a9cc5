"""A fake guest for guestd tests: a file tree like a 6.12 guest's, a kernel that reacts to
DAMON and tracefs writes the way the real one does, and fake system calls.

The machine: node 0 (DRAM, CPUs 0-1), node 1 (DRAM, CPUs 2-3), node 2 (a CPU-less
slow node in a lower memory tier), 4 KiB pages, DAMON sysfs and tracefs present.
"""

from __future__ import annotations

import errno
import io
import itertools
import json
import os
import queue
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from guest.guestd.daemon import Daemon
from guest.guestd.kernel import Kernel
from guest.guestd.process import PAGE_SIZE
from guest.guestd.protocol import Output
from guest.guestd.tracefs import Region
from testbed.units import MIB

RELEASE = "6.12.48-amd64"
GIB = 1 << 30
TRACEFS = "sys/kernel/tracing"
KDAMONDS = "sys/kernel/mm/damon/admin/kdamonds"
FIRST_KDAMOND_PID = 9000
PRESENT = 1 << 63
SOFT_DIRTY = 1 << 55
SWAPPED = 1 << 62

# node id -> (total bytes, free bytes, cpulist, tier, read latency ns)
NODES = {0: (4 * GIB, 3 * GIB, "0-1", 4, 80), 1: (4 * GIB, 2 * GIB, "2-3", 4, 130), 2: (8 * GIB, 6 * GIB, "", 22, 250)}
DISTANCES = {0: "10 20 26", 1: "20 10 26", 2: "26 26 10"}
BLOCK_SIZE = 128 * MIB
# DAMON sysfs files whose value is a count of subdirectories to create.
COUNTERS = ("nr_kdamonds", "nr_contexts", "nr_targets", "nr_regions", "nr_schemes", "nr_filters")


def write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def build_tree(root: Path) -> None:
    """The static part of a guest: kernel release, nodes, tiers, HMAT, memory blocks, knobs, vmstat."""
    write(root, "proc/sys/kernel/osrelease", RELEASE + "\n")
    write(root, f"boot/config-{RELEASE}", "CONFIG_NUMA=y\nCONFIG_MEM_SOFT_DIRTY=y\n")
    write(root, "proc/sys/kernel/numa_balancing", "0\n")
    write(root, "sys/kernel/mm/numa/demotion_enabled", "false\n")
    write(root, "sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never\n")
    write(root, "proc/sys/vm/zone_reclaim_mode", "0\n")
    write(root, "proc/sys/vm/drop_caches", "")
    write(root, "sys/devices/system/cpu/online", "0-3\n")
    nodes = "sys/devices/system/node"
    write(root, f"{nodes}/online", "0-2\n")
    write(root, f"{nodes}/has_memory", "0-2\n")
    tiers: dict[int, list[int]] = {}
    block = 0
    for node, (total, free, cpus, tier, latency) in NODES.items():
        base = f"{nodes}/node{node}"
        write(root, f"{base}/meminfo", meminfo(node, total, free))
        write(root, f"{base}/cpulist", cpus + "\n")
        write(root, f"{base}/distance", DISTANCES[node] + "\n")
        for name, value in (("read_latency", latency), ("write_latency", latency + 20),
                            ("read_bandwidth", 20000 // (node + 1)), ("write_bandwidth", 10000 // (node + 1))):
            write(root, f"{base}/access0/initiators/{name}", f"{value}\n")
        tiers.setdefault(tier, []).append(node)
        for _ in range(total // BLOCK_SIZE // 8):  # a few memory blocks per node, contiguous
            write(root, f"sys/devices/system/memory/memory{block}/state", "online\n")
            (root / f"sys/devices/system/memory/memory{block}/node{node}").mkdir()
            block += 1
    write(root, "sys/devices/system/memory/block_size_bytes", f"{BLOCK_SIZE:x}\n")
    for tier, members in tiers.items():
        write(root, f"sys/devices/virtual/memory_tiering/memory_tier{tier}/nodelist",
              ",".join(map(str, members)) + "\n")
    write(root, "proc/vmstat", "nr_free_pages 100\npgfault 12345\npgmigrate_success 7\npgdemote_kswapd 3\n"
                               "numa_hit 99\nnr_dirty 5\npgpromote_success 2\noom_kill 1\n")
    write(root, f"{KDAMONDS}/nr_kdamonds", "0\n")
    (root / f"{TRACEFS}/instances").mkdir(parents=True)
    (root / f"{TRACEFS}/events/damon/damon_aggregated").mkdir(parents=True)


def meminfo(node: int, total: int, free: int) -> str:
    return (f"Node {node} MemTotal:       {total // 1024} kB\nNode {node} MemFree:        {free // 1024} kB\n"
            f"Node {node} HugePages_Total:     0\n")


@dataclass
class FakeProcess:
    """A process as procfs shows it; ``pagemap`` maps page numbers to 64-bit entries."""

    pid: int
    mappings: list[tuple[int, int]]
    resident: dict[int, int]  # node -> pages, written as numa_maps lines
    threads: tuple[int, ...] = ()
    pagemap: dict[int, int] = field(default_factory=dict)

    def create(self, root: Path) -> None:
        base = f"proc/{self.pid}"
        write(root, f"{base}/stat", f"{self.pid} (fake (worker)) R 1 1 1 0 -1 0 0 0 0 0 250 50 0 0 20 0 1 0\n")
        write(root, f"{base}/status", f"Name:\tfake\nThreads:\t{len(self.threads) or 1}\nCpus_allowed_list:\t0-3\n")
        write(root, f"{base}/maps", "".join(f"{start:x}-{end:x} rw-p 00000000 00:00 0\n"
                                            for start, end in self.mappings))
        start = self.mappings[0][0]
        counts = " ".join(f"N{node}={pages}" for node, pages in sorted(self.resident.items()))
        write(root, f"{base}/numa_maps", f"{start:x} default anon={sum(self.resident.values())} {counts} "
                                         "kernelpagesize_kB=4\n"
                                         f"{start + GIB:x} default file=/usr/lib/libc.so.6 N0=2 kernelpagesize_kB=4\n")
        write(root, f"{base}/clear_refs", "")
        for tid in self.threads or (self.pid,):
            (root / f"{base}/task/{tid}").mkdir(parents=True, exist_ok=True)
        (root / f"{base}/pagemap").touch()
        self.write_pagemap(root)

    def write_pagemap(self, root: Path) -> None:
        with open(root / f"proc/{self.pid}/pagemap", "r+b") as file:
            for page, entry in self.pagemap.items():
                file.seek(page * 8)
                file.write(entry.to_bytes(8, "little"))


class FakeKernel(Kernel):
    """Kernel files that react like DAMON sysfs and tracefs: nr_* writes make directories,
    ``state`` commands start kdamonds and fill ``tried_regions``, ``mkdir`` makes trace instances."""

    def __init__(self, root: Path, tried_regions: Sequence[Region] = ()) -> None:
        super().__init__(root)
        self.tried_regions = list(tried_regions)
        self._pids = itertools.count(FIRST_KDAMOND_PID)
        self.commands: list[tuple[str, str]] = []

    def write(self, relative: str, text: str) -> None:
        path = Path(relative)
        if path.name == "nr_kdamonds" and any(self._states()):
            raise OSError(errno.EBUSY, "Device or resource busy", str(self.path(relative)))
        if path.name == "state":
            self._command(path.parent, text)
            return
        super().write(relative, text)
        if path.name in COUNTERS:
            for index in range(int(text)):
                self._make(path.parent, path.name, str(index))

    def _states(self) -> Iterable[bool]:
        kdamonds = self.path(KDAMONDS)
        return ((kdamonds / name / "state").read_text().strip() == "on"
                for name in os.listdir(kdamonds) if name.isdigit())

    def _make(self, parent: Path, counter: str, name: str) -> None:
        directory = self.path(str(parent / name))
        files: dict[str, str] = {
            "nr_kdamonds": {"state": "off", "pid": "-1", "contexts/nr_contexts": "0"},
            "nr_contexts": {"operations": "vaddr", **{f"monitoring_attrs/intervals/{key}": "0" for key in
                                                      ("sample_us", "aggr_us", "update_us")},
                            "monitoring_attrs/nr_regions/min": "10", "monitoring_attrs/nr_regions/max": "1000",
                            "targets/nr_targets": "0", "schemes/nr_schemes": "0"},
            "nr_targets": {"pid_target": "0", "regions/nr_regions": "0"},
            "nr_regions": {"start": "0", "end": "0"},
            "nr_filters": {"type": "anon", "matching": "N", "memcg_path": "", "addr_start": "0", "addr_end": "0",
                           "target_idx": "0"},
            "nr_schemes": {"action": "stat", "target_nid": "0", "apply_interval_us": "0",
                           **{f"access_pattern/{kind}/{bound}": "0" for kind in ("sz", "nr_accesses", "age")
                              for bound in ("min", "max")},
                           **{f"quotas/{key}": "0" for key in ("ms", "bytes", "reset_interval_ms")},
                           **{f"quotas/weights/{key}_permil": "0" for key in ("sz", "nr_accesses", "age")},
                           "filters/nr_filters": "0",
                           **{f"stats/{key}": "0" for key in ("nr_tried", "sz_tried", "nr_applied", "sz_applied",
                                                              "qt_exceeds")},
                           "tried_regions/total_bytes": "0"},
        }[counter]
        for relative, value in files.items():
            (directory / relative).parent.mkdir(parents=True, exist_ok=True)
            (directory / relative).write_text(value + "\n")

    def _command(self, kdamond: Path, command: str) -> None:
        self.commands.append((kdamond.name, command))
        state = self.path(str(kdamond / "state"))
        if command == "on":
            (state.parent / "pid").write_text(f"{next(self._pids)}\n")
        if command in ("on", "off"):
            state.write_text(command + "\n")
        elif command == "update_schemes_tried_regions":
            tried = state.parent / "contexts/0/schemes/0/tried_regions"
            for index, region in enumerate(self.tried_regions):
                for name in ("start", "end", "nr_accesses", "age"):
                    (tried / str(index)).mkdir(exist_ok=True)
                    (tried / str(index) / name).write_text(f"{getattr(region, name)}\n")
        elif command == "update_schemes_stats":
            stats = state.parent / "contexts/0/schemes/0/stats"
            (stats / "nr_applied").write_text("12\n")
            (stats / "sz_applied").write_text(f"{12 * PAGE_SIZE}\n")

    def mkdir(self, relative: str) -> None:
        super().mkdir(relative)
        if Path(relative).parent.name == "instances":
            instance = self.path(relative)
            for name, value in (("trace_clock", "[local] global mono"), ("trace_pipe", ""), ("buffer_size_kb", "1408"),
                                ("events/damon/damon_aggregated/enable", "0"),
                                ("events/damon/damon_aggregated/filter", "none")):
                (instance / name).parent.mkdir(parents=True, exist_ok=True)
                (instance / name).write_text(value)

    def rmdir(self, relative: str) -> None:
        if Path(relative).parent.name == "instances":
            for path in sorted(self.path(relative).rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
        super().rmdir(relative)

    def running_kdamonds(self) -> list[str]:
        kdamonds = self.path(KDAMONDS)
        return [name for name in sorted(os.listdir(kdamonds)) if name.isdigit()
                and (kdamonds / name / "state").read_text().strip() == "on"]


def aggregated_lines(regions: Sequence[Region], kdamond_pid: int, when: float) -> str:
    """``damon_aggregated`` lines as tracefs prints them, one aggregation."""
    return "".join(
        f"       kdamond.0-{kdamond_pid}    [001] .....   {when:.6f}: damon_aggregated: target_id=0 "
        f"nr_regions={len(regions)} {region.start}-{region.end}: {region.nr_accesses} {region.age}\n"
        for region in regions
    )


@dataclass
class FakeSyscalls:
    """move_pages over a page -> node table per pid; affinity and signals are recorded."""

    pages: dict[int, dict[int, int]] = field(default_factory=dict)
    full_nodes: set[int] = field(default_factory=set)
    exit_after_calls: int | None = None
    calls: int = 0
    affinity: dict[int, list[int]] = field(default_factory=dict)
    signals: list[tuple[int, int]] = field(default_factory=list)
    root: Path | None = None  # the fake tree whose node meminfo held memory comes out of

    def move_pages(self, pid: int, pages: Sequence[int], node: int | None) -> Sequence[int]:
        self.calls += 1
        if pid not in self.pages or (self.exit_after_calls is not None and self.calls > self.exit_after_calls):
            raise ProcessLookupError(errno.ESRCH, "No such process")
        table = self.pages[pid]
        statuses = []
        for address in pages:
            if address not in table:
                statuses.append(-errno.ENOENT)
            elif node is None:
                statuses.append(table[address])
            elif node in self.full_nodes:
                statuses.append(-errno.ENOMEM)
            else:
                table[address] = node
                statuses.append(node)
        return statuses

    def set_affinity(self, tid: int, cpus: Sequence[int]) -> None:
        self.affinity[tid] = list(cpus)

    def kill(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))
        os.kill(pid, signum)

    def hold_memory(self, node: int, size: int) -> FakeHeld:
        """Takes ``size`` from the node's MemFree, and the page tables that map it (8 bytes a page, in whole
        pages) from node 0's, as the kernel would for a daemon running there."""
        assert self.root is not None and size % PAGE_SIZE == 0
        held = FakeHeld(self.root, {node: size})
        held.charges[0] = held.charges.get(0, 0) + -(-size // PAGE_SIZE * 8 // PAGE_SIZE) * PAGE_SIZE
        held.take(-1)
        return held


@dataclass
class FakeHeld:
    root: Path
    charges: dict[int, int]  # node -> bytes taken from its MemFree

    def take(self, sign: int) -> None:
        for node, size in self.charges.items():
            path = self.root / f"sys/devices/system/node/node{node}/meminfo"
            total, free = (int(line.split()[3]) * 1024 for line in path.read_text().splitlines()[:2])
            path.write_text(meminfo(node, total, free + sign * size))

    def release(self) -> None:
        self.take(1)


class QueueStream(io.RawIOBase):
    """A write-only byte stream whose lines land in a queue: the daemon's stdout, in-process."""

    def __init__(self) -> None:
        super().__init__()
        self.lines: queue.Queue[bytes] = queue.Queue()
        self._partial = b""

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._partial += bytes(data)
        *complete, self._partial = self._partial.split(b"\n")
        for line in complete:
            self.lines.put(line)
        return len(data)


class FakeGuest:
    """A daemon running in-process on a fake tree, with helpers to send requests and read replies."""

    def __init__(self, root: Path, tried_regions: Sequence[Region] = (), build: bool = True) -> None:
        if build:
            build_tree(root)
        self.root = root
        self.kernel = FakeKernel(root, tried_regions)
        self.syscalls = FakeSyscalls(root=root)
        self.stdout = QueueStream()
        self.daemon = Daemon(self.kernel, self.syscalls, Output(self.stdout), kdamonds=4)

    def add_process(self, process: FakeProcess) -> FakeProcess:
        process.create(self.root)
        return process

    def send(self, line: bytes | str) -> None:
        self.daemon.handle_line(line.encode() if isinstance(line, str) else line)

    def next_message(self, timeout: float = 5.0) -> dict[str, Any]:
        message = json.loads(self.stdout.lines.get(timeout=timeout))
        assert isinstance(message, dict)
        return message

    def request(self, op: str, **args: Any) -> dict[str, Any]:
        """Send one request and return its reply (which must be the next message)."""
        self.send(json.dumps({"v": 1, "id": 7, "op": op, "args": args}))
        reply = self.next_message()
        assert reply["id"] == 7, reply
        return reply

    def result(self, op: str, **args: Any) -> dict[str, Any]:
        reply = self.request(op, **args)
        assert reply["ok"], reply
        result: dict[str, Any] = reply["result"]
        return result

    def error(self, op: str, **args: Any) -> tuple[str, str]:
        reply = self.request(op, **args)
        assert not reply["ok"], reply
        return reply["error"]["code"], reply["error"]["message"]
