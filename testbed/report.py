"""An experiment's summary, report and plots, computed from its run directory alone.

The run directory (written by the experiment runner)::

    manifest.json                  versions and the resolved experiment. Read here: experiment.name,
                                   .system, .workload (a name or a spec with a name), .interval_s,
                                   .policies (names or {"name": ...}), .migration.throughput (bytes/s,
                                   or a string like "2GB/s"; null: use .migration.measured) and the
                                   rest of .migration (how it was chosen). Scalar fields outside the
                                   experiment (versions, accelerator) are listed in the report as
                                   they are.
    catalog/                       the device YAMLs and systems/<system>.yaml of the run
    runs/<policy>[-r<N>]/timeline.jsonl     one per policy run (testbed.timeline)

What this module writes next to them: ``summary.json``, ``report.md`` and ``plots/*.png``.

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

import json
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from policies.oracle import OracleError
from testbed import plots
from testbed.catalog import Catalog
from testbed.errors import ConfigError, UserError
from testbed.model import System
from testbed.score import (
    ORACLE,
    Array,
    Oracle,
    RunData,
    TimelineError,
    access_costs,
    lower_bound_s,
    oracle,
    placed_shares,
    run_data,
    score,
)
from testbed.table import markdown_table, render_table
from testbed.timeline import Timeline, read_timeline
from testbed.units import UnitError, format_bandwidth, parse_bandwidth
from testbed.values import PolicyKind

SUMMARY_FORMAT = 1
REFERENCE_POLICY = "first-touch"  # the oracle starts where first touch put the pages
RUN_NAME = re.compile(r"^(?P<policy>.+?)(?:-r(?P<repeat>\d+))?$")
MIB = 2**20


class RunDirError(UserError):
    """A run directory that lacks what a report needs."""


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
    status: str
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
    status: str
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
class Manifest:
    """What the report reads from manifest.json."""

    experiment: str
    system: str
    workload: str | None
    interval_s: float | None
    policies: tuple[str, ...]
    migration_throughput: float
    migration_notes: tuple[tuple[str, str], ...]  # the rest of experiment.migration: how it was chosen
    facts: tuple[tuple[str, str], ...]  # scalar fields outside the experiment: versions, hashes, accelerator


@dataclass(frozen=True)
class _Record:
    """A run's timeline and its arrays."""

    timeline: Timeline
    data: RunData
    costs: Array  # [k, c, n] seconds (testbed.score.access_costs)


@dataclass(frozen=True)
class _Run:
    """A run directory as read: its record, or why there is none."""

    path: str  # relative to the run directory
    policy: str
    repeat: int
    record: _Record | None
    error: str | None = None

    @property
    def status(self) -> str:
        return "ok" if self.record is not None and self.record.timeline.end.status == "ok" else "failed"

    @property
    def epochs(self) -> int:
        return self.record.data.epochs if self.record is not None else 0


@dataclass(frozen=True)
class _Reference:
    """The run whose ground truth, start placement and node sizes the bounds use."""

    path: str
    record: _Record


# ---- the entry points ----


def summarize(run_dir: Path, with_plots: bool = True) -> Summary:
    """Score every run in ``run_dir`` and write summary.json, report.md and (``with_plots``) plots/."""
    manifest = read_manifest(run_dir / "manifest.json")
    system = _load_system(run_dir, manifest.system)
    runs = [_read_run(run_dir, path, system) for path in _run_dirs(run_dir)]
    reference = _reference(runs, manifest.policies)
    best = _oracle(reference, manifest.migration_throughput)
    summary = _summary(manifest, system, runs, reference, best)
    (run_dir / "summary.json").write_text(json.dumps(summary.json(), indent=2) + "\n")
    written = (plots.write_plots(run_dir / "plots", summary, system, _plot_inputs(runs, reference, best))
               if with_plots else [])
    (run_dir / "report.md").write_text(render_report(summary, manifest, [p.relative_to(run_dir) for p in written]))
    return summary


