"""An experiment's summary: every run scored, each policy's runs aggregated, the bounds, the comparisons, the notes.

``summary.json`` (format 2)::

    {"format": 2,
     "experiment": str, "system": str, "workload": str | null,
     "interval_s": float, "epochs": int,         # of the reference run
     "lower_bound_s": float | null,              # every chunk on its fastest node, no capacity, no migration
     "migration_throughput": float,              # bytes/s that migration time is charged at
     "migration_budget": int | null,             # bytes a policy (and the oracle) may move per interval
     "reference_run": str | null,                # "runs/first-touch": the run whose ground truth, start
                                                 # placement and node sizes the lower bound and oracle use
     "best_baseline": str | null,                # the baseline with the lowest median
     "notes": [str, ...],                        # failed runs, differing kernel settings, late epochs, bounds
     "policies": {NAME: {
        "kind": "baseline" | "llm" | "twin" | "bound" | null,   # null: no run of it could be read
        "status": "ok" | "failed",               # failed if any of its runs failed (or none exists)
        "reason": str | null,                    # "runs/NAME-r2: why; ..." for each failed run
        "partial": bool,                         # no run finished: the figures are from runs cut short
        "runs": int,                             # runs its figures are the median of
        METRICS,                                 # the median over its finished runs (all runs if none finished)
        "interval_95": [low, high] | null,       # bootstrap interval of the median modeled time
        "gap_closed": float | null,              # share of first touch's distance to the oracle it closed
        "vs_best_baseline": COMPARISON | null,   # "baseline": NAME; difference = median(this) - median(it)
        "text_contribution": COMPARISON | null,  # an LLM policy's: "twin": NAME; median(twin) - median(this)
        "usage": {str: float},                   # the policy's own costs (LLM calls, tokens, ...), median
        "spread": {METRIC: [min, max]},          # over the same runs
        "repeats": [{"run": "runs/NAME-r2", "repeat": int, "status": ..., "reason": ...,
                     "kernel": {knob: value}, "barrier": bool, "wait_s": float,
                     METRICS, "usage": {...}}, ...]}},
    }

COMPARISON is ``{"difference_s": float, "interval_95": [low, high],
"beyond_noise": bool}`` (testbed.stats: beyond noise when the interval
excludes 0 and both sides ran at least twice). METRICS are
``modeled_time_s``, ``access_time_s``, ``migration_time_s`` (seconds),
``migrated_bytes``, ``migrated_pages``, ``decisions`` (intervals the policy
decided), ``actions`` (sent to the guest), ``rejected`` (refused by the
validator), ``late_decisions`` (missed the deadline), ``late_epochs`` (the
workload fell behind), ``epochs``, ``ratio_to_lower_bound`` (against the bound
over the run's own epochs), ``ratio_to_oracle`` (null for a run that did not
cover the oracle's epochs), ``unsampled_chunks`` (chunk-epochs with no
residency sample, charged on the slowest node), ``worn_bytes`` (written to the
devices with a rated endurance) and ``wear_life_years`` (how long the first of
them to wear out would last at the run's write rate; null if none was
written) and ``violation_byte_s`` (bytes × seconds that regions holding secrets
or durable data spent on memory that may not hold them); any may be null when
not measured (the wear ones: the system has no such device; the violations: no
region holds either). The bounds are policies of kind ``"bound"``, never policies that
ran: ``"oracle"`` moves at most ``migration_budget`` per interval as the
policies may, and is what ratios and gaps are measured against;
``"oracle-unbudgeted"`` moves without limit. Each has no repeats and adds
``capacity_bytes`` ({node: bytes it may hold}), ``headroom_bytes``,
``budget_bytes`` and ``lp_rounds`` (master LPs solved); its ``usage`` holds
``solve_seconds``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import Any

from testbed.compare import Comparisons, best_baseline, compare
from testbed.model import HeldData, System
from testbed.notes import notes
from testbed.oracle import OracleError
from testbed.rundir import Manifest, Record, Run
from testbed.score import (
    ORACLE,
    ORACLE_UNBUDGETED,
    Oracle,
    TimelineError,
    Wear,
    lower_bound_s,
    oracle,
    score,
    violation_byte_s,
)
from testbed.stats import median, median_interval
from testbed.timeline import RunStatus
from testbed.values import PolicyKind

SUMMARY_FORMAT = 2
REFERENCE_POLICY = "first-touch"  # the oracle starts where first touch put the pages, and gaps are measured from it


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
    worn_bytes: float | None = None  # written to devices that wear out (None: the system has none)
    wear_life_years: float | None = None  # how long the first of them would last at the run's write rate
    violation_byte_s: float | None = None  # secrets on exposed memory, durable data on volatile memory

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
    kernel: dict[str, str] = field(default_factory=dict)  # the kernel settings it started from, as read back
    barrier: bool = False  # the workload waited for the loop at every epoch boundary
    wait_s: float = 0.0  # how long the workload was held at the barrier in all

    def json(self) -> dict[str, Any]:
        return {"run": self.run, "repeat": self.repeat, "status": self.status, "reason": self.reason,
                "kernel": self.kernel, "barrier": self.barrier, "wait_s": self.wait_s,
                **self.metrics.json(), "usage": self.usage}


@dataclass(frozen=True)
class PolicySummary:
    name: str
    kind: str | None
    status: RunStatus
    reason: str | None
    partial: bool
    metrics: Metrics  # the median over the runs counted
    spread: dict[str, tuple[float, float]]
    usage: dict[str, float]
    repeats: tuple[RunResult, ...]
    interval_95: tuple[float, float] | None = None  # of the median modeled time
    comparisons: Comparisons = field(default_factory=Comparisons)
    extra: dict[str, Any] = field(default_factory=dict)  # a bound's capacities, budget and LP size

    @property
    def runs(self) -> int:
        """How many runs the figures are the median of (a bound: its one solution)."""
        if not self.repeats:
            return int(self.metrics.modeled_time_s is not None)
        return sum(run.status == RunStatus.OK for run in self.repeats) or len(self.repeats)

    def json(self) -> dict[str, Any]:
        return {"kind": self.kind, "status": self.status, "reason": self.reason, "partial": self.partial,
                "runs": self.runs, **self.metrics.json(),
                "interval_95": list(self.interval_95) if self.interval_95 else None, **self.comparisons.json(),
                "usage": self.usage, "spread": {name: list(bounds) for name, bounds in self.spread.items()},
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
    migration_budget: int | None
    reference_run: str | None
    best_baseline: str | None
    notes: tuple[str, ...]
    policies: dict[str, PolicySummary]  # the experiment's order, then the bounds

    def json(self) -> dict[str, Any]:
        return {"format": SUMMARY_FORMAT, "experiment": self.experiment, "system": self.system,
                "workload": self.workload, "interval_s": self.interval_s, "epochs": self.epochs,
                "lower_bound_s": self.lower_bound_s, "migration_throughput": self.migration_throughput,
                "migration_budget": self.migration_budget, "reference_run": self.reference_run,
                "best_baseline": self.best_baseline, "notes": list(self.notes),
                "policies": {name: policy.json() for name, policy in self.policies.items()}}


@dataclass(frozen=True)
class Reference:
    """The run whose ground truth, start placement and node sizes the bounds use."""

    path: str
    record: Record


@dataclass(frozen=True)
class Bounds:
    """The oracle held to the policies' budget, and the same without one; or why there is none."""

    budgeted: Oracle | str  # the summary's "oracle"; unbudgeted if the manifest records no budget
    unbudgeted: Oracle | str | None  # None when the budgeted one already moves without limit


