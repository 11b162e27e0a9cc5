"""DAMON through its sysfs interface: kdamond slots, vaddr watches and paddr DAMOS schemes.

DAMON refuses to change ``nr_kdamonds`` while any kdamond runs, so the first
claim sizes the kdamond array for several users at once (``--kdamonds``), and
later claims take a stopped slot.  A file lock keeps several guestd processes
(one per channel) from claiming the same slot.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from .kernel import Kernel
from .protocol import GuestdError, JsonObject
from .system import tracefs_root
from .tracefs import DAMON_EVENT, Region, Snapshot, TraceInstance, history_aggregations

KDAMONDS = "sys/kernel/mm/damon/admin/kdamonds"
SLOT_LOCK = "run/lock/guestd-damon.lock"
MEMORY_DIR = "sys/devices/system/memory"
CONTEXT = "contexts/0"
MAX_ULONG = (1 << 64) - 1
MAX_UINT = (1 << 32) - 1  # nr_accesses and age are unsigned int in the kernel

log = logging.getLogger(__name__)
Settings = list[tuple[str, object]]


@dataclass(frozen=True)
class Monitoring:
    """DAMON's monitoring attributes: intervals in microseconds and the region count bounds."""

    sample_us: int = 5_000
    aggr_us: int = 100_000
    update_us: int = 1_000_000
    min_regions: int = 10
    max_regions: int = 1_000

    def settings(self, operations: str) -> Settings:
        attrs = f"{CONTEXT}/monitoring_attrs"
        # Writing nr_contexts rebuilds the context, so a reused slot starts from defaults.
        return [
            ("contexts/nr_contexts", 1),
            (f"{CONTEXT}/operations", operations),
            (f"{attrs}/intervals/sample_us", self.sample_us),
            (f"{attrs}/intervals/aggr_us", self.aggr_us),
            (f"{attrs}/intervals/update_us", self.update_us),
            (f"{attrs}/nr_regions/min", self.min_regions),
            (f"{attrs}/nr_regions/max", self.max_regions),
        ]


@dataclass(frozen=True)
class Scheme:
    """One DAMOS scheme.  Access-pattern maxima default to "anything": the kernel's default is 0.

    ``nodes`` names the memory the scheme acts on; schemes with different nodes run
    on kdamonds of their own, so a quota ranks only the regions the scheme may act on.
    """

    action: str
    target_node: int | None = None
    size: tuple[int, int] = (0, MAX_ULONG)  # bytes
    nr_accesses: tuple[int, int] = (0, MAX_UINT)  # samples that saw an access, per aggregation
    age: tuple[int, int] = (0, MAX_UINT)  # aggregation intervals
    quota_ms: int = 0
    quota_bytes: int = 0
    quota_reset_ms: int = 0
    apply_interval_us: int = 0  # 0: every aggregation interval
    # Per mille weights of size, access frequency and age in ranking regions once the
    # quota binds; all 0 (the kernel's default) ranks every region the same.
    quota_weights: tuple[int, int, int] = (0, 0, 0)
    nodes: tuple[int, ...] | None = None  # None: the nodes of the damos request
    # A page-level check when the action applies: True acts only on pages accessed since
    # DAMON last looked, False only on the others (a "young" filter); None on every page.
    young: bool | None = None

    def settings(self, index: int) -> Settings:
        base = f"{CONTEXT}/schemes/{index}"
        pattern = f"{base}/access_pattern"
        settings: Settings = [(f"{base}/action", self.action)]
        if self.target_node is not None:
            settings.append((f"{base}/target_nid", self.target_node))
        for name, (low, high) in (("sz", self.size), ("nr_accesses", self.nr_accesses), ("age", self.age)):
            settings += [(f"{pattern}/{name}/min", low), (f"{pattern}/{name}/max", high)]
        return [
            *settings,
            (f"{base}/apply_interval_us", self.apply_interval_us),
            (f"{base}/quotas/ms", self.quota_ms),
            (f"{base}/quotas/bytes", self.quota_bytes),
            (f"{base}/quotas/reset_interval_ms", self.quota_reset_ms),
            *((f"{base}/quotas/weights/{name}_permil", weight)
              for name, weight in zip(("sz", "nr_accesses", "age"), self.quota_weights, strict=True)),
            *self._young_filter(f"{base}/filters"),
        ]

    def _young_filter(self, filters: str) -> Settings:
        if self.young is None:
            return [(f"{filters}/nr_filters", 0)]
        # A 6.12 filter excludes the pages for which "is young" equals "matching".
        return [(f"{filters}/nr_filters", 1), (f"{filters}/0/type", "young"),
                (f"{filters}/0/matching", "N" if self.young else "Y")]

    def describe(self) -> JsonObject:
        return {"action": self.action, "target_node": self.target_node,
                "nodes": list(self.nodes) if self.nodes is not None else None}


