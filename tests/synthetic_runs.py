"""Tiny synthetic run records and run directories for the score, oracle and report tests.

Counts and residency are given per region, per chunk: ``reads=[[10, 0], [5]]``
is two regions, the first with two chunks. Residency is ``{node: sampled pages}``
per chunk; ``on(node)`` and ``split(...)`` write the common cases.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from testbed.catalog import DEFAULT_CATALOG, Catalog
from testbed.memtouch import RegionLayout
from testbed.model import System
from testbed.timeline import (
    ActionRecord,
    ActionType,
    Applied,
    Decision,
    EpochRecord,
    NodeState,
    Outcome,
    Rejected,
    RunEnd,
    RunStart,
    RunStatus,
    Timeline,
    TimelineWriter,
)
from testbed.units import MIB
from testbed.workload import Pattern

PAGE = 4096
CHUNK = 2 * MIB
PAGES_PER_CHUNK = CHUNK // PAGE

# The kernel state every run starts from (testbed.orchestrator.START_STATE, as read back).
KERNEL = {"numa_balancing": "0", "demotion_enabled": "false", "transparent_hugepage": "never",
          "zone_reclaim_mode": "0"}

Counts = Sequence[Sequence[int]]
Residency = Sequence[Sequence[dict[int, int]]]


def on(node: int) -> dict[int, int]:
    """All of a chunk's sampled pages on one node."""
    return {node: PAGES_PER_CHUNK}


def split(**pages: int) -> dict[int, int]:
    """Sampled pages per node: ``split(n0=256, n1=256)``."""
    return {int(key.removeprefix("n")): count for key, count in pages.items()}


def layout(*chunks: int, chunk: int = CHUNK) -> tuple[RegionLayout, ...]:
    """Regions r0, r1, ... with these many chunks each, laid out one after another."""
    regions = []
    address = 0x7F0000000000
    for index, count in enumerate(chunks):
        regions.append(RegionLayout(f"r{index}", Pattern.UNIFORM, address, count * chunk, chunk,
                                    count * chunk // 4096, count))
        address += count * chunk
    return tuple(regions)


def epoch(number: int, reads: Counts, writes: Counts | None = None, residency: Residency | None = None,
          migrated: int = 0, phase: int = 0, decision: Decision | None = None, late: bool = False) -> EpochRecord:
    writes = writes if writes is not None else [[0] * len(row) for row in reads]
    residency = residency if residency is not None else [[on(0)] * len(row) for row in reads]
    return EpochRecord(epoch=number, phase=phase, late=late, reads=tuple(tuple(row) for row in reads),
                       writes=tuple(tuple(row) for row in writes),
                       residency=tuple(tuple(dict(chunk) for chunk in row) for row in residency),
                       migrated_bytes=migrated, observe_seconds=0.01, regions_seen=4, decision=decision)


def decision(actions: int = 0, rejected: int = 0, late: bool = False) -> Decision:
    move = ActionRecord(ActionType.MIGRATE, "test", start=0, end=MIB, node=1)
    return Decision(actions=tuple(Applied(move, Outcome(moved_bytes=MIB)) for _ in range(actions)),
                    rejected=tuple(Rejected(move, "over budget") for _ in range(rejected)),
                    seconds=0.01, late=late)


def nodes(*sizes: tuple[int, int, int]) -> tuple[NodeState, ...]:
    """(total, free, workload) bytes per node, nodes numbered from 0."""
    return tuple(NodeState(index, total, free, workload) for index, (total, free, workload) in enumerate(sizes))


def timeline(regions: tuple[RegionLayout, ...], epochs: Sequence[EpochRecord], node_states: tuple[NodeState, ...],
             policy: str = "first-touch", kind: str = "baseline", repeat: int = 0,
             status: RunStatus | None = RunStatus.OK,
             reason: str | None = None, usage: dict[str, float] | None = None, interval_s: float = 1.0,
             notes: tuple[str, ...] = (), kernel: dict[str, str] | None = None, barrier: bool = True) -> Timeline:
    """A run's record; ``status=None`` leaves the end record out (a run cut short)."""
    start = RunStart(policy=policy, kind=kind, repeat=repeat, interval_s=interval_s, page_size=PAGE,
                     regions=regions, nodes=node_states, notes=notes,
                     kernel=kernel if kernel is not None else dict(KERNEL), barrier=barrier)
    end = RunEnd(status=status or RunStatus.FAILED, reason=reason, epochs=len(epochs), usage=usage or {})
    return Timeline(start, tuple(epochs), end if status else RunEnd(RunStatus.FAILED, None, len(epochs)))


def write_timeline(path: Path, record: Timeline, with_end: bool = True) -> Path:
    writer = TimelineWriter(path)
    writer.write(record.start)
    for item in record.epochs:
        writer.write(item)
    if with_end:
        writer.write(record.end)
    writer.close()
    return path


def system(name: str) -> System:
    return Catalog(DEFAULT_CATALOG).load_system(name)


def run_directory(root: Path, system_name: str, runs: dict[str, Timeline], throughput: object = 2e9,
                  policies: Sequence[str] | None = None, cut_short: Sequence[str] = (),
                  migration_budget: int | None = None, twins: dict[str, str] | None = None,
                  workload: dict[str, Any] | None = None, **manifest: Any) -> Path:
    """A run directory as the runner writes it: manifest, catalog copy, one timeline per run.

    ``runs`` maps run directory names (``first-touch``, ``llamas-r2``) to records; those named
    in ``cut_short`` get no end record. ``migration_budget`` (bytes per interval) and ``twins``
    ({LLM policy: its text-blind twin}) go in the experiment as the runner records them, and ``workload``
    instead of a tiny one.
    """
    catalog = root / "catalog"
    (catalog / "systems").mkdir(parents=True)
    for device in DEFAULT_CATALOG.glob("*.yaml"):
        shutil.copy(device, catalog / device.name)
    shutil.copy(DEFAULT_CATALOG / "systems" / f"{system_name}.yaml", catalog / "systems")
    experiment = {"name": "synthetic", "system": system_name, "workload": workload or {"name": "tiny", "epochs": 3},
                  "interval_s": 1.0, "policies": list(policies if policies is not None else
                                                       dict.fromkeys(r.start.policy for r in runs.values())),
                  "migration": {"throughput": throughput, "chosen": "model"}}
    if migration_budget is not None:
        experiment["migration_budget"] = migration_budget
    if twins is not None:
        experiment["twins"] = twins
    document = {"format": 1, "project": {"version": "0.1.0", "git": "abc1234"}, "qemu": "QEMU emulator 10.0.2",
                "accelerator": {"name": "tcg"}, **manifest, "experiment": experiment}
    (root / "manifest.json").write_text(json.dumps(document, indent=2))
    for name, record in runs.items():
        write_timeline(root / "runs" / name / "timeline.jsonl", record, with_end=name not in cut_short)
    return root
