"""Machine-wide facts and knobs: NUMA nodes, memory tiers, HMAT, vmstat, tiering settings."""

from __future__ import annotations

import gzip
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from .kernel import Kernel, parse_id_list
from .process import PAGE_SIZE
from .protocol import GuestdError, JsonObject, invalid
from .syscalls import Held, Syscalls
from .tracefs import DAMON_EVENT

NODE_DIR = "sys/devices/system/node"
TIERS_DIR = "sys/devices/virtual/memory_tiering"
DAMON_ADMIN = "sys/kernel/mm/damon/admin"
NUMA_BALANCING = "proc/sys/kernel/numa_balancing"
DEMOTION_ENABLED = "sys/kernel/mm/numa/demotion_enabled"
TRANSPARENT_HUGEPAGE = "sys/kernel/mm/transparent_hugepage/enabled"
ZONE_RECLAIM_MODE = "proc/sys/vm/zone_reclaim_mode"
DROP_CACHES = "proc/sys/vm/drop_caches"
COMPACT_MEMORY = "proc/sys/vm/compact_memory"
THP_MODES = ("always", "madvise", "never")
MAX_CONFIG_BYTES = 1 << 22  # /proc/config.gz is ~50 KB; procfs reports its size as 0
TRACEFS_MOUNTS = ("sys/kernel/tracing", "sys/kernel/debug/tracing")

# Counters a placement policy reads; prefixes cover the families whose members vary by kernel.
VMSTAT_PREFIXES = ("pgmigrate_", "pgpromote_", "pgdemote_", "numa_", "thp_migration_", "pgsteal_", "pgscan_")
VMSTAT_NAMES = frozenset({"pgfault", "pgmajfault", "pgactivate", "pgdeactivate", "nr_free_pages", "oom_kill"})

_MEMINFO_LINE = re.compile(r"^Node\s+\d+\s+(\w+):\s+(\d+)(?:\s+kB)?\s*$")
_TIER_NAME = re.compile(r"^memory_tier(\d+)$")
# HMAT access0 files: sysfs names to reply fields (latency in ns, bandwidth in MB/s).
HMAT_FIELDS = {
    "read_latency": "read_latency_ns",
    "write_latency": "write_latency_ns",
    "read_bandwidth": "read_bandwidth_mbps",
    "write_bandwidth": "write_bandwidth_mbps",
}


def node_dir(node: int) -> str:
    return f"{NODE_DIR}/node{node}"


def online_nodes(kernel: Kernel) -> list[int]:
    return parse_id_list(kernel.value(f"{NODE_DIR}/online"))


def memory_nodes(kernel: Kernel) -> list[int]:
    """Online nodes that hold memory (a CPU-only node cannot take pages)."""
    path = f"{NODE_DIR}/has_memory"
    return parse_id_list(kernel.value(path)) if kernel.exists(path) else online_nodes(kernel)


def node_meminfo(kernel: Kernel, node: int) -> dict[str, int]:
    """``nodeN/meminfo`` as field -> bytes (page counts such as HugePages_* stay counts)."""
    fields: dict[str, int] = {}
    for line in kernel.read(f"{node_dir(node)}/meminfo").splitlines():
        match = _MEMINFO_LINE.match(line)
        if match:
            scale = 1024 if line.rstrip().endswith("kB") else 1
            fields[match[1]] = int(match[2]) * scale
    return fields


def node_free_bytes(kernel: Kernel, node: int) -> int:
    return node_meminfo(kernel, node).get("MemFree", 0)


def require_memory_node(kernel: Kernel, node: int, what: str) -> None:
    nodes = memory_nodes(kernel)
    if node not in nodes:
        listed = ", ".join(map(str, nodes))
        raise GuestdError("ENODEV", f"{what}: node {node} is not an online node with memory (those are: {listed})")


def node_cpus(kernel: Kernel, node: int) -> list[int]:
    return parse_id_list(kernel.value(f"{node_dir(node)}/cpulist"))


def node_tiers(kernel: Kernel) -> dict[int, int]:
    """Node -> memory tier id, from ``memory_tierK/nodelist``; empty without memory tiering."""
    if not kernel.exists(TIERS_DIR):
        return {}
    tiers: dict[int, int] = {}
    for name in kernel.listdir(TIERS_DIR):
        match = _TIER_NAME.match(name)
        if match:
            for node in parse_id_list(kernel.value(f"{TIERS_DIR}/{name}/nodelist")):
                tiers[node] = int(match[1])
    return tiers


