"""The report's figures (PNG, matplotlib's Agg canvas; no pyplot, so no global figure state).

- ``modeled-time.png``: per policy, the median's access and migration time as
  stacked bars, every repeat as a dot (hollow: a failed run), the lower bound
  and both oracles (budgeted, unbudgeted) as lines.
- ``residency-<policy>.png``: per region, the share of its bytes on each node,
  epoch by epoch (the policy's first run; the oracle's placement too).
- ``access-heat.png``: accesses per page per second for every chunk and epoch
  of the ground truth, on a log colour scale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

from testbed.model import System
from testbed.rundir import Run
from testbed.score import ORACLE, ORACLE_UNBUDGETED, Array, Oracle, RunData
from testbed.summary import Reference, Summary
from testbed.timeline import RunStatus
from testbed.values import PolicyKind

DPI = 100
PANEL_COLUMNS = 4
FILE_NAME = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class PlotInputs:
    residency: dict[str, tuple[RunData, Array]]  # policy -> (its run's arrays, shares [k, c, n])
    truth: RunData | None  # the reference run: the ground truth
    region_names: tuple[str, ...]


def plot_inputs(runs: list[Run], reference: Reference | None, best: Oracle | str) -> PlotInputs:
    """Each policy's first readable run, the oracle's placement, and the reference's ground truth."""
    residency: dict[str, tuple[RunData, Array]] = {}
    for run in sorted(runs, key=lambda run: run.repeat):
        if run.record is not None and run.epochs and run.policy not in residency:
            residency[run.policy] = (run.record.data, run.record.shares)
    if reference is None:
        return PlotInputs(residency, None, ())
    if isinstance(best, Oracle):
        residency[ORACLE] = (reference.record.data, best.placement.shares)
    regions = tuple(region.name for region in reference.record.timeline.start.regions)
    return PlotInputs(residency, reference.record.data, regions)


def write_plots(directory: Path, summary: Summary, system: System, inputs: PlotInputs) -> list[Path]:
    """Every figure the inputs allow; returns the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    written = [_save(_modeled_time(summary), directory / "modeled-time.png")]
    if inputs.truth is not None and inputs.truth.epochs:
        written.append(_save(_access_heat(inputs.truth, inputs.region_names), directory / "access-heat.png"))
    labels = [f"node {node.id} ({node.device.name})" for node in system.nodes]
    for policy, (data, shares) in inputs.residency.items():
        title = (f"{policy}: where each region's bytes were" if policy != ORACLE
                 else f"{ORACLE} (upper bound): where it would keep each region's bytes")
        figure = _residency(title, data, shares, inputs.region_names, labels)
        written.append(_save(figure, directory / f"residency-{FILE_NAME.sub('_', policy)}.png"))
    return written


def _save(figure: Figure, path: Path) -> Path:
    figure.savefig(path, dpi=DPI)
    return path


def _modeled_time(summary: Summary) -> Figure:
    rows = [(name, policy) for name, policy in summary.policies.items()
            if policy.kind != PolicyKind.BOUND and policy.metrics.modeled_time_s is not None]
    figure = Figure(figsize=(max(5.0, 1.1 * len(rows) + 2.5), 4.0), layout="constrained")
    axes = figure.add_subplot()
    positions = np.arange(len(rows))
    access = np.array([policy.metrics.access_time_s or 0.0 for _, policy in rows])
    migration = np.array([policy.metrics.migration_time_s or 0.0 for _, policy in rows])
    hatches = ["//" if policy.status != RunStatus.OK else "" for _, policy in rows]
    axes.bar(positions, access, label="access", color="tab:blue", hatch=hatches)
    axes.bar(positions, migration, bottom=access, label="migration", color="tab:orange", hatch=hatches)
    for position, (_, policy) in zip(positions, rows, strict=True):
        for run in policy.repeats:
            if run.metrics.modeled_time_s is not None:
                finished = run.status == RunStatus.OK
                axes.plot(position, run.metrics.modeled_time_s, "o", markersize=4, color="black",
                          fillstyle="full" if finished else "none")
    bounds = [("lower bound (all fast)", summary.lower_bound_s, "--")]
    bounds += [(f"{name} (upper bound)", summary.policies[name].metrics.modeled_time_s, style)
               for name, style in ((ORACLE, ":"), (ORACLE_UNBUDGETED, "-.")) if name in summary.policies]
    for label, value, style in bounds:
        if value is not None:
            axes.axhline(value, color="black", linestyle=style, label=label)
    axes.set_xticks(positions, [name + (" (failed)" if policy.status != RunStatus.OK else "") for name, policy in rows],
                    rotation=20, ha="right")
    axes.set_ylabel("modeled memory time (s)")
    axes.set_title(f"{summary.experiment} on {summary.system}")
    figure.legend(loc="outside right upper", fontsize="small")
    return figure


def _residency(title: str, data: RunData, shares: Array, names: Sequence[str], labels: Sequence[str]) -> Figure:
    regions = int(data.region_of.max(initial=-1)) + 1
    columns = max(1, min(PANEL_COLUMNS, regions))
    rows = -(-regions // columns)
    figure = Figure(figsize=(3.2 * columns, 2.2 * rows + 0.9), layout="constrained")
    panels = figure.subplots(rows, columns, squeeze=False, sharex=True, sharey=True).ravel()
    weights = np.eye(regions)[data.region_of] * data.chunk_bytes[:, None]  # [c, r]
    by_region = np.einsum("kcn,cr->krn", shares, weights) / weights.sum(axis=0)[None, :, None]
    edges = np.arange(data.epochs + 1)  # epoch k spans [k, k + 1)
    steps = np.concatenate([by_region, by_region[-1:]])
    for region, axes in enumerate(panels[:regions]):
        axes.stackplot(edges, steps[:, region, :].T, labels=labels, step="post")
        axes.set_title(names[region] if region < len(names) else f"region {region}", fontsize="medium")
        axes.set_ylim(0, 1)
    for axes in panels[regions:]:
        axes.set_visible(False)
    panels[0].set_ylabel("share of bytes")
    for axes in panels[-columns:]:
        axes.set_xlabel("epoch")
    handles, legend_labels = panels[0].get_legend_handles_labels()
    figure.legend(handles, legend_labels, loc="outside lower center", ncols=len(labels), fontsize="small")
    figure.suptitle(title)
    return figure


def _access_heat(truth: RunData, names: Sequence[str]) -> Figure:
    rate = truth.access_rate.T  # [c, k]
    figure = Figure(figsize=(8.0, 5.0), layout="constrained")
    axes = figure.add_subplot()
    positive = rate[rate > 0]
    norm = LogNorm(vmin=positive.min(), vmax=positive.max()) if positive.size else None
    image = axes.imshow(np.ma.masked_less_equal(rate, 0), aspect="auto", interpolation="nearest", norm=norm,
                        cmap="viridis")
    firsts = np.flatnonzero(np.diff(truth.region_of, prepend=-1))
    for first in firsts[1:]:
        axes.axhline(first - 0.5, color="white", linewidth=0.8)
    centres = (firsts + np.append(firsts[1:], truth.region_of.size)) / 2 - 0.5
    axes.set_yticks(centres, [names[r] if r < len(names) else f"region {r}" for r in truth.region_of[firsts]])
    axes.set_xlabel("epoch")
    axes.set_ylabel("chunks by region")
    axes.set_title("ground truth: accesses per 4 KiB page per second (white lines: region boundaries)")
    figure.colorbar(image, ax=axes, label="accesses / page / s")
    return figure