def schemes_settings(schemes: list[Scheme]) -> Settings:
    settings: Settings = [(f"{CONTEXT}/schemes/nr_schemes", len(schemes))]
    for index, scheme in enumerate(schemes):
        settings += scheme.settings(index)
    return settings


class KdamondSlots:
    """The kdamond directories this daemon runs; all of them stop when it exits."""

    def __init__(self, kernel: Kernel, slots: int) -> None:
        self._kernel = kernel
        self._slots = slots
        self._mine: set[int] = set()

    def start(self, settings: Settings) -> tuple[int, int]:
        """Configure a free kdamond with ``settings`` and turn it on; returns (index, kdamond pid)."""
        if not self._kernel.exists(KDAMONDS):
            raise GuestdError("ENOTSUP", f"DAMON sysfs is not available ({self._kernel.path(KDAMONDS)} is missing)")
        with self._kernel.exclusive(SLOT_LOCK):
            index = self._free_slot()
            base = f"{KDAMONDS}/{index}"
            for relative, value in settings:
                self._kernel.write(f"{base}/{relative}", str(value))
            self._kernel.write(f"{base}/state", "on")
            self._mine.add(index)
        return index, int(self._kernel.value(f"{base}/pid"))

    def _free_slot(self) -> int:
        count = int(self._kernel.value(f"{KDAMONDS}/nr_kdamonds"))
        running = [index for index in range(count) if self.running(index)]
        free = [index for index in range(count) if index not in running and index not in self._mine]
        if free:
            return free[0]
        if running:
            raise GuestdError(
                "EBUSY",
                f"all {count} kdamonds are in use and DAMON cannot add one while kdamonds {running} run; "
                "stop a watch or damos first, or start guestd with a larger --kdamonds",
            )
        self._kernel.write(f"{KDAMONDS}/nr_kdamonds", str(max(count + 1, self._slots)))
        return 0

    def running(self, index: int) -> bool:
        return self._kernel.value(f"{KDAMONDS}/{index}/state") == "on"

    def command(self, index: int, command: str) -> None:
        """A state command such as ``update_schemes_stats``."""
        self._kernel.write(f"{KDAMONDS}/{index}/state", command)

    def stop(self, index: int) -> None:
        # A vaddr kdamond stops by itself when its process exits; writing "off" then fails.
        if self.running(index):
            self.command(index, "off")
        self._mine.discard(index)


@dataclass(frozen=True)
class SchemeKdamond:
    """A paddr kdamond running the schemes of one ``damos`` request that act on the same nodes."""

    slot: int
    pid: int
    nodes: tuple[int, ...]
    indexes: list[int]  # into the request's schemes, in the kdamond's order


@dataclass(frozen=True)
class DamosRun:
    """The schemes of one ``damos`` request, named by its first kdamond's slot."""

    schemes: list[Scheme]  # in request order
    kdamonds: list[SchemeKdamond]

    @property
    def id(self) -> int:
        return self.kdamonds[0].slot


@dataclass(frozen=True)
class Watch:
    """DAMON vaddr monitoring of one process, read through a trace instance or sysfs."""

    pid: int
    slot: int
    kdamond_pid: int
    monitoring: Monitoring
    trace: TraceInstance | None

    @property
    def source(self) -> str:
        return "tracefs" if self.trace else "sysfs"

    def describe(self) -> JsonObject:
        return {"pid": self.pid, "kdamond": self.slot, "kdamond_pid": self.kdamond_pid, "source": self.source,
                "sample_us": self.monitoring.sample_us, "aggr_us": self.monitoring.aggr_us,
                "min_regions": self.monitoring.min_regions, "max_regions": self.monitoring.max_regions}


# The sysfs fallback reads regions through a "stat" scheme that matches everything.
STAT_EVERYTHING = Scheme("stat")


