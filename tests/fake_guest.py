"""A fake VM for the orchestrator's loop: the real workload runs on the host, the guest's memory is a table.

memtouch (compiled for the host) does its accesses and reports its ground truth
as it would in a VM. The fake guest knows where each page of the workload is
(its first-touch node, until a migration moves it), answers observations from
that table, and counts migrated pages in vmstat, so the loop can be run whole
without booting anything.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import astuple, dataclass, field
from pathlib import Path
from signal import Signals

from testbed.channel.errors import ChannelClosed
from testbed.channel.replies import (
    ChunkPages,
    DamonRegion,
    DamonView,
    DamosInfo,
    MigrationResult,
    NodeInfo,
    ObserveReply,
    PlaceResult,
    RangePages,
    ResidencyQuery,
    RunExit,
    RunOutput,
    Settled,
    TieringChange,
    Vmstat,
    WatchInfo,
)
from testbed.memtouch import RELEASE_SIGNAL, RegionLayout, parse_output
from testbed.model import PAGE_SIZE
from testbed.run_vm import Guest
from testbed.values import AddressRange, MemoryPolicy, Monitoring, Scheme, TieringSettings


@dataclass(frozen=True)
class FakeNode:
    id: int
    total_bytes: int
    free_bytes: int  # before the workload
    cpus: tuple[int, ...] = ()


class FakeRun:
    """memtouch on the host; its first stdout line tells the guest where its buffers are."""

    def __init__(self, guest: FakeGuest, argv: Sequence[str], stdin: str | None) -> None:
        self._guest = guest
        self._process = subprocess.Popen([str(guest.memtouch), *argv[1:]], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        assert self._process.stdin is not None
        self._process.stdin.write(stdin or "")
        self._process.stdin.close()
        self.pid = self._process.pid
        self.exit: RunExit | None = None

    def output(self, timeout: float | None = None) -> Iterator[RunOutput]:
        stdout = self._process.stdout
        assert stdout is not None
        for line in stdout:
            self._guest.check_alive()
            if not self._guest.regions:
                self._guest.first_touched(parse_output([line]).regions)
            yield RunOutput("stdout", line.rstrip("\n"))
        self.exit = _exit(self._process.wait())

    def kill(self, signal: str = "TERM") -> bool:
        """Sends the signal to memtouch (the barrier's release is one); any other than the release ends it."""
        self._guest.calls.append(f"kill {signal}")
        if self._process.poll() is not None:
            return False
        self._process.send_signal(Signals[f"SIG{signal}"])
        if signal != RELEASE_SIGNAL:
            self.exit = _exit(self._process.wait())
        return True


def _exit(code: int) -> RunExit:
    """As guestd reports a process's end: its exit code, or the signal that ended it."""
    return RunExit(None, Signals(-code).name) if code < 0 else RunExit(code, None)


@dataclass
class FakeGuest:
    """The guest daemon's calls that a run makes, over a table of page nodes."""

    memtouch: Path
    node_list: tuple[FakeNode, ...]
    first_touch_node: int = 0
    alive: bool = True
    regions: tuple[RegionLayout, ...] = ()
    page_nodes: dict[int, int] = field(default_factory=dict)  # page address -> node
    migrated_pages: int = 0
    oom_kills: int = 0  # the guest kernel's OOM killer's count (vmstat oom_kill)
    calls: list[str] = field(default_factory=list)
    runs: list[FakeRun] = field(default_factory=list)
    damon_windows: list[tuple[int | None, int | None]] = field(default_factory=list)  # each observe's (since, until)
    held: dict[int, int] = field(default_factory=dict)  # bytes settle holds per node
    # A fresh guest's settings (NUMA balancing on, as Debian's kernel boots); tiering() changes them.
    settings: TieringSettings = field(default_factory=lambda: TieringSettings(1, False, "madvise", 0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def check_alive(self) -> None:
        if not self.alive:
            raise ChannelClosed("the fake VM is gone")

    def first_touched(self, regions: tuple[RegionLayout, ...]) -> None:
        self.regions = regions
        for region in regions:
            for page in range(region.address, region.address + region.size, PAGE_SIZE):
                self.page_nodes[page] = self.first_touch_node

    def _resident(self) -> dict[int, int]:
        resident: dict[int, int] = {}
        for node in self.page_nodes.values():
            resident[node] = resident.get(node, 0) + PAGE_SIZE
        return resident

    def nodes(self) -> list[NodeInfo]:
        self.check_alive()
        resident = self._resident()
        return [NodeInfo(node.id, node.total_bytes, self._free(node) - resident.get(node.id, 0), node.cpus, None,
                         None, {}) for node in self.node_list]

    def _free(self, node: FakeNode) -> int:
        return node.free_bytes - self.held.get(node.id, 0)

    def vmstat(self, everything: bool = False) -> Vmstat:
        self.check_alive()
        return Vmstat(time.monotonic(), {"pgmigrate_success": self.migrated_pages, "oom_kill": self.oom_kills})

    def settle(self, free_targets: dict[int, int] | None = None) -> Settled:
        self.calls.append("settle")
        targets = free_targets or {}
        self.held = {node.id: max(0, node.free_bytes - targets[node.id]) for node in self.node_list
                     if node.id in targets}
        return Settled({node.id: self._free(node) for node in self.node_list}, dict(self.held))

    def tiering(self, settings: TieringSettings | None = None) -> TieringChange:
        self.calls.append(f"tiering {settings}")
        previous = self.settings
        if settings is not None:
            self.settings = TieringSettings(*(new if new is not None else old for new, old in
                                              zip(astuple(settings), astuple(previous), strict=True)))
        return TieringChange(previous, self.settings)

    def damos(self, schemes: Sequence[Scheme], nodes: Sequence[int] | None = None,
              monitoring: Monitoring | None = None) -> DamosInfo:
        self.calls.append(f"damos {len(schemes)}")
        return DamosInfo(1, 0, tuple(nodes or ()))

    def run(self, argv: Sequence[str], *, stdin: str | None = None, memory: MemoryPolicy | None = None,
            cpus: Sequence[int] | None = None) -> FakeRun:
        self.check_alive()
        self.calls.append(f"run cpus={list(cpus or ())}")
        run = FakeRun(self, argv, stdin)
        self.runs.append(run)
        return run

    def watch(self, pid: int, monitoring: Monitoring | None = None) -> WatchInfo:
        watched = monitoring or Monitoring()
        return WatchInfo(pid, 0, 0, "fake", watched.sample_us, watched.aggr_us, watched.min_regions,
                         watched.max_regions)

    def observe(self, pid: int, *, ranges: Sequence[ResidencyQuery] = (), soft_dirty: bool = True,
                region_nodes: bool = False, pagemap_budget_pages: int | None = None,
                damon_until_us: int | None = None, damon_since_us: int | None = None) -> ObserveReply:
        """Where the pages are; DAMON sees each buffer as one region, never accessed."""
        self.check_alive()
        with self._lock:
            self.damon_windows.append((damon_since_us, damon_until_us))
            damon = DamonView(1, "fake", True, time.monotonic(), len(self.regions), tuple(
                DamonRegion(index, region.address, region.address + region.size, 0, 0, region.size // PAGE_SIZE,
                            0, region.size // PAGE_SIZE, self._nodes_in(region.address, region.size))
                for index, region in enumerate(self.regions)))
            pages = tuple(self._range_pages(query) for query in ranges)
            return ObserveReply(pid, time.monotonic(), 0.0, 0.0, (), 1, self._resident(), damon, pages, None, 0.001)

    def _nodes_in(self, start: int, length: int) -> dict[int, int]:
        nodes: dict[int, int] = {}
        for page in range(start, start + length, PAGE_SIZE):
            node = self.page_nodes[page]
            nodes[node] = nodes.get(node, 0) + PAGE_SIZE
        return nodes

    def _range_pages(self, query: ResidencyQuery) -> RangePages:
        chunk = query.chunk or query.length
        chunks = []
        for offset in range(0, query.length, chunk):
            nodes: dict[int, int] = {}
            for page in range(query.start + offset, query.start + min(offset + chunk, query.length),
                              PAGE_SIZE * query.stride):
                nodes[self.page_nodes[page]] = nodes.get(self.page_nodes[page], 0) + 1
            chunks.append(ChunkPages(offset, nodes, {}, None))
        return RangePages(query.start, query.length, chunk, query.stride, tuple(chunks))

    def migrate(self, pid: int, node: int, budget_bytes: int, *, ranges: Sequence[AddressRange] = (),
                timeout: float | None = None) -> MigrationResult:
        self.check_alive()
        moved = already = 0
        with self._lock:
            for area in ranges:
                for page in range(area.start, area.end, PAGE_SIZE):
                    if self.page_nodes[page] == node:
                        already += 1
                    elif (moved + 1) * PAGE_SIZE <= budget_bytes:
                        self.page_nodes[page] = node
                        moved += 1
            self.migrated_pages += moved
        return MigrationResult(pid, node, moved, moved * PAGE_SIZE, already, 0, 0, {}, False, False, False, 0.001)

    def place(self, pid: int, *, cpus: Sequence[int] | None = None) -> PlaceResult:
        return PlaceResult(pid, tuple(cpus or ()), 1, ())


@dataclass
class FakeVm:
    guest_daemon: FakeGuest
    downs: int = 0

    def guest(self) -> AbstractContextManager[Guest]:
        return nullcontext(self.guest_daemon)

    def alive(self) -> bool:
        return self.guest_daemon.alive

    def console_tail(self, lines: int = 25) -> str:
        return "fake console: the VM was killed"

    def down(self) -> None:
        self.downs += 1
        for run in self.guest_daemon.runs:
            if run.exit is None:
                run.kill()