# ---- choosing the reference and the bounds ----


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


def solve_bounds(reference: Reference | None, throughput: float, budget: int | None) -> Bounds:
    """The oracle for the reference run under ``budget`` bytes per interval, and without a budget."""
    if budget is None:
        return Bounds(_solve(reference, throughput, None), None)
    return Bounds(_solve(reference, throughput, budget), _solve(reference, throughput, None))


def _solve(reference: Reference | None, throughput: float, budget: int | None) -> Oracle | str:
    if reference is None:
        return "no run has a readable record to take the ground truth from"
    record = reference.record
    try:
        return oracle(record.data, record.costs, record.timeline.start, throughput,
                      budget_bytes=None if budget is None else float(budget))
    except (OracleError, TimelineError) as error:
        return str(error)


# ---- scoring ----


def summarize(manifest: Manifest, system: System, runs: list[Run], reference: Reference | None,
              bounds: Bounds) -> Summary:
    """Every run scored, each policy's runs aggregated in the experiment's order, then the bounds, compared."""
    throughput = manifest.migration_throughput
    best = bounds.budgeted
    oracle_s = best.modeled_time_s if isinstance(best, Oracle) else None
    epochs = reference.record.data.epochs if reference else 0
    results = [_result(run, system, manifest.holds, throughput, oracle_s, epochs) for run in runs]
    names = [name for name in manifest.policies if name not in (ORACLE, ORACLE_UNBUDGETED)]
    names += sorted({run.policy for run in runs} - set(names))
    policies = {name: _policy(name, [result for result in results if result.policy == name]) for name in names}
    lower = lower_bound_s(reference.record.costs) if reference else None
    policies[ORACLE] = _bound_summary(ORACLE, best, reference, lower, oracle_s)
    if bounds.unbudgeted is not None:
        policies[ORACLE_UNBUDGETED] = _bound_summary(ORACLE_UNBUDGETED, bounds.unbudgeted, reference, lower, oracle_s)
    times = {name: _finished_times(policy) for name, policy in policies.items()}
    kinds = {name: policy.kind for name, policy in policies.items()}
    compared = compare(times, kinds, dict(manifest.twins), REFERENCE_POLICY, oracle_s)
    policies = {name: replace(policy, comparisons=compared[name]) for name, policy in policies.items()}
    interval = manifest.interval_s or (reference.record.timeline.start.interval_s if reference else None)
    return Summary(experiment=manifest.experiment, system=system.name, workload=manifest.workload,
                   interval_s=interval, epochs=epochs, lower_bound_s=lower, migration_throughput=throughput,
                   migration_budget=manifest.migration_budget, reference_run=reference.path if reference else None,
                   best_baseline=best_baseline(times, kinds),
                   notes=tuple(notes(manifest, system, runs, results, reference, bounds)), policies=policies)


