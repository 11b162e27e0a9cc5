"""The summary's notes: what a reader must know before trusting a figure.

Failed runs, unsampled chunks, runs whose ground truth or starting kernel
state differs from the others', epochs in which the workload ran ahead of the
loop, how the oracle was bounded, and why a run could score below it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING

import numpy as np

from testbed.model import System
from testbed.rundir import Manifest, Run
from testbed.score import BOUNDS, Oracle
from testbed.timeline import RunStatus
from testbed.units import MIB, format_bandwidth

if TYPE_CHECKING:  # the summary's own types; it calls this module, so only for the annotations
    from testbed.summary import Bounds, Reference, RunResult


def notes(manifest: Manifest, system: System, runs: list[Run], results: list[RunResult],
          reference: Reference | None, bounds: Bounds) -> list[str]:
    found = [_migration_note(manifest)]
    present = {run.policy for run in runs}
    found += [f"{name}: no run directory (the experiment lists it)." for name in manifest.policies
              if name not in present and name not in BOUNDS]
    found += _run_notes(runs, results)
    found += _kernel_notes(results)
    if reference is not None:
        found += _ground_truth_notes(runs, reference)
    best = bounds.budgeted
    if isinstance(best, str) or reference is None:
        return [*found, f"No oracle: {best}."]
    found.append(_oracle_note(system, best, reference))
    if isinstance(bounds.unbudgeted, str):
        found.append(f"No unbudgeted oracle: {bounds.unbudgeted}.")
    return [*found, *_beaten_notes(runs, results, reference, best)]


def _migration_note(manifest: Manifest) -> str:
    how = "; ".join(f"{key}: {value}" for key, value in manifest.migration_notes)
    return f"Migration is charged at {format_bandwidth(manifest.migration_throughput)}" + (f" ({how})." if how
                                                                                           else ".")


def _run_notes(runs: list[Run], results: list[RunResult]) -> list[str]:
    """Failed runs, late epochs, unsampled chunks and the policies' own notes, run by run."""
    found = []
    finished = {result.policy for result in results if result.status == RunStatus.OK}
    for run, result in zip(runs, results, strict=True):
        if result.status != RunStatus.OK:
            kept = (f"its {result.metrics.epochs:.0f} recorded epochs are scored" if result.metrics.epochs
                    else "nothing was measured")
            counted = ("the policy's figures count its finished runs only" if result.policy in finished
                       else "the policy's figures are partial")
            found.append(f"{result.run} failed: {result.reason} ({kept}; {counted}).")
        if result.metrics.late_epochs and result.barrier:
            # Held at every boundary, each epoch still met the one placement the loop had made before it.
            found.append(f"{result.run}: the workload's accesses took longer than an epoch in "
                         f"{result.metrics.late_epochs:.0f} of {result.metrics.epochs:.0f} epochs (a slow or busy "
                         "host); the epoch barrier kept each epoch on the placement made before it.")
        elif result.metrics.late_epochs:
            found.append(f"{result.run}: the workload ran ahead of the loop in {result.metrics.late_epochs:.0f} of "
                         f"{result.metrics.epochs:.0f} epochs, so what the policy decided for them came late "
                         "(it ran without the epoch barrier).")
        if result.metrics.unsampled_chunks:
            found.append(f"{result.run}: {result.metrics.unsampled_chunks:.0f} chunk-epochs had no residency "
                         "sample and were charged as if on their slowest node.")
        if run.record is not None:
            found += [f"{run.path}: {note}" for note in run.record.timeline.start.notes]
    return found


