"""The record of one policy run (``timeline.jsonl``): what happened, interval by interval.

The orchestrator writes it as the run goes (one JSON object per line, flushed,
so a crash or Ctrl-C leaves everything up to that point); the scorer and the
report read only this file. Record types:

- ``start``: the policy, the workload's regions (addresses and chunking), the
  nodes as the guest saw them when the workload had touched its memory.
- ``epoch``: for one interval of the workload, its ground truth (reads and
  writes per region per chunk), where each chunk's pages were at the end of
  the interval (sampled pages per node), what the kernel migrated, what the
  policy saw (free memory per node, DAMON regions) and its decision (actions,
  rejections, time taken, whether it was late).
- ``end``: ``ok`` or ``failed`` with the reason.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from testbed.workload import Pattern, RegionLayout

FORMAT_VERSION = 1


@dataclass(frozen=True)
class NodeState:
    id: int
    total_bytes: int
    free_bytes: int
    workload_bytes: int  # the workload's resident bytes on the node


@dataclass(frozen=True)
class RunStart:
    policy: str
    kind: str  # PolicyKind value
    repeat: int
    interval_s: float
    page_size: int
    regions: tuple[RegionLayout, ...]  # the workload's buffers, as it reported them
    nodes: tuple[NodeState, ...]  # when the workload had first-touched all its memory
    notes: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    actions: tuple[dict[str, Any], ...]  # as sent to the guest, with what each achieved
    rejected: tuple[dict[str, Any], ...]  # actions the validator refused, with the reason
    seconds: float  # the policy's own time to decide
    late: bool  # missed the deadline: its actions were dropped for this interval
    error: str | None = None


@dataclass(frozen=True)
class EpochRecord:
    epoch: int
    phase: int
    late: bool  # the workload could not do this interval's accesses in time
    reads: tuple[tuple[int, ...], ...]  # [region][chunk]
    writes: tuple[tuple[int, ...], ...]
    residency: tuple[tuple[dict[int, int], ...], ...]  # [region][chunk] -> {node: sampled pages}
    migrated_bytes: int  # what the kernel migrated during the interval (pgmigrate_success)
    observe_seconds: float  # the guest daemon's cost for the observation
    regions_seen: int  # DAMON regions the policy saw
    decision: Decision | None = None
    # What the policy saw (see testbed.orchestrator.observation_summary): enough to replay it offline.
    observation: dict[str, Any] | None = None


@dataclass(frozen=True)
class RunEnd:
    status: str  # "ok" or "failed"
    reason: str | None
    epochs: int
    usage: dict[str, float] = field(default_factory=dict)  # the policy's own costs (LLM calls, tokens, ...)


@dataclass(frozen=True)
class Timeline:
    start: RunStart
    epochs: tuple[EpochRecord, ...]
    end: RunEnd


class TimelineWriter:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[str] = path.open("a")

    def write(self, record: RunStart | EpochRecord | RunEnd) -> None:
        kind = {RunStart: "start", EpochRecord: "epoch", RunEnd: "end"}[type(record)]
        self._file.write(json.dumps({"type": kind, "format": FORMAT_VERSION, **asdict(record)}) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_timeline(path: Path) -> Timeline:
    """A run's records; a run cut short (no ``end`` line) reads as failed where it stopped."""
    start: RunStart | None = None
    epochs: list[EpochRecord] = []
    end: RunEnd | None = None
    for number, record in _records(path):
        kind = record.pop("type")
        record.pop("format", None)
        if kind == "start":
            start = _run_start(record)
        elif kind == "epoch":
            epochs.append(_epoch(record))
        elif kind == "end":
            end = RunEnd(**record)
        else:
            raise ValueError(f"{path}:{number}: unknown record type {kind!r}")
    if start is None:
        raise ValueError(f"{path}: no start record")
    return Timeline(start, tuple(epochs), end or RunEnd("failed", "the run stopped without an end record",
                                                         len(epochs)))


def _records(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError:
            if number == len(path.read_text().splitlines()):
                return  # a last line cut off mid-write: everything before it stands
            raise ValueError(f"{path}:{number}: not a JSON record") from None


def _run_start(record: dict[str, Any]) -> RunStart:
    return RunStart(**{**record, "regions": tuple(RegionLayout(**{**r, "pattern": Pattern(r["pattern"])})
                                                  for r in record["regions"]),
                       "nodes": tuple(NodeState(**n) for n in record["nodes"]),
                       "notes": tuple(record.get("notes", ()))})


def _epoch(record: dict[str, Any]) -> EpochRecord:
    decision = record.get("decision")
    return EpochRecord(**{
        **record,
        "reads": tuple(tuple(row) for row in record["reads"]),
        "writes": tuple(tuple(row) for row in record["writes"]),
        "residency": tuple(tuple({int(node): pages for node, pages in chunk.items()} for chunk in region)
                           for region in record["residency"]),
        "decision": Decision(**{**decision, "actions": tuple(decision["actions"]),
                                "rejected": tuple(decision["rejected"])}) if decision else None,
    })
