"""An experiment's summary: every run scored, each policy's runs aggregated, the oracle and the notes.

``summary.json`` (format 1)::

    {"format": 1,
     "experiment": str, "system": str, "workload": str | null,
     "interval_s": float, "epochs": int,         # of the reference run
     "lower_bound_s": float | null,              # every chunk on its fastest node, no capacity, no migration
     "migration_throughput": float,              # bytes/s that migration time is charged at
     "reference_run": str | null,                # "runs/first-touch": the run whose ground truth, start
                                                 # placement and node sizes the lower bound and oracle use
     "notes": [str, ...],                        # failed runs, caveats, the oracle's capacities
     "policies": {NAME: {
        "kind": "baseline" | "llm" | "bound" | null,   # null: no run of it could be read
        "status": "ok" | "failed",               # failed if any of its runs failed (or none exists)
        "reason": str | null,                    # "runs/NAME-r2: why; ..." for each failed run
        "partial": bool,                         # no run finished: the figures are from runs cut short
        METRICS,                                 # the mean over its finished runs (all runs if none finished)
        "usage": {str: float},                   # the policy's own costs (LLM calls, tokens, ...), mean
        "spread": {METRIC: [min, max]},          # over the same runs
        "repeats": [{"run": "runs/NAME-r2", "repeat": int, "status": ..., "reason": ...,
                     METRICS, "usage": {...}}, ...]}},
    }

METRICS are ``modeled_time_s``, ``access_time_s``, ``migration_time_s`` (seconds),
``migrated_bytes``, ``migrated_pages``, ``decisions`` (intervals the policy
decided), ``actions`` (sent to the guest), ``rejected`` (refused by the
validator), ``late_decisions`` (missed the deadline), ``late_epochs`` (the
workload fell behind), ``epochs``, ``ratio_to_lower_bound`` (against the bound
over the run's own epochs), ``ratio_to_oracle`` (null for a run that did not
cover the oracle's epochs) and ``unsampled_chunks`` (chunk-epochs with no
residency sample, charged on the slowest node); any may be null when not
measured. The oracle is the policy ``"oracle"`` of kind ``"bound"``: an upper
bound on what a policy can achieve, never a policy that ran. It has no repeats
and adds ``capacity_bytes`` ({node: bytes it may hold}), ``headroom_bytes`` and
``lp_rounds`` (master LPs solved); its ``usage`` holds ``solve_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np

from testbed.model import System
from testbed.oracle import OracleError
from testbed.rundir import Manifest, Record, Run
from testbed.score import (
    ORACLE,
    Oracle,
    TimelineError,
    lower_bound_s,
    oracle,
    placed_shares,
    score,
)
from testbed.timeline import RunStatus
from testbed.units import format_bandwidth
from testbed.values import PolicyKind

SUMMARY_FORMAT = 1
REFERENCE_POLICY = "first-touch"  # the oracle starts where first touch put the pages
MIB = 2**20


@dataclass(frozen=True)
class Metrics:
    modeled_time_s: float | None = None
    access_time_s: float | None = None
    migration_time_s: float | None = None
    migrated_bytes: float | None = None
    migrated_pages: float | None = None
    decisions: float | None = None
    actions: float | None = None
    rejected: float | None = None
    late_decisions: float | None = None
    late_epochs: float | None = None
    epochs: float | None = None
    ratio_to_lower_bound: float | None = None
    ratio_to_oracle: float | None = None
    unsampled_chunks: float | None = None

    def json(self) -> dict[str, float | None]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class RunResult:
    """One policy run, scored."""

    run: str  # relative to the run directory
    policy: str
    kind: str | None
    repeat: int
    status: RunStatus
    reason: str | None
    metrics: Metrics
    usage: dict[str, float]

    def json(self) -> dict[str, Any]:
        return {"run": self.run, "repeat": self.repeat, "status": self.status, "reason": self.reason,
                **self.metrics.json(), "usage": self.usage}


@dataclass(frozen=True)
class PolicySummary:
    name: str
    kind: str | None
    status: RunStatus
    reason: str | None
    partial: bool
    metrics: Metrics  # the mean over the runs counted
    spread: dict[str, tuple[float, float]]
    usage: dict[str, float]
    repeats: tuple[RunResult, ...]
    extra: dict[str, Any] = field(default_factory=dict)  # the oracle's capacities and LP size

    def json(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "reason": self.reason, "partial": self.partial,
                **self.metrics.json(), "usage": self.usage,
                "spread": {name: list(bounds) for name, bounds in self.spread.items()},
                "repeats": [run.json() for run in self.repeats], **self.extra}


@dataclass(frozen=True)
class Summary:
    experiment: str
    system: str
    workload: str | None
    interval_s: float | None
    epochs: int
    lower_bound_s: float | None
    migration_throughput: float
    reference_run: str | None
    notes: tuple[str, ...]
    policies: dict[str, PolicySummary]  # the experiment's order, then the oracle

    def json(self) -> dict[str, Any]:
        return {"format": SUMMARY_FORMAT, "experiment": self.experiment, "system": self.system,
                "workload": self.workload, "interval_s": self.interval_s, "epochs": self.epochs,
                "lower_bound_s": self.lower_bound_s, "migration_throughput": self.migration_throughput,
                "reference_run": self.reference_run, "notes": list(self.notes),
                "policies": {name: policy.json() for name, policy in self.policies.items()}}


@dataclass(frozen=True)
class Reference:
    """The run whose ground truth, start placement and node sizes the bounds use."""

    path: str
    record: Record


# ---- choosing the reference and the oracle ----


def choose_reference(runs: list[Run], order: tuple[str, ...]) -> Reference | None:
    """First touch if it finished, else the first finished run in the experiment's order, else the longest."""
    def rank(run: Run) -> tuple[bool, bool, int, int, str, int]:
        finished = run.status == RunStatus.OK
        position = order.index(run.policy) if run.policy in order else len(order)
        return (not finished, run.policy != REFERENCE_POLICY, 0 if finished else -run.epochs, position,
                run.policy, run.repeat)

    readable = [run for run in runs if run.epochs]
    best = min(readable, key=rank) if readable else None
    return Reference(best.path, best.record) if best is not None and best.record is not None else None