def _kernel_notes(results: list[RunResult]) -> list[str]:
    """Every run should start from the same kernel state: name each setting that differed, and where."""
    recorded = [result for result in results if result.kernel]
    found = []
    missing = [result.run for result in results if not result.kernel and result.status == RunStatus.OK]
    if missing:
        found.append(f"{', '.join(missing)}: no kernel settings recorded, so their starting state is unknown.")
    knobs = sorted({knob for result in recorded for knob in result.kernel})
    for knob in knobs:
        runs_by_value: dict[str, list[str]] = defaultdict(list)
        for result in recorded:
            runs_by_value[result.kernel.get(knob, "(not read)")].append(result.run)
        if len(runs_by_value) > 1:
            found.append(f"Runs started with different {knob}: " + "; ".join(
                f"{value} in {', '.join(names)}" for value, names in sorted(runs_by_value.items()))
                + ". Their scores were not made under the same rules.")
    barriers = {result.barrier for result in recorded}
    if len(barriers) > 1:
        free = [result.run for result in recorded if not result.barrier]
        found.append(f"{', '.join(free)} ran without the epoch barrier, the others with it: the workload there "
                     "did not wait for the loop, so their scores do not compare.")
    return found


def _ground_truth_notes(runs: list[Run], reference: Reference) -> list[str]:
    """The workload is deterministic: every run should have seen the reference run's accesses."""
    truth = reference.record.data
    found = []
    for run in runs:
        if run.record is None or run.path == reference.path:
            continue
        data = run.record.data
        common = min(data.epochs, truth.epochs)
        same_layout = data.chunk_bytes.shape == truth.chunk_bytes.shape
        differs = (((data.reads[:common] != truth.reads[:common]) | (data.writes[:common] != truth.writes[:common]))
                   .any(axis=1) if same_layout else np.ones(common, dtype=bool))
        if differs.any():
            found.append(f"{run.path}: its ground truth differs from {reference.path}'s in {int(differs.sum())} "
                         "epochs, so its score does not compare with the others.")
    return found


def _oracle_note(system: System, best: Oracle, reference: Reference) -> str:
    sizes = ", ".join(f"node {node.id} ({node.device.name}) {best.capacity_bytes[node.id] / MIB:.0f}MiB"
                      for node in system.nodes)
    budget = ("moves at most the policies' budget of "
              f"{best.budget_bytes / MIB:.0f}MiB per interval" if best.budget_bytes is not None
              else "moves without limit (the run directory records no migration budget)")
    return (f"The oracle starts from {reference.path}'s first measured residency, {budget}, and may hold on each "
            f"node what the workload held there plus the free memory above {best.headroom_bytes / MIB:.0f}MiB of "
            f"headroom: {sizes}.")


def _beaten_notes(runs: list[Run], results: list[RunResult], reference: Reference, best: Oracle) -> list[str]:
    """Why a run scored below the oracle: it can only have started elsewhere or used more memory."""
    capacity = np.array(best.capacity_bytes, dtype=float)
    start = reference.record.shares[0]
    found = []
    for run, result in zip(runs, results, strict=True):
        modeled = result.metrics.modeled_time_s
        if (run.record is None or result.metrics.ratio_to_oracle is None or modeled is None
                or modeled >= best.modeled_time_s * (1 - 1e-6)):
            continue
        data = run.record.data
        shares = run.record.shares
        held = (shares * data.chunk_bytes[None, :, None]).sum(axis=1).max(axis=0)
        reasons = [f"it held up to {held[n] / MIB:.0f}MiB on node {n}, more than the oracle's "
                   f"{capacity[n] / MIB:.0f}MiB" for n in np.flatnonzero(held > capacity + MIB)]
        elsewhere = float((np.abs(shares[0] - start).sum(axis=1) / 2 * data.chunk_bytes).sum())
        if elsewhere > MIB:
            reasons.append(f"its first epoch's placement differs from the oracle's start by {elsewhere / MIB:.0f}MiB")
        if best.budget_bytes is not None and (moved := float(data.migrated_bytes.max(initial=0.0))) > \
                best.budget_bytes + MIB:
            reasons.append(f"it moved up to {moved / MIB:.0f}MiB in an interval, more than the oracle's budget")
        found.append(f"{result.run} scored below the oracle: " + ("; ".join(reasons) or
                     "neither its start, its memory use nor its moves explain it (check its residency sampling)")
                     + ".")
    return found