def result_table(summary: Summary) -> str:
    """The result table for a terminal."""
    headers = ("policy", "kind", "status", "time s", "access s", "migr s", "x lower", "x oracle", "migrated",
               "decided", "rejected", "late")
    rows = [_row(name, policy, terminal=True) for name, policy in summary.policies.items()]
    return render_table(headers, [*rows, _lower_bound_row(summary, len(headers))])


def render_report(summary: Summary, manifest: Manifest, plot_files: list[Path]) -> str:
    """report.md: what was run, the results, notes and plots."""
    headers = ("Policy", "Kind", "Status", "Modeled time (s)", "Access (s)", "Migration (s)", "x lower bound",
               "x oracle", "Migrated", "Pages", "Decisions", "Actions", "Rejected", "Late decisions", "Late epochs")
    rows = [_row(name, policy, terminal=False) for name, policy in summary.policies.items()]
    lines = [f"# {summary.experiment} on {summary.system}", "", "## What was run", "",
             markdown_table(("", ""), _run_facts(summary, manifest)), "", "## Results", "",
             "Modeled memory time: ground-truth reads and writes times the latency of the node each chunk was "
             "on, plus migrated bytes over the migration throughput (DESIGN.md §5). Lower is better. The "
             "oracle is an upper bound on what any policy can achieve, not a policy that ran.", "",
             *_headline(summary), "", markdown_table(headers, [*rows, _lower_bound_row(summary, len(headers))])]
    if summary.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in summary.notes)]
    usage = _usage_rows(summary)
    if usage:
        lines += ["", "## Policy costs", "", markdown_table(("Policy", "Measure", "Mean"), usage)]
    if plot_files:
        lines += ["", "## Plots", "", *(f"![{path.stem}]({path.as_posix()})" for path in plot_files)]
    return "\n".join(lines) + "\n"


