"""An experiment's report: report.md and the terminal's result table, rendered from its summary.

``write_results`` is the entry point the runner and ``llamas report`` call: it
reads the run directory (testbed.rundir), summarizes it (testbed.summary) and
writes summary.json, report.md (what was run, the results against the bounds,
each comparison in words, what the texts added over the text-blind twins, the
kernel settings every run started from, the notes, the policies' costs, the
plots) and plots/ (testbed.plots) beside the records.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

from testbed import plots
from testbed.compare import Comparison
from testbed.errors import ResultsUnwritable
from testbed.rundir import (
    PLOTS_DIR,
    TIMELINE_FILE,
    Manifest,
    load_system,
    read_manifest,
    read_runs,
    write_report,
    write_summary,
)
from testbed.score import BOUNDS, ORACLE, ORACLE_UNBUDGETED
from testbed.stats import MIN_REPEATS, fixed, words
from testbed.summary import (
    REFERENCE_POLICY,
    Bounds,
    PolicySummary,
    Reference,
    Summary,
    choose_reference,
    solve_bounds,
    summarize,
)
from testbed.table import markdown_table, render_table
from testbed.timeline import RunStatus
from testbed.units import MIB, format_bandwidth, format_size
from testbed.values import PolicyKind

NOISE = (f"A difference is beyond noise when the 95% bootstrap interval of the difference of medians excludes 0 and "
         f"both sides ran at least {MIN_REPEATS} times; otherwise the report says \"within noise\" (or \"noise "
         "unknown\" with a single run) and ranks nothing. \"A against B\" is A's median modeled time minus B's.")


def write_results(run_dir: Path, with_plots: bool = True) -> Summary:
    """Score every run in ``run_dir`` and write summary.json, report.md and (``with_plots``) plots/.

    A directory that takes no more (a full disk) raises :class:`ResultsUnwritable`; the records stay."""
    manifest = read_manifest(run_dir)
    system = load_system(run_dir, manifest.system)
    runs = read_runs(run_dir, system)
    reference = choose_reference(runs, manifest.policies)
    bounds = _bounds(run_dir, manifest, reference)
    summary = summarize(manifest, system, runs, reference, bounds)
    write_summary(run_dir, summary.json())
    try:
        written = (plots.write_plots(run_dir / PLOTS_DIR, summary, system,
                                     plots.plot_inputs(runs, reference, bounds.budgeted)) if with_plots else [])
    except OSError as error:
        raise ResultsUnwritable(error.filename or run_dir / PLOTS_DIR, error) from None
    write_report(run_dir, render_report(summary, manifest, [path.relative_to(run_dir) for path in written]))
    return summary


# The bounds depend only on the reference run's record, the throughput and the budget. The runner writes
# results after every run, and a finished run's record does not change: each is solved once per process
# (two LPs of up to ~15 s each), not again after every later run.
_solved: dict[tuple[object, ...], Bounds] = {}


def _bounds(run_dir: Path, manifest: Manifest, reference: Reference | None) -> Bounds:
    if reference is None:
        return solve_bounds(None, manifest.migration_throughput, manifest.migration_budget)
    record = (run_dir / reference.path / TIMELINE_FILE).resolve()
    stat = record.stat()
    key = (str(record), stat.st_size, stat.st_mtime_ns, manifest.migration_throughput, manifest.migration_budget)
    if key not in _solved:
        _solved[key] = solve_bounds(reference, manifest.migration_throughput, manifest.migration_budget)
    return _solved[key]


def result_table(summary: Summary) -> str:
    """The result table for a terminal: medians, intervals, gaps and comparisons in words."""
    headers = ("policy", "kind", "runs", "time s", "95% interval", "gap closed", "vs best baseline",
               "vs text-blind twin")
    rows = [[_label(name, policy), policy.kind or "?", _runs(policy), _seconds(policy.metrics.modeled_time_s),
             _interval(policy), _percent(policy.comparisons.gap_closed),
             _against(policy.comparisons.vs_best_baseline), _against(policy.comparisons.text_contribution, flip=True)]
            for name, policy in summary.policies.items()]
    return render_table(headers, [*rows, _lower_bound_row(summary, len(headers))])


def render_report(summary: Summary, manifest: Manifest, plot_files: list[Path]) -> str:
    """report.md: what was run, the results, the comparisons, the kernel settings, notes and plots."""
    headers = ("Policy", "Kind", "Runs", "Modeled time (s), median", "95% interval", "Range", "Access (s)",
               "Migration (s)", "x oracle", "Gap closed", "Migrated", "Pages", "Decisions", "Actions", "Rejected",
               "Late decisions", "Late epochs")
    rows = [_row(name, policy) for name, policy in summary.policies.items()]
    lines = [f"# {summary.experiment} on {summary.system}", "", "## What was run", "",
             markdown_table(("", ""), _run_facts(summary, manifest)), "", "## Results", "",
             "Modeled memory time: ground-truth reads and writes times the latency of the node each chunk was "
             "on, plus migrated bytes over the migration throughput. Lower is better. Each figure is the median "
             "over the policy's finished runs, with the 95% bootstrap interval of that median and the range of "
             "the runs. The oracle is an upper bound on what any policy can achieve under the same migration "
             "budget, not a policy that ran; gap closed is the share of first touch's distance to it that a "
             "policy closed.", "", *_headline(summary), "",
             markdown_table(headers, [*rows, _lower_bound_row(summary, len(headers))]),
             "", "## Comparisons", "", NOISE, "", *_comparison_lines(summary)]
    text = _text_lines(summary)
    if text:
        lines += ["", "## What the texts add", "",
                  "Each LLM policy beside its text-blind twin: the same code given HMAT alone, the device and "
                  "system texts withheld. Faster than the twin means reading the texts helped.", "", *text]
    wear = _wear_rows(summary)
    if wear:
        lines += ["", "## Wear", "", "Bytes written to the devices whose medium wears out (a write puts a 64-byte "
                  "line on the node that held it), and how long the first of them to wear out would last at "
                  "the run's write rate, from its rated endurance (full-device writes; the score's alone: no "
                  "policy is told it). Medians over the policy's finished runs. Not part of modeled time: a "
                  "policy that is faster by writing to such a device pays here.", "",
                  markdown_table(("Policy", "Written to wearing memory", "Life at this rate"), wear)]
    constraints = _constraint_rows(summary)
    if constraints:
        lines += ["", "## Constraints", "", "How long regions that hold secrets were on memory others can read, "
                  "and regions that hold durable data on memory that loses it without power, in bytes × "
                  "seconds of the residency the score charges (the score's alone: no policy is told what a "
                  "region holds or which devices may hold it, beyond the texts). Zero is the only good value. "
                  "Medians over the policy's finished runs, with their range. The oracle and the lower bound "
                  "know nothing of constraints: they bound modeled time alone.", "",
                  markdown_table(("Policy", "Held against a stated constraint"), constraints)]
    lines += ["", "## Kernel settings", "", "What each run started from, read back from the guest after the "
              "policy's setup; every run should show the same.", "", _kernel_table(summary)]
    if summary.notes:
        lines += ["", "## Notes", "", *(f"- {note}" for note in summary.notes)]
    usage = _usage_rows(summary)
    if usage:
        lines += ["", "## Policy costs", "", markdown_table(("Policy", "Measure", "Median"), usage)]
    if plot_files:
        lines += ["", "## Plots", "", *(f"![{path.stem}]({path.as_posix()})" for path in plot_files)]
    return "\n".join(lines) + "\n"


# ---- rendering ----


def _headline(summary: Summary) -> list[str]:
    """The figures that place a result: lower bound, first touch, the best baseline, the bounds."""
    entries: list[tuple[str, str]] = [("lower bound (all fast)", f"{_seconds(summary.lower_bound_s)} s")]
    named = [(REFERENCE_POLICY, REFERENCE_POLICY), (f"best baseline ({summary.best_baseline})", summary.best_baseline),
             ("oracle (upper bound, budgeted)", ORACLE), ("oracle without a budget", ORACLE_UNBUDGETED)]
    for label, name in named:
        policy = summary.policies.get(name) if name else None
        if policy is not None:
            entries.append((label, _seconds_with_interval(policy)))
    return [f"- {label}: {value}" for label, value in entries]


def _comparison_lines(summary: Summary) -> list[str]:
    lines = []
    for name, policy in summary.policies.items():
        against = policy.comparisons.vs_best_baseline
        if against is not None:
            lines.append(f"- {name} against the best baseline ({against.other}): {_against(against)}.")
    return lines or ["- no baseline finished, so nothing is compared."]


def _text_lines(summary: Summary) -> list[str]:
    return [f"- {name} against {found.other}: {_against(found, flip=True)}."
            for name, policy in summary.policies.items()
            if (found := policy.comparisons.text_contribution) is not None]


def _kernel_table(summary: Summary) -> str:
    """One row per distinct starting state, naming the runs that had it."""
    runs = [run for policy in summary.policies.values() for run in policy.repeats]
    knobs = sorted({knob for run in runs for knob in run.kernel})
    groups: dict[tuple[str, ...], list[str]] = defaultdict(list)
    for run in runs:
        state = (*(run.kernel.get(knob, "-") for knob in knobs), "yes" if run.barrier else "no")
        groups[state].append(run.run.removeprefix("runs/"))
    rows = [(*state, ", ".join(names)) for state, names in groups.items()]
    return markdown_table((*knobs, "epoch barrier", "runs"), rows)


def _row(name: str, policy: PolicySummary) -> list[object]:
    metrics = policy.metrics
    spread = policy.spread.get("modeled_time_s")
    return [_label(name, policy), policy.kind or "?", _runs(policy), _seconds(metrics.modeled_time_s),
            _interval(policy), "-" if spread is None or policy.runs < MIN_REPEATS
            else f"{_seconds(spread[0])}-{_seconds(spread[1])}",
            _seconds(metrics.access_time_s), _seconds(metrics.migration_time_s), _fixed(metrics.ratio_to_oracle),
            _percent(policy.comparisons.gap_closed), _mib(metrics.migrated_bytes), _count(metrics.migrated_pages),
            _count(metrics.decisions), _count(metrics.actions), _count(metrics.rejected),
            _count(metrics.late_decisions), _count(metrics.late_epochs)]


def _label(name: str, policy: PolicySummary) -> str:
    if name == ORACLE:
        return f"{name} (upper bound)"
    return f"{name} (bound)" if policy.kind == PolicyKind.BOUND else name


def _runs(policy: PolicySummary) -> str:
    """'5', '4 of 5 (1 failed)', 'failed (partial)'; a bound's '-'."""
    if not policy.repeats:
        return "-" if policy.name in BOUNDS and policy.status == RunStatus.OK else "none"
    failed = sum(run.status != RunStatus.OK for run in policy.repeats)
    if policy.partial:
        return f"0 of {len(policy.repeats)} (partial)"
    return f"{len(policy.repeats) - failed} of {len(policy.repeats)} ({failed} failed)" if failed else str(
        len(policy.repeats))