class Damon:
    """Starts and stops watches and DAMOS kdamonds, and reads the latest regions of a watch."""

    def __init__(self, kernel: Kernel, slots: int, instance_prefix: str) -> None:
        self._kernel = kernel
        self.slots = KdamondSlots(kernel, slots)
        self._prefix = instance_prefix

    def watch(self, pid: int, monitoring: Monitoring) -> Watch:
        tracefs = tracefs_root(self._kernel)
        if tracefs is not None and not self._kernel.exists(f"{tracefs}/{DAMON_EVENT}"):
            tracefs = None
        settings = [
            *monitoring.settings("vaddr"),
            (f"{CONTEXT}/targets/nr_targets", 1),
            (f"{CONTEXT}/targets/0/pid_target", pid),
        ]
        settings += schemes_settings([] if tracefs else [STAT_EVERYTHING])
        slot, kdamond_pid = self.slots.start(settings)
        trace = None
        if tracefs is not None:
            try:
                trace = TraceInstance(self._kernel, tracefs, f"{self._prefix}-{slot}", kdamond_pid,
                                      monitoring.max_regions, history_aggregations(monitoring.aggr_us))
            except OSError:
                self.slots.stop(slot)
                raise
        return Watch(pid, slot, kdamond_pid, monitoring, trace)

    def unwatch(self, watch: Watch) -> None:
        if watch.trace is not None:
            watch.trace.close()
        self.slots.stop(watch.slot)

    def snapshot(self, watch: Watch, until: float | None = None, since: float | None = None) -> Snapshot | None:
        """The latest complete aggregation (that ended by ``until``), or the mean of those that ended in
        (``since``, ``until``]: tracefs only; sysfs has no history."""
        if watch.trace is not None:
            return watch.trace.tail.snapshot(until, since)
        if not self.slots.running(watch.slot):
            return None
        return self._tried_regions(watch.slot)

    def _tried_regions(self, slot: int) -> Snapshot:
        # Slow path: the command returns once the kdamond has applied its schemes (up to an aggregation).
        self.slots.command(slot, "update_schemes_tried_regions")
        directory = f"{KDAMONDS}/{slot}/{CONTEXT}/schemes/0/tried_regions"
        names = sorted((name for name in self._kernel.listdir(directory) if name.isdigit()), key=int)

        def number(region: str, name: str) -> int:
            return int(self._kernel.value(f"{directory}/{region}/{name}"))

        regions = tuple(Region(number(name, "start"), number(name, "end"), number(name, "nr_accesses"),
                               number(name, "age")) for name in names)
        return Snapshot(time.monotonic(), regions)

    def start_schemes(self, schemes: list[Scheme], nodes: list[int], monitoring: Monitoring) -> tuple[int, int]:
        """A paddr kdamond applying ``schemes`` to the physical memory of ``nodes``."""
        ranges = node_physical_ranges(self._kernel, nodes)
        if not ranges:
            raise GuestdError("ENOENT", f"damos: no online memory blocks on nodes {nodes} in {MEMORY_DIR}")
        regions = f"{CONTEXT}/targets/0/regions"
        settings = [
            *monitoring.settings("paddr"),
            (f"{CONTEXT}/targets/nr_targets", 1),
            (f"{regions}/nr_regions", len(ranges)),
        ]
        for index, (start, end) in enumerate(ranges):
            settings += [(f"{regions}/{index}/start", start), (f"{regions}/{index}/end", end)]
        return self.slots.start(settings + schemes_settings(schemes))

    def start_scheme_run(self, schemes: list[Scheme], monitoring: Monitoring) -> DamosRun:
        """A paddr kdamond for each set of nodes the schemes act on; if one cannot start, none stays on."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for index, scheme in enumerate(schemes):
            groups.setdefault(tuple(scheme.nodes or ()), []).append(index)
        started: list[SchemeKdamond] = []
        try:
            for nodes, indexes in groups.items():
                slot, pid = self.start_schemes([schemes[i] for i in indexes], list(nodes), monitoring)
                started.append(SchemeKdamond(slot, pid, nodes, indexes))
        except (OSError, GuestdError):
            for kdamond in started:
                self.slots.stop(kdamond.slot)
            raise
        return DamosRun(schemes, started)

    def scheme_stats(self, slot: int, count: int) -> list[dict[str, int]]:
        """Each scheme's counters (nr_tried, sz_applied, ...), refreshed from the running kdamond."""
        if self.slots.running(slot):
            self.slots.command(slot, "update_schemes_stats")
        stats = []
        for index in range(count):
            directory = f"{KDAMONDS}/{slot}/{CONTEXT}/schemes/{index}/stats"
            stats.append({name: int(self._kernel.value(f"{directory}/{name}"))
                          for name in self._kernel.listdir(directory)})
        return stats


def node_physical_ranges(kernel: Kernel, nodes: list[int]) -> list[tuple[int, int]]:
    """Physical address ranges of the online memory blocks of ``nodes``, adjacent blocks merged."""
    block_size = int(kernel.value(f"{MEMORY_DIR}/block_size_bytes"), 16)
    wanted = {f"node{node}" for node in nodes}
    starts = []
    for name in kernel.listdir(MEMORY_DIR):
        number = name.removeprefix("memory")
        if not number.isdigit():
            continue
        block = f"{MEMORY_DIR}/{name}"
        if wanted & set(kernel.listdir(block)) and kernel.value(f"{block}/state") == "online":
            starts.append(int(number) * block_size)
    ranges: list[list[int]] = []
    for start in sorted(starts):
        if ranges and ranges[-1][1] == start:
            ranges[-1][1] = start + block_size
        else:
            ranges.append([start, start + block_size])
    return [(start, end) for start, end in ranges]