def solve_oracle(reference: Reference | None, throughput: float) -> Oracle | str:
    """The oracle for the reference run, or why there is none."""
    if reference is None:
        return "no run has a readable record to take the ground truth from"
    record = reference.record
    try:
        return oracle(record.data, record.costs, record.timeline.start, throughput)
    except (OracleError, TimelineError) as error:
        return str(error)


# ---- scoring ----


def summarize(manifest: Manifest, system: System, runs: list[Run], reference: Reference | None,
              best: Oracle | str) -> Summary:
    """Every run scored, each policy's runs aggregated in the experiment's order, then the oracle."""
    throughput = manifest.migration_throughput
    oracle_s = best.modeled_time_s if isinstance(best, Oracle) else None
    epochs = reference.record.data.epochs if reference else 0
    results = [_result(run, throughput, oracle_s, epochs) for run in runs]
    names = [name for name in manifest.policies if name != ORACLE]
    names += sorted({run.policy for run in runs} - set(names))
    policies = {name: _policy(name, [result for result in results if result.policy == name]) for name in names}
    lower = lower_bound_s(reference.record.costs) if reference else None
    policies[ORACLE] = _oracle_summary(best, reference, lower)
    interval = manifest.interval_s or (reference.record.timeline.start.interval_s if reference else None)
    return Summary(experiment=manifest.experiment, system=system.name, workload=manifest.workload,
                   interval_s=interval, epochs=epochs, lower_bound_s=lower, migration_throughput=throughput,
                   reference_run=reference.path if reference else None,
                   notes=tuple(_notes(manifest, system, runs, results, reference, best)), policies=policies)


