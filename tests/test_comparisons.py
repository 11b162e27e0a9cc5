"""What the summary and report say about policies over repeats: gaps closed, the best baseline, the texts'
contribution over the text-blind twin, and runs that did not start under the same rules."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from synthetic_runs import KERNEL, Residency, epoch, layout, nodes, on, run_directory, split, timeline

from testbed.report import result_table, write_results
from testbed.timeline import Timeline
from testbed.units import MIB

GiB = 2**30
START = nodes((GiB, 64 * MIB, 4 * MIB), (2 * GiB, GiB, 2 * MIB))  # dram-cxl: node 0 holds r0's two chunks
REPEATS = 3
SWAP = 4 * MIB  # r1 into DRAM, r0's cold chunk out


def run(policy: str, residency: Callable[[int], Residency], kind: str = "baseline", repeat: int = 1,
        late: int = -1, moved: int = 0, **options: Any) -> Timeline:
    """Regions r0 (two chunks) and r1 (one), r1 hot from epoch 2 on, when ``moved`` bytes migrate; the epoch
    ``late`` ran ahead of the loop."""
    records = [epoch(k, reads=[[100 * (k + 1), 5], [3000 if k >= 2 else 10]], residency=residency(k),
                     phase=int(k >= 2), late=k == late, migrated=moved if k == 2 else 0) for k in range(4)]
    return timeline(layout(2, 1), records, START, policy=policy, kind=kind, repeat=repeat, **options)


def stays(k: int) -> Residency:
    return [[on(0), on(0)], [on(1)]]


def r1_in_dram(share: int) -> Callable[[int], Residency]:
    """r1 mostly in DRAM from epoch 2 (``share`` of its 512 sampled pages), r0's cold chunk out."""
    return lambda k: [[on(0), on(1)], [split(n0=share, n1=512 - share)]] if k >= 2 else stays(k)


def experiment(root: Path, twin_residency: Callable[[int], Callable[[int], Residency]],
               **runs: Timeline) -> Path:
    """first-touch and hot-cold (no moves), llamas (r1 into DRAM) and its twin, REPEATS runs each."""
    found = {}
    for repeat in range(1, REPEATS + 1):
        found[f"first-touch-r{repeat}"] = run("first-touch", stays, repeat=repeat)
        found[f"hot-cold-r{repeat}"] = run("hot-cold", r1_in_dram(200 + repeat), repeat=repeat, moved=SWAP)
        found[f"llamas-r{repeat}"] = run("llamas", r1_in_dram(500 - repeat), kind="llm", repeat=repeat, moved=SWAP)
        found[f"llamas-blind-r{repeat}"] = run("llamas-blind", twin_residency(repeat), kind="twin", repeat=repeat,
                                                 moved=SWAP)
    return run_directory(root, "dram-cxl", {**found, **runs}, throughput=1e11, migration_budget=64 * MIB,
                         twins={"llamas": "llamas-blind"},
                         policies=["first-touch", "hot-cold", "llamas", "llamas-blind"])


def test_an_llm_policy_better_than_its_twin_is_said_to_gain_from_the_texts(tmp_path: Path) -> None:
    summary = write_results(experiment(tmp_path, lambda repeat: r1_in_dram(200 - repeat)), with_plots=False)
    contribution = summary.policies["llamas"].comparisons.text_contribution
    assert contribution is not None and contribution.other == "llamas-blind" and contribution.difference
    assert contribution.difference.value > 0 and contribution.difference.beyond_noise  # the twin is slower
    written = json.loads((tmp_path / "summary.json").read_text())["policies"]["llamas"]["text_contribution"]
    assert (written["twin"], written["beyond_noise"]) == ("llamas-blind", True) and written["difference_s"] > 0
    report = (tmp_path / "report.md").read_text()
    text_section = report.split("## What the texts add")[1].split("##")[0]
    assert "- llamas against llamas-blind: " in text_section and "faster" in text_section
    assert "beyond noise" in text_section
    assert summary.policies["llamas-blind"].comparisons.text_contribution is None


def test_a_twin_that_decides_the_same_is_within_noise_and_nothing_is_ranked(tmp_path: Path) -> None:
    summary = write_results(experiment(tmp_path, lambda repeat: r1_in_dram(500 - repeat)), with_plots=False)
    contribution = summary.policies["llamas"].comparisons.text_contribution
    assert contribution is not None and contribution.difference is not None
    assert not contribution.difference.beyond_noise
    assert "within noise" in result_table(summary).splitlines()[4]  # llamas' row
    assert "- llamas against llamas-blind: within noise" in (tmp_path / "report.md").read_text()


def test_gaps_are_closed_from_first_touch_toward_the_budgeted_oracle(tmp_path: Path) -> None:
    summary = write_results(experiment(tmp_path, lambda repeat: r1_in_dram(200 - repeat)), with_plots=False)
    gaps = {name: policy.comparisons.gap_closed for name, policy in summary.policies.items()}
    assert gaps["first-touch"] == 0.0 and gaps["oracle"] == 1.0
    assert 0.0 < (gaps["hot-cold"] or 0.0) < (gaps["llamas"] or 0.0) <= 1.0
    assert summary.best_baseline == "hot-cold"
    against = summary.policies["llamas"].comparisons.vs_best_baseline
    assert against is not None and against.other == "hot-cold"
    assert against.difference is not None and against.difference.value < 0 and against.difference.beyond_noise
    assert summary.policies["hot-cold"].comparisons.vs_best_baseline is None


def test_a_run_that_started_from_other_kernel_settings_is_named(tmp_path: Path) -> None:
    odd = run("first-touch", stays, repeat=REPEATS + 1, kernel={**KERNEL, "numa_balancing": "1"})
    root = experiment(tmp_path, lambda repeat: r1_in_dram(200 - repeat), **{"first-touch-r4": odd})
    summary = write_results(root, with_plots=False)
    assert any(note.startswith("Runs started with different numa_balancing: 0 in runs/first-touch-r1, ")
               and "; 1 in runs/first-touch-r4." in note for note in summary.notes)
    kernel_section = (tmp_path / "report.md").read_text().split("## Kernel settings")[1].split("##")[0]
    rows = [line for line in kernel_section.splitlines() if line.startswith("| false")]
    assert len(rows) == 2 and rows[1].endswith("| first-touch-r4 |")


@pytest.mark.parametrize("barrier", [True, False])
def test_late_epochs_and_a_run_without_the_barrier_are_noted(tmp_path: Path, barrier: bool) -> None:
    late = run("hot-cold", stays, repeat=REPEATS + 1, late=2, barrier=barrier)
    summary = write_results(experiment(tmp_path, lambda repeat: r1_in_dram(200 - repeat), **{"hot-cold-r4": late}),
                            with_plots=False)
    expected = ("runs/hot-cold-r4: the workload's accesses took longer than an epoch in 1 of 4 epochs" if barrier
                else "runs/hot-cold-r4: the workload ran ahead of the loop in 1 of 4 epochs")
    assert any(note.startswith(expected) for note in summary.notes)
    assert any("runs/hot-cold-r4 ran without the epoch barrier" in note for note in summary.notes) != barrier
    assert summary.policies["hot-cold"].metrics.late_epochs == 0  # the median of 0, 0, 0, 1