def _lower_bound_row(summary: Summary, width: int) -> list[object]:
    row: list[object] = ["lower bound (all fast)", "bound", "-", _seconds(summary.lower_bound_s)]
    return row + ["-"] * (width - len(row))


def _run_facts(summary: Summary, manifest: Manifest) -> list[tuple[str, str]]:
    epochs = f"{summary.epochs} x {summary.interval_s:g} s" if summary.interval_s else str(summary.epochs)
    budget = "-" if summary.migration_budget is None else f"{summary.migration_budget / MIB:g}MiB per interval"
    return [("experiment", summary.experiment), ("system", summary.system), ("workload", summary.workload or "-"),
            ("epochs", epochs), ("policies", ", ".join(name for name in summary.policies if name not in BOUNDS)),
            ("migration budget", budget), ("migration throughput", format_bandwidth(summary.migration_throughput)),
            ("reference run", summary.reference_run or "-"), *manifest.facts]


def _wear_rows(summary: Summary) -> list[tuple[str, str, str]]:
    """One row per policy that ran, if the system has a device that wears out."""
    return [(name, format_size(int(policy.metrics.worn_bytes)), _years(policy.metrics.wear_life_years))
            for name, policy in summary.policies.items()
            if policy.kind != PolicyKind.BOUND and policy.metrics.worn_bytes is not None]