def _result(run: Run, throughput: float, oracle_s: float | None, oracle_epochs: int) -> RunResult:
    if run.record is None:
        return RunResult(run.path, run.policy, None, run.repeat, RunStatus.FAILED, run.error, Metrics(), {})
    timeline = run.record.timeline
    measured = score(run.record.data, run.record.costs, throughput)
    decisions = [record.decision for record in timeline.epochs if record.decision is not None]
    metrics = Metrics(
        modeled_time_s=measured.modeled_time_s, access_time_s=measured.access_time_s,
        migration_time_s=measured.migration_time_s, migrated_bytes=measured.migrated_bytes,
        migrated_pages=measured.migrated_bytes // timeline.start.page_size,
        decisions=len(decisions), actions=sum(len(d.actions) for d in decisions),
        rejected=sum(len(d.rejected) for d in decisions), late_decisions=sum(d.late for d in decisions),
        late_epochs=sum(record.late for record in timeline.epochs), epochs=measured.epochs,
        ratio_to_lower_bound=_ratio(measured.modeled_time_s, measured.lower_bound_s),
        ratio_to_oracle=_ratio(measured.modeled_time_s, oracle_s) if measured.epochs == oracle_epochs else None,
        unsampled_chunks=len(measured.unsampled))
    reason = None if run.status == RunStatus.OK else timeline.end.reason or "failed"
    return RunResult(run.path, run.policy, timeline.start.kind, run.repeat, run.status, reason, metrics,
                     dict(timeline.end.usage))


def _policy(name: str, results: list[RunResult]) -> PolicySummary:
    if not results:
        return PolicySummary(name, None, RunStatus.FAILED, f"no run directory runs/{name}", False, Metrics(), {}, {},
                             ())
    results = sorted(results, key=lambda result: result.repeat)
    failed = [result for result in results if result.status != RunStatus.OK]
    counted = [result for result in results if result.status == "ok"] or results
    values = {f.name: [value for result in counted if (value := getattr(result.metrics, f.name)) is not None]
              for f in fields(Metrics)}
    usage_keys = sorted({key for result in counted for key in result.usage})
    return PolicySummary(
        name=name, kind=next((result.kind for result in results if result.kind), None),
        status=RunStatus.FAILED if failed else RunStatus.OK,
        reason="; ".join(f"{result.run}: {result.reason}" for result in failed) or None,
        partial=len(failed) == len(results),
        metrics=Metrics(**{key: float(np.mean(found)) if found else None for key, found in values.items()}),
        spread={key: (float(min(found)), float(max(found))) for key, found in values.items() if found},
        usage={key: float(np.mean([r.usage[key] for r in counted if key in r.usage])) for key in usage_keys},
        repeats=tuple(results))


def _oracle_summary(best: Oracle | str, reference: Reference | None, lower: float | None) -> PolicySummary:
    if isinstance(best, str) or reference is None:
        return PolicySummary(ORACLE, PolicyKind.BOUND.value, RunStatus.FAILED, str(best), False, Metrics(), {}, {}, ())
    placement = best.placement
    moved = float(placement.moved_bytes.sum())
    metrics = Metrics(modeled_time_s=placement.total_s, access_time_s=placement.access_s,
                      migration_time_s=placement.migration_s, migrated_bytes=moved,
                      migrated_pages=moved / reference.record.timeline.start.page_size,
                      epochs=reference.record.data.epochs, ratio_to_lower_bound=_ratio(placement.total_s, lower),
                      ratio_to_oracle=1.0)
    extra = {"capacity_bytes": {str(node): size for node, size in enumerate(best.capacity_bytes)},
             "headroom_bytes": best.headroom_bytes, "lp_rounds": placement.rounds}
    return PolicySummary(ORACLE, PolicyKind.BOUND.value, RunStatus.OK, None, False, metrics, {},
                         {"solve_seconds": placement.solve_seconds}, (), extra)


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


# ---- notes ----


def _notes(manifest: Manifest, system: System, runs: list[Run], results: list[RunResult],
           reference: Reference | None, best: Oracle | str) -> list[str]:
    notes = [_migration_note(manifest)]
    present = {run.policy for run in runs}
    notes += [f"{name}: no run directory (the experiment lists it)." for name in manifest.policies
              if name not in present and name != ORACLE]
    notes += _run_notes(runs, results)
    if reference is not None:
        notes += _ground_truth_notes(runs, reference)
    if isinstance(best, str) or reference is None:
        return [*notes, f"No oracle: {best}."]
    return [*notes, _oracle_note(system, best, reference), *_beaten_notes(runs, results, reference, best)]


