"""The record of one policy run (``timeline.jsonl``): what happened, interval by interval.

The orchestrator writes it as the run goes (one JSON object per line, flushed,
so a crash or Ctrl-C leaves everything up to that point); the scorer and the
report read only this file. Record types:

- ``start``: the policy, the workload's regions (addresses and chunking), the
  nodes as the guest saw them when the workload had touched its memory, the
  kernel settings as read back after the policy's setup, and whether the
  workload waited for the loop at every epoch boundary (the barrier).
- ``epoch``: for one interval of the workload, its ground truth (reads and
  writes per region per chunk), where each chunk's pages were at the end of
  the interval (sampled pages per node), what the kernel migrated, what the
  policy saw (free memory per node, DAMON regions) and its decision (actions,
  rejections, time taken, whether it was late), and how long the workload was
  held at the boundary before the interval while the loop observed and acted.
- ``end``: ``ok`` or ``failed`` with the reason.

The JSON shape is format 1 throughout: an action is one flat object (``type``,
``why``, its range and node or its CPUs, then ``moved_bytes``… or ``reason``).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

from testbed.errors import ResultsUnwritable
from testbed.memtouch import RegionLayout
from testbed.workload import Pattern

FORMAT_VERSION = 1


@dataclass(frozen=True)
class NodeState:
    id: int
    total_bytes: int
    free_bytes: int
    workload_bytes: int  # the workload's resident bytes on the node
    held_bytes: int = 0  # what the guest daemon held so that the workload started with the run's free memory
    # Free memory as the guest daemon left it for the workload, and once the workload had touched all its pages
    # (before any policy moved one): where runs' starting placements differ, these say why. None: not recorded.
    settled_free_bytes: int | None = None
    touched_free_bytes: int | None = None


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
    # The guest's page-placement settings after setup, read back: {"numa_balancing": "0", ...}.
    kernel: dict[str, str] = field(default_factory=dict)
    barrier: bool = False  # the workload waited at each epoch boundary until the loop had acted


class ActionType(StrEnum):
    MIGRATE = "migrate"
    PLACE = "place"


@dataclass(frozen=True)
class ActionRecord:
    """A policy's action as the timeline keeps it: a migration's range and node, or a placement's CPUs."""

    type: ActionType
    why: str
    start: int | None = None
    end: int | None = None
    node: int | None = None
    cpus: tuple[int, ...] | None = None


@dataclass(frozen=True)
class Outcome:
    """What the guest did for an applied action."""

    moved_bytes: int = 0
    moved_pages: int = 0
    already_on_node: int = 0
    failed: dict[str, int] = field(default_factory=dict)  # pages the kernel could not move, by errno
    seconds: float = 0.0
    threads: int = 0  # threads a placement pinned


@dataclass(frozen=True)
class Applied:
    action: ActionRecord
    outcome: Outcome


@dataclass(frozen=True)
class Rejected:
    action: ActionRecord
    reason: str  # why the validator or the guest refused it


@dataclass(frozen=True)
class Decision:
    actions: tuple[Applied, ...]  # as sent to the guest, with what each achieved
    rejected: tuple[Rejected, ...]  # actions the validator or the guest refused
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
    wait_s: float = 0.0  # the workload was held this long before the interval began (the barrier)
    # What the policy saw (see testbed.orchestrator.observation_summary): enough to replay it offline.
    observation: dict[str, Any] | None = None


class RunStatus(StrEnum):
    OK = "ok"
    FAILED = "failed"


@dataclass(frozen=True)
class RunEnd:
    status: RunStatus
    reason: str | None
    epochs: int
    usage: dict[str, float] = field(default_factory=dict)  # the policy's own costs (LLM calls, tokens, ...)


@dataclass(frozen=True)
class Timeline:
    start: RunStart
    epochs: tuple[EpochRecord, ...]
    end: RunEnd


class TimelineWriter:
    """Appends records, each flushed; a file that takes no more raises :class:`ResultsUnwritable`."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._file: IO[str] = path.open("a")
        except OSError as error:
            raise ResultsUnwritable(path, error) from None

    def write(self, record: RunStart | EpochRecord | RunEnd) -> None:
        kind = {RunStart: "start", EpochRecord: "epoch", RunEnd: "end"}[type(record)]
        data = asdict(record)
        if isinstance(record, EpochRecord) and record.decision is not None:
            data["decision"] = {**data["decision"], "actions": [_flat(a.action, asdict(a.outcome))
                                                                for a in record.decision.actions],
                                "rejected": [_flat(r.action, {"reason": r.reason}) for r in record.decision.rejected]}
        try:
            self._file.write(json.dumps({"type": kind, "format": FORMAT_VERSION, **data}) + "\n")
            self._file.flush()
        except OSError as error:
            raise ResultsUnwritable(self.path, error) from None

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as error:  # what the last flush could not write
            raise ResultsUnwritable(self.path, error) from None


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
            end = RunEnd(**{**record, "status": RunStatus(record["status"])})
        else:
            raise ValueError(f"{path}:{number}: unknown record type {kind!r}")
    if start is None:
        raise ValueError(f"{path}: no start record")
    return Timeline(start, tuple(epochs), end or RunEnd(RunStatus.FAILED, "the run stopped without an end record",
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
        "decision": Decision(**{**decision, "actions": tuple(_applied(a) for a in decision["actions"]),
                                "rejected": tuple(_rejected(r) for r in decision["rejected"])}) if decision else None,
    })


# An action's line in the timeline is one flat object: the action's fields (those it has), then what it
# achieved or why it was refused.
_ACTION_FIELDS = tuple(f.name for f in fields(ActionRecord))
_OUTCOME_FIELDS = tuple(f.name for f in fields(Outcome))


def _flat(action: ActionRecord, rest: dict[str, Any]) -> dict[str, Any]:
    return {**{key: value for key, value in asdict(action).items() if value is not None}, **rest}


def _action(data: dict[str, Any]) -> ActionRecord:
    values = {key: data[key] for key in _ACTION_FIELDS if key in data}
    cpus = values.get("cpus")
    return ActionRecord(**{**values, "type": ActionType(data["type"]),
                           "cpus": tuple(cpus) if cpus is not None else None})


def _applied(data: dict[str, Any]) -> Applied:
    return Applied(_action(data), Outcome(**{key: data[key] for key in _OUTCOME_FIELDS if key in data}))


def _rejected(data: dict[str, Any]) -> Rejected:
    return Rejected(_action(data), data["reason"])
