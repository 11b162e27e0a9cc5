"""An experiment's report: report.md and the terminal's result table, rendered from its summary.

``write_results`` is the entry point the runner and ``llamas report`` call: it
reads the run directory (testbed.rundir), summarizes it (testbed.summary) and
writes summary.json, report.md (what was run, the results against the bounds,
the notes, the policies' costs, the plots) and plots/ (testbed.plots) beside
the records.
"""

from __future__ import annotations

from pathlib import Path

from testbed import plots
from testbed.rundir import PLOTS_DIR, Manifest, load_system, read_manifest, read_runs, write_report, write_summary
from testbed.score import ORACLE
from testbed.summary import (
    MIB,
    REFERENCE_POLICY,
    PolicySummary,
    Summary,
    choose_reference,
    solve_oracle,
    summarize,
)
from testbed.table import markdown_table, render_table
from testbed.timeline import RunStatus
from testbed.units import format_bandwidth
from testbed.values import PolicyKind


def write_results(run_dir: Path, with_plots: bool = True) -> Summary:
    """Score every run in ``run_dir`` and write summary.json, report.md and (``with_plots``) plots/."""
    manifest = read_manifest(run_dir)
    system = load_system(run_dir, manifest.system)
    runs = read_runs(run_dir, system)
    reference = choose_reference(runs, manifest.policies)
    best = solve_oracle(reference, manifest.migration_throughput)
    summary = summarize(manifest, system, runs, reference, best)
    write_summary(run_dir, summary.json())
    written = (plots.write_plots(run_dir / PLOTS_DIR, summary, system, plots.plot_inputs(runs, reference, best))
               if with_plots else [])
    write_report(run_dir, render_report(summary, manifest, [path.relative_to(run_dir) for path in written]))
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
             "on, plus migrated bytes over the migration throughput. Lower is better. The oracle is an upper "
             "bound on what any policy can achieve, not a policy that ran.", "",
             *_headline(summary), "", markdown_table(headers, [*rows, _lower_bound_row(summary, len(headers))])]
    if summary.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in summary.notes)]
    usage = _usage_rows(summary)
    if usage:
        lines += ["", "## Policy costs", "", markdown_table(("Policy", "Measure", "Mean"), usage)]
    if plot_files:
        lines += ["", "## Plots", "", *(f"![{path.stem}]({path.as_posix()})" for path in plot_files)]
    return "\n".join(lines) + "\n"


# ---- rendering ----


def _headline(summary: Summary) -> list[str]:
    """The comparisons that place a result: lower bound, first touch, the best baseline, the oracle."""
    entries: list[tuple[str, float | None]] = [("lower bound (all fast)", summary.lower_bound_s)]
    first_touch = summary.policies.get(REFERENCE_POLICY)
    if first_touch is not None:
        entries.append((REFERENCE_POLICY, first_touch.metrics.modeled_time_s))
    baselines = [(value, name) for name, policy in summary.policies.items()
                 if policy.kind == PolicyKind.BASELINE and policy.status == RunStatus.OK
                 and (value := policy.metrics.modeled_time_s) is not None]
    if baselines:
        value, name = min(baselines)
        entries.append((f"best baseline ({name})", value))
    entries.append(("oracle (upper bound)", summary.policies[ORACLE].metrics.modeled_time_s))
    return [f"- {label}: {_seconds(value)} s" for label, value in entries]


def _row(name: str, policy: PolicySummary, terminal: bool) -> list[object]:
    metrics = policy.metrics
    label = f"{name} (upper bound)" if policy.kind == PolicyKind.BOUND else name
    failed = sum(run.status != RunStatus.OK for run in policy.repeats)
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