def _constraint_rows(summary: Summary) -> list[tuple[str, str]]:
    """One row per policy that ran, if a region holds data with a constraint on where it lives."""
    rows = []
    for name, policy in summary.policies.items():
        value = policy.metrics.violation_byte_s
        if policy.kind == PolicyKind.BOUND or value is None:
            continue
        low, high = policy.spread["violation_byte_s"]
        spread = f" [{_mib_s(low)}–{_mib_s(high)}]" if low != high else ""
        rows.append((name, _mib_s(value) + spread))
    return rows


def _mib_s(byte_s: float) -> str:
    return "0" if byte_s == 0 else f"{byte_s / MIB:,.4g} MiB·s"


def _years(value: float | None) -> str:
    if value is None:
        return "nothing written"
    if value >= 100:
        return f"{value:,.0f} years"
    days = value * 365.25
    if value >= 1:
        return f"{value:.3g} years"
    return f"{days:.3g} days" if days >= 2 else f"{days * 24:.3g} hours"


def _usage_rows(summary: Summary) -> list[tuple[str, str, str]]:
    return [(name, key, f"{value:g}") for name, policy in summary.policies.items()
            if policy.kind != PolicyKind.BOUND for key, value in policy.usage.items()]


def _against(found: Comparison | None, flip: bool = False) -> str:
    """A comparison in words; ``flip``: said from the other side (the text's contribution is twin minus
    LLM policy, said from the LLM policy's side: faster than its twin means the texts helped)."""
    if found is None:
        return "-"
    if found.difference is None:
        return "no finished run to compare"
    return words(found.difference.flipped() if flip else found.difference)


def _seconds_with_interval(policy: PolicySummary) -> str:
    value = _seconds(policy.metrics.modeled_time_s)
    interval = _interval(policy)
    return f"{value} s" + ("" if interval == "-" else f" [{interval}], {_runs(policy)} runs")


def _interval(policy: PolicySummary) -> str:
    if policy.interval_95 is None or policy.runs < MIN_REPEATS:
        return "-"
    low, high = fixed(policy.interval_95)
    return f"{low}-{high}"


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _fixed(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.0f}%"


def _mib(value: float | None) -> str:
    return "-" if value is None else f"{value / MIB:.1f}MiB"


def _count(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"