def _result(run: Run, system: System, holds: tuple[HeldData | None, ...], throughput: float, oracle_s: float | None,
            oracle_epochs: int) -> RunResult:
    if run.record is None:
        return RunResult(run.path, run.policy, None, run.repeat, RunStatus.FAILED, run.error, Metrics(), {})
    timeline = run.record.timeline
    measured = score(run.record.data, run.record.costs, run.record.shares, throughput)
    wear = Wear.of(run.record.data, run.record.shares, system)
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
        unsampled_chunks=len(measured.unsampled), worn_bytes=wear.worn_bytes, wear_life_years=wear.life_years,
        violation_byte_s=violation_byte_s(run.record.data, run.record.shares, system, holds))
    reason = None if run.status == RunStatus.OK else timeline.end.reason or "failed"
    return RunResult(run.path, run.policy, timeline.start.kind, run.repeat, run.status, reason, metrics,
                     dict(timeline.end.usage), dict(timeline.start.kernel), timeline.start.barrier,
                     sum(record.wait_s for record in timeline.epochs))


def _finished_times(policy: PolicySummary) -> list[float]:
    """What comparisons use: the modeled times of finished runs (a run cut short scored fewer epochs, and
    would pass for a win); a bound's one value."""
    if not policy.repeats:
        return [] if policy.metrics.modeled_time_s is None else [policy.metrics.modeled_time_s]
    return [value for run in policy.repeats if run.status == RunStatus.OK
            and (value := run.metrics.modeled_time_s) is not None]


def _policy(name: str, results: list[RunResult]) -> PolicySummary:
    if not results:
        return PolicySummary(name, None, RunStatus.FAILED, f"no run directory runs/{name}", False, Metrics(), {}, {},
                             ())
    results = sorted(results, key=lambda result: result.repeat)
    failed = [result for result in results if result.status != RunStatus.OK]
    counted = [result for result in results if result.status == RunStatus.OK] or results
    values = {f.name: [value for result in counted if (value := getattr(result.metrics, f.name)) is not None]
              for f in fields(Metrics)}
    usage_keys = sorted({key for result in counted for key in result.usage})
    times = values["modeled_time_s"]
    return PolicySummary(
        name=name, kind=next((result.kind for result in results if result.kind), None),
        status=RunStatus.FAILED if failed else RunStatus.OK,
        reason="; ".join(f"{result.run}: {result.reason}" for result in failed) or None,
        partial=len(failed) == len(results),
        metrics=Metrics(**{key: median(found) if found else None for key, found in values.items()}),
        spread={key: (float(min(found)), float(max(found))) for key, found in values.items() if found},
        usage={key: median([r.usage[key] for r in counted if key in r.usage]) for key in usage_keys},
        repeats=tuple(results), interval_95=median_interval(times) if times else None)


def _bound_summary(name: str, best: Oracle | str, reference: Reference | None, lower: float | None,
                   oracle_s: float | None) -> PolicySummary:
    if isinstance(best, str) or reference is None:
        return PolicySummary(name, PolicyKind.BOUND.value, RunStatus.FAILED, str(best), False, Metrics(), {}, {}, ())
    placement = best.placement
    moved = float(placement.moved_bytes.sum())
    metrics = Metrics(modeled_time_s=placement.total_s, access_time_s=placement.access_s,
                      migration_time_s=placement.migration_s, migrated_bytes=moved,
                      migrated_pages=moved / reference.record.timeline.start.page_size,
                      epochs=reference.record.data.epochs, ratio_to_lower_bound=_ratio(placement.total_s, lower),
                      ratio_to_oracle=_ratio(placement.total_s, oracle_s))
    extra = {"capacity_bytes": {str(node): size for node, size in enumerate(best.capacity_bytes)},
             "headroom_bytes": best.headroom_bytes, "budget_bytes": best.budget_bytes, "lp_rounds": placement.rounds}
    return PolicySummary(name, PolicyKind.BOUND.value, RunStatus.OK, None, False, metrics, {},
                         {"solve_seconds": placement.solve_seconds}, (), extra=extra)


def _ratio(value: float | None, base: float | None) -> float | None:
    return value / base if value is not None and base else None