def node_hmat(kernel: Kernel, node: int) -> dict[str, int] | None:
    """Latency and bandwidth from the node's nearest initiators, when firmware described them."""
    directory = f"{node_dir(node)}/access0/initiators"
    values = {
        field: int(kernel.value(f"{directory}/{name}"))
        for name, field in HMAT_FIELDS.items()
        if kernel.exists(f"{directory}/{name}")
    }
    return values or None


def describe_nodes(kernel: Kernel) -> list[JsonObject]:
    online = online_nodes(kernel)
    tiers = node_tiers(kernel)
    described = []
    for node in online:
        meminfo = node_meminfo(kernel, node)
        distances = [int(value) for value in kernel.value(f"{node_dir(node)}/distance").split()]
        described.append({
            "id": node,
            "total_bytes": meminfo.get("MemTotal", 0),
            "free_bytes": meminfo.get("MemFree", 0),
            "cpus": node_cpus(kernel, node),
            "tier": tiers.get(node),
            "hmat": node_hmat(kernel, node),
            # The distance file lists one value per online node, in id order.
            "distances": dict(zip(map(str, online), distances, strict=False)),
        })
    return described


def read_vmstat(kernel: Kernel, everything: bool) -> dict[str, int]:
    counters = {}
    for line in kernel.read("proc/vmstat").splitlines():
        name, _, value = line.partition(" ")
        if everything or name in VMSTAT_NAMES or name.startswith(VMSTAT_PREFIXES):
            counters[name] = int(value)
    return counters


def tracefs_root(kernel: Kernel) -> str | None:
    """Where tracefs is mounted, if it is and it can make instances."""
    return next((mount for mount in TRACEFS_MOUNTS if kernel.exists(f"{mount}/instances")), None)


def soft_dirty_supported(kernel: Kernel, release: str) -> bool | None:
    """CONFIG_MEM_SOFT_DIRTY from the kernel's config (installed, or /proc/config.gz); None if neither exists."""
    installed, built_in = f"boot/config-{release}", "proc/config.gz"
    if kernel.exists(installed):
        config = kernel.read(installed)
    elif kernel.exists(built_in):
        config = gzip.decompress(kernel.read_bytes(built_in, 0, MAX_CONFIG_BYTES)).decode(errors="replace")
    else:
        return None
    return "CONFIG_MEM_SOFT_DIRTY=y" in config.splitlines()


def capabilities(kernel: Kernel, release: str) -> JsonObject:
    tracefs = tracefs_root(kernel)
    return {
        "damon_sysfs": kernel.exists(DAMON_ADMIN),
        "tracefs": None if tracefs is None else f"/{tracefs}",
        "damon_tracepoint": tracefs is not None and kernel.exists(f"{tracefs}/{DAMON_EVENT}"),
        "soft_dirty": soft_dirty_supported(kernel, release),
        "numactl": shutil.which("numactl") is not None,
        "memory_tiers": kernel.exists(TIERS_DIR),
    }


# How a knob's file holds its value.
NUMBER, SWITCH, CHOICE = "number", "switch", "choice"  # 3 | true/false | "always [madvise] never"


@dataclass(frozen=True)
class Knob:
    """A kernel setting that decides where pages go: its file, and how the file holds the value."""

    name: str
    path: str
    form: str  # NUMBER, SWITCH or CHOICE

    def read(self, kernel: Kernel) -> Any:
        text = kernel.value(self.path)
        if self.form == SWITCH:
            return text == "true"
        if self.form == CHOICE:  # the kernel brackets the selected word
            chosen = re.search(r"\[(\w+)\]", text)
            return chosen.group(1) if chosen else text
        return int(text)

    def write(self, kernel: Kernel, value: Any) -> None:
        kernel.write(self.path, ("true" if value else "false") if self.form == SWITCH else str(value))