def _migration_note(manifest: Manifest) -> str:
    how = "; ".join(f"{key}: {value}" for key, value in manifest.migration_notes)
    return f"Migration is charged at {format_bandwidth(manifest.migration_throughput)}" + (f" ({how})." if how
                                                                                           else ".")


def _run_notes(runs: list[Run], results: list[RunResult]) -> list[str]:
    """Failed runs, unsampled chunks and the policies' own notes, run by run."""
    notes = []
    finished = {result.policy for result in results if result.status == "ok"}
    for run, result in zip(runs, results, strict=True):
        if result.status != "ok":
            kept = (f"its {result.metrics.epochs:.0f} recorded epochs are scored" if result.metrics.epochs
                    else "nothing was measured")
            counted = ("the policy's figures count its finished runs only" if result.policy in finished
                       else "the policy's figures are partial")
            notes.append(f"{result.run} failed: {result.reason} ({kept}; {counted}).")
        if result.metrics.unsampled_chunks:
            notes.append(f"{result.run}: {result.metrics.unsampled_chunks:.0f} chunk-epochs had no residency "
                         "sample and were charged as if on their slowest node.")
        if run.record is not None:
            notes += [f"{run.path}: {note}" for note in run.record.timeline.start.notes]
    return notes


def _ground_truth_notes(runs: list[Run], reference: Reference) -> list[str]:
    """The workload is deterministic: every run should have seen the reference run's accesses."""
    truth = reference.record.data
    notes = []
    for run in runs:
        if run.record is None or run.path == reference.path:
            continue
        data = run.record.data
        common = min(data.epochs, truth.epochs)
        same_layout = data.chunk_bytes.shape == truth.chunk_bytes.shape
        differs = (((data.reads[:common] != truth.reads[:common]) | (data.writes[:common] != truth.writes[:common]))
                   .any(axis=1) if same_layout else np.ones(common, dtype=bool))
        if differs.any():
            notes.append(f"{run.path}: its ground truth differs from {reference.path}'s in {int(differs.sum())} "
                         "epochs, so its score does not compare with the others.")
    return notes


def _oracle_note(system: System, best: Oracle, reference: Reference) -> str:
    sizes = ", ".join(f"node {node.id} ({node.device.name}) {best.capacity_bytes[node.id] / MIB:.0f}MiB"
                      for node in system.nodes)
    return (f"The oracle starts from {reference.path}'s first measured residency and may hold on each node what "
            f"the workload held there plus the free memory above {best.headroom_bytes / MIB:.0f}MiB of "
            f"headroom: {sizes}.")


def _beaten_notes(runs: list[Run], results: list[RunResult], reference: Reference, best: Oracle) -> list[str]:
    """Why a run scored below the oracle: it can only have started elsewhere or used more memory."""
    capacity = np.array(best.capacity_bytes, dtype=float)
    start = placed_shares(reference.record.data, reference.record.costs)[0]
    notes = []
    for run, result in zip(runs, results, strict=True):
        modeled = result.metrics.modeled_time_s
        if (run.record is None or result.metrics.ratio_to_oracle is None or modeled is None
                or modeled >= best.modeled_time_s * (1 - 1e-6)):
            continue
        data = run.record.data
        shares = placed_shares(data, run.record.costs)
        held = (shares * data.chunk_bytes[None, :, None]).sum(axis=1).max(axis=0)
        reasons = [f"it held up to {held[n] / MIB:.0f}MiB on node {n}, more than the oracle's "
                   f"{capacity[n] / MIB:.0f}MiB" for n in np.flatnonzero(held > capacity + MIB)]
        elsewhere = float((np.abs(shares[0] - start).sum(axis=1) / 2 * data.chunk_bytes).sum())
        if elsewhere > MIB:
            reasons.append(f"its first epoch's placement differs from the oracle's start by {elsewhere / MIB:.0f}MiB")
        notes.append(f"{result.run} scored below the oracle: " + ("; ".join(reasons) or
                     "neither its start nor its memory use explains it (check its residency sampling)") + ".")
    return notes