def read_manifest(path: Path) -> Manifest:
    if not path.exists():
        raise RunDirError(f"{path}: missing (is {path.parent} a run directory?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(path, "", f"not JSON: {error}") from None
    experiment = data.get("experiment") if isinstance(data, dict) else None
    if not isinstance(experiment, dict):
        raise ConfigError(path, "experiment", "missing (an object describing the experiment)")
    migration = experiment.get("migration")
    if not isinstance(migration, dict) or "throughput" not in migration:
        raise ConfigError(path, "experiment.migration.throughput", "missing (bytes per second)")
    throughput = migration["throughput"] if migration["throughput"] is not None else migration.get("measured")
    if throughput is None:
        raise ConfigError(path, "experiment.migration", "the throughput is to be measured in the guest, but no "
                          "'measured' value (bytes per second) is recorded")
    return Manifest(
        experiment=_text(path, experiment, "name"),
        system=_text(path, experiment, "system"),
        workload=_name_of(experiment.get("workload")),
        interval_s=_number_or_none(experiment.get("interval_s")),
        policies=tuple(name for name in map(_name_of, experiment.get("policies") or ()) if name),
        migration_throughput=_throughput(path, throughput),
        migration_notes=tuple((key, str(value)) for key, value in migration.items() if key != "throughput"),
        facts=tuple(_facts({key: value for key, value in data.items() if key != "experiment"})),
    )


# ---- reading runs ----


def _load_system(run_dir: Path, name: str) -> System:
    path = run_dir / "catalog" / "systems" / f"{name}.yaml"
    if not path.exists():
        raise RunDirError(f"{path}: missing (a run directory keeps a copy of the system and device files it used)")
    return Catalog(run_dir / "catalog").load_system(name)


def _run_dirs(run_dir: Path) -> list[Path]:
    runs = run_dir / "runs"
    return sorted(path for path in runs.iterdir() if path.is_dir()) if runs.is_dir() else []


def _read_run(run_dir: Path, path: Path, system: System) -> _Run:
    """A run, or what is known of it: a record that cannot be read makes a failed run with the reason."""
    match = RUN_NAME.match(path.name)
    policy, repeat = (match["policy"], int(match["repeat"] or 0)) if match else (path.name, 0)
    relative = path.relative_to(run_dir).as_posix()
    name = f"{relative}/timeline.jsonl"  # reasons name files relative to the run directory
    if not (path / "timeline.jsonl").exists():
        return _Run(relative, policy, repeat, None, f"{name}: missing")
    try:
        timeline = read_timeline(path / "timeline.jsonl")
        data = run_data(timeline, len(system.nodes))
    except (ValueError, TypeError, KeyError) as error:  # TimelineError, JSON and field errors alike
        problem = _describe(error).replace(f"{run_dir}/", "")
        return _Run(relative, policy, repeat, None, problem if problem.startswith(name) else f"{name}: {problem}")
    record = _Record(timeline, data, access_costs(data, system))
    return _Run(relative, timeline.start.policy, timeline.start.repeat, record)


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"a record lacks the field {error}"
    if isinstance(error, TypeError):
        return f"a record does not have the expected fields ({error})"
    return str(error)


def _reference(runs: list[_Run], order: tuple[str, ...]) -> _Reference | None:
    """First touch if it finished, else the first finished run in the experiment's order, else the longest."""
    def rank(run: _Run) -> tuple[bool, bool, int, int, str, int]:
        finished = run.status == "ok"
        position = order.index(run.policy) if run.policy in order else len(order)
        return (not finished, run.policy != REFERENCE_POLICY, 0 if finished else -run.epochs, position,
                run.policy, run.repeat)

    readable = [run for run in runs if run.epochs]
    best = min(readable, key=rank) if readable else None
    return _Reference(best.path, best.record) if best is not None and best.record is not None else None


def _oracle(reference: _Reference | None, throughput: float) -> Oracle | str:
    """The oracle for the reference run, or why there is none."""
    if reference is None:
        return "no run has a readable record to take the ground truth from"
    record = reference.record
    try:
        return oracle(record.data, record.costs, record.timeline.start, throughput)
    except (OracleError, TimelineError) as error:
        return str(error)


# ---- scoring ----


def _summary(manifest: Manifest, system: System, runs: list[_Run], reference: _Reference | None,
             best: Oracle | str) -> Summary:
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


def _result(run: _Run, throughput: float, oracle_s: float | None, oracle_epochs: int) -> RunResult:
    if run.record is None:
        return RunResult(run.path, run.policy, None, run.repeat, "failed", run.error, Metrics(), {})
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
    reason = None if run.status == "ok" else timeline.end.reason or "failed"
    return RunResult(run.path, run.policy, timeline.start.kind, run.repeat, run.status, reason, metrics,
                     dict(timeline.end.usage))


def _policy(name: str, results: list[RunResult]) -> PolicySummary:
    if not results:
        return PolicySummary(name, None, "failed", f"no run directory runs/{name}", False, Metrics(), {}, {}, ())
    results = sorted(results, key=lambda result: result.repeat)
    failed = [result for result in results if result.status != "ok"]
    counted = [result for result in results if result.status == "ok"] or results
    values = {f.name: [value for result in counted if (value := getattr(result.metrics, f.name)) is not None]
              for f in fields(Metrics)}
    usage_keys = sorted({key for result in counted for key in result.usage})
    return PolicySummary(
        name=name, kind=next((result.kind for result in results if result.kind), None),
        status="failed" if failed else "ok",
        reason="; ".join(f"{result.run}: {result.reason}" for result in failed) or None,
        partial=len(failed) == len(results),
        metrics=Metrics(**{key: float(np.mean(found)) if found else None for key, found in values.items()}),
        spread={key: (float(min(found)), float(max(found))) for key, found in values.items() if found},
        usage={key: float(np.mean([r.usage[key] for r in counted if key in r.usage])) for key in usage_keys},
        repeats=tuple(results))


def _oracle_summary(best: Oracle | str, reference: _Reference | None, lower: float | None) -> PolicySummary:
    if isinstance(best, str) or reference is None:
        return PolicySummary(ORACLE, PolicyKind.BOUND.value, "failed", str(best), False, Metrics(), {}, {}, ())
    placement = best.placement
    moved = float(placement.moved_bytes.sum())
    metrics = Metrics(modeled_time_s=placement.total_s, access_time_s=placement.access_s,
                      migration_time_s=placement.migration_s, migrated_bytes=moved,
                      migrated_pages=moved / reference.record.timeline.start.page_size,
                      epochs=reference.record.data.epochs, ratio_to_lower_bound=_ratio(placement.total_s, lower),
                      ratio_to_oracle=1.0)
    extra = {"capacity_bytes": {str(node): size for node, size in enumerate(best.capacity_bytes)},
             "headroom_bytes": best.headroom_bytes, "lp_rounds": placement.rounds}
    return PolicySummary(ORACLE, PolicyKind.BOUND.value, "ok", None, False, metrics, {},
                         {"solve_seconds": placement.solve_seconds}, (), extra)


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None


# ---- notes ----


def _notes(manifest: Manifest, system: System, runs: list[_Run], results: list[RunResult],
           reference: _Reference | None, best: Oracle | str) -> list[str]:
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


def _run_notes(runs: list[_Run], results: list[RunResult]) -> list[str]:
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


def _ground_truth_notes(runs: list[_Run], reference: _Reference) -> list[str]:
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


def _oracle_note(system: System, best: Oracle, reference: _Reference) -> str:
    sizes = ", ".join(f"node {node.id} ({node.device.name}) {best.capacity_bytes[node.id] / MIB:.0f}MiB"
                      for node in system.nodes)
    return (f"The oracle starts from {reference.path}'s first measured residency and may hold on each node what "
            f"the workload held there plus the free memory above {best.headroom_bytes / MIB:.0f}MiB of "
            f"headroom: {sizes}.")


def _beaten_notes(runs: list[_Run], results: list[RunResult], reference: _Reference, best: Oracle) -> list[str]:
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


# ---- rendering ----


def _headline(summary: Summary) -> list[str]:
    """The comparisons DESIGN.md §5 asks for: lower bound, first touch, the best baseline, the oracle."""
    entries: list[tuple[str, float | None]] = [("lower bound (all fast)", summary.lower_bound_s)]
    first_touch = summary.policies.get(REFERENCE_POLICY)
    if first_touch is not None:
        entries.append((REFERENCE_POLICY, first_touch.metrics.modeled_time_s))
    baselines = [(value, name) for name, policy in summary.policies.items()
                 if policy.kind == PolicyKind.BASELINE and policy.status == "ok"
                 and (value := policy.metrics.modeled_time_s) is not None]
    if baselines:
        value, name = min(baselines)
        entries.append((f"best baseline ({name})", value))
    entries.append(("oracle (upper bound)", summary.policies[ORACLE].metrics.modeled_time_s))
    return [f"- {label}: {_seconds(value)} s" for label, value in entries]


def _row(name: str, policy: PolicySummary, terminal: bool) -> list[object]:
    metrics = policy.metrics
    label = f"{name} (upper bound)" if policy.kind == PolicyKind.BOUND else name
    failed = sum(run.status != "ok" for run in policy.repeats)
    status = ("failed (partial)" if policy.partial else
              f"{failed} of {len(policy.repeats)} failed" if failed else policy.status)
    times = [_with_spread(metrics.modeled_time_s, policy.spread.get("modeled_time_s")),
             _seconds(metrics.access_time_s), _seconds(metrics.migration_time_s),
             _fixed(metrics.ratio_to_lower_bound), _fixed(metrics.ratio_to_oracle), _mib(metrics.migrated_bytes)]
    if terminal:
        return [label, policy.kind or "?", status, *times, _count(metrics.decisions), _count(metrics.rejected),
                _count(metrics.late_decisions)]
    return [label, policy.kind or "?", status, *times, _count(metrics.migrated_pages), _count(metrics.decisions),
            _count(metrics.actions), _count(metrics.rejected), _count(metrics.late_decisions),
            _count(metrics.late_epochs)]


def _lower_bound_row(summary: Summary, width: int) -> list[object]:
    known = summary.lower_bound_s is not None
    row: list[object] = ["lower bound (all fast)", "bound", "ok" if known else "-", _seconds(summary.lower_bound_s),
                         "-", "-", _fixed(1.0) if known else "-"]
    return row + ["-"] * (width - len(row))


def _run_facts(summary: Summary, manifest: Manifest) -> list[tuple[str, str]]:
    epochs = f"{summary.epochs} x {summary.interval_s:g} s" if summary.interval_s else str(summary.epochs)
    return [("experiment", summary.experiment), ("system", summary.system), ("workload", summary.workload or "-"),
            ("epochs", epochs), ("policies", ", ".join(name for name in summary.policies if name != ORACLE)),
            ("migration throughput", format_bandwidth(summary.migration_throughput)),
            ("reference run", summary.reference_run or "-"), *manifest.facts]


def _usage_rows(summary: Summary) -> list[tuple[str, str, str]]:
    return [(name, key, f"{value:g}") for name, policy in summary.policies.items()
            if policy.kind != PolicyKind.BOUND for key, value in policy.usage.items()]


def _with_spread(value: float | None, spread: tuple[float, float] | None) -> str:
    if spread is None or spread[0] == spread[1]:
        return _seconds(value)
    return f"{_seconds(value)} ({_seconds(spread[0])}-{_seconds(spread[1])})"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}MiB"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