KNOBS = (
    Knob("numa_balancing", NUMA_BALANCING, NUMBER),
    Knob("demotion_enabled", DEMOTION_ENABLED, SWITCH),
    Knob("transparent_hugepage", TRANSPARENT_HUGEPAGE, CHOICE),
    Knob("zone_reclaim_mode", ZONE_RECLAIM_MODE, NUMBER),
)


class Ballast:
    """Memory the daemon holds on each node so that every run's workload starts with the same free memory.

    Why: with the caches dropped, a node's free memory still differs by several MiB from boot to boot
    (other daemons' allocations, slab).  A workload that fills DRAM by first touch then leaves a different
    share of its next buffer in DRAM in each run: on ``demo`` first-touch's zipf catalog had 0-5% of its
    pages in DRAM, its hottest ones, and the score moved by 8%.  Held down to a declared target, each
    node's free memory is the same at every start to within a few pages.
    """

    # The page tables that map what is held come from the daemon's own node, ~1/512 of what is held
    # (8 bytes per 4 KiB page): each pass but the last holds short of every target by twice that for
    # what is still to hold, so that no node ends below its target; the last pass takes up the rest,
    # and what its own page tables take is a few pages at most.
    PAGE_TABLE_SLACK = 256
    PASSES = 3

    def __init__(self, kernel: Kernel, syscalls: Syscalls) -> None:
        self._kernel = kernel
        self._syscalls = syscalls
        self._held: list[Held] = []

    def fill(self, targets: dict[int, int]) -> dict[int, int]:
        """Hold memory until each node's free bytes are at most its target; the bytes held per node."""
        held = dict.fromkeys(targets, 0)
        for last in (False,) * (self.PASSES - 1) + (True,):
            to_hold = sum(max(0, self._excess(node, target, 0)) for node, target in targets.items())
            margin = 0 if last else to_hold // self.PAGE_TABLE_SLACK
            for node, target in targets.items():
                excess = self._excess(node, target, margin)
                if excess > 0:
                    self._held.append(self._syscalls.hold_memory(node, excess))
                    held[node] += excess
        return held

    def _excess(self, node: int, target: int, margin: int) -> int:
        """Whole pages by which ``node``'s free memory is above ``target`` plus ``margin``."""
        return (node_free_bytes(self._kernel, node) - target - margin) // PAGE_SIZE * PAGE_SIZE

    def release(self) -> None:
        while self._held:
            self._held.pop().release()


def settle_memory(kernel: Kernel, ballast: Ballast, free_targets: dict[int, int]) -> JsonObject:
    """Free the page cache and reclaimable slab, then compact: every run's workload then first-touches memory
    that is free outright, not memory the kernel must reclaim while it allocates (which splits a buffer
    between nodes differently from run to run). Then hold each node in ``free_targets`` down to its target.
    Free bytes per node before and after, and the bytes held."""
    ballast.release()
    before = {str(node): node_free_bytes(kernel, node) for node in memory_nodes(kernel)}
    os.sync()
    kernel.write(DROP_CACHES, "3")
    if kernel.exists(COMPACT_MEMORY):
        kernel.write(COMPACT_MEMORY, "1")
    held = ballast.fill(free_targets)
    return {"free_before": before,
            "free_after": {str(node): node_free_bytes(kernel, node) for node in memory_nodes(kernel)},
            "held": {str(node): size for node, size in held.items()}}


class Tiering:
    """Reads and sets the kernel's own tiering; remembers first values so exit can restore them."""

    def __init__(self, kernel: Kernel) -> None:
        self._kernel = kernel
        self._original: dict[str, Any] = {}

    def apply(self, changes: dict[str, Any]) -> JsonObject:
        previous = {knob.name: knob.read(self._kernel) for knob in KNOBS if self._kernel.exists(knob.path)}
        for knob in KNOBS:
            if knob.name not in changes:
                continue
            if knob.name not in previous:
                raise invalid(f"tiering.{knob.name}: this kernel has no {knob.path}")
            self._original.setdefault(knob.name, previous[knob.name])
            knob.write(self._kernel, changes[knob.name])
        current = {knob.name: knob.read(self._kernel) for knob in KNOBS if knob.name in previous}
        return {"previous": previous, "current": current}

    def restore(self) -> None:
        for knob in KNOBS:
            if knob.name in self._original:
                knob.write(self._kernel, self._original.pop(knob.name))