# ---- manifest fields ----


def _text(path: Path, experiment: dict[str, Any], key: str) -> str:
    value = experiment.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"experiment.{key}", f"expected a name, got {value!r}")
    return value


def _name_of(value: object) -> str | None:
    """A name given as a string or as an object with a name."""
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) else None


def _number_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _throughput(path: Path, value: object) -> float:
    try:
        number = _number_or_none(value)
        throughput = number if number is not None else parse_bandwidth(value)
    except UnitError as error:
        raise ConfigError(path, "experiment.migration.throughput", str(error)) from None
    if throughput <= 0:
        raise ConfigError(path, "experiment.migration.throughput", f"must be above zero, got {value!r}")
    return throughput


def _facts(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Scalar fields, nested objects flattened to dotted keys; lists are left out."""
    facts = []
    for key, value in data.items():
        if isinstance(value, dict):
            facts += _facts(value, f"{prefix}{key}.")
        elif isinstance(value, (str, int, float, bool)) or value is None:
            facts.append((f"{prefix}{key}", "-" if value is None else str(value)))
    return facts


# ---- plots ----


def _plot_inputs(runs: list[_Run], reference: _Reference | None, best: Oracle | str) -> plots.PlotInputs:
    """Each policy's first readable run, the oracle's placement, and the reference's ground truth."""
    residency: dict[str, tuple[RunData, Array]] = {}
    for run in sorted(runs, key=lambda run: run.repeat):
        if run.record is not None and run.epochs and run.policy not in residency:
            residency[run.policy] = (run.record.data, placed_shares(run.record.data, run.record.costs))
    if reference is None:
        return plots.PlotInputs(residency, None, ())
    if isinstance(best, Oracle):
        residency[ORACLE] = (reference.record.data, best.placement.shares)
    regions = tuple(region.name for region in reference.record.timeline.start.regions)
    return plots.PlotInputs(residency, reference.record.data, regions)
