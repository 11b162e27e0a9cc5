"""Summary, report and plots of synthetic run directories: formats, repeats, failures, bad input."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from synthetic_runs import (
    Residency,
    decision,
    epoch,
    layout,
    nodes,
    on,
    run_directory,
    split,
    system,
    timeline,
)
from test_render import check_golden

from testbed import report
from testbed.cli import main
from testbed.errors import ConfigError, ResultsUnwritable
from testbed.report import _years as report_years
from testbed.report import result_table, write_results
from testbed.rundir import RunDirError, read_manifest
from testbed.summary import solve_bounds
from testbed.timeline import RunStatus, Timeline
from testbed.units import MIB

GiB = 2**30
# dram-cxl; node 0 has room for the workload's 4MiB there (free memory is all headroom), node 1 for anything.
START = nodes((GiB, 64 * MIB, 4 * MIB), (2 * GiB, GiB, 2 * MIB))
EPOCHS = 4
THROUGHPUT = 1e11  # 2MiB move in 21us: cheap next to a hot chunk's accesses, so the oracle moves them
BUDGET = 2 * MIB  # per interval: the oracle's swap of r1 into DRAM (4MiB moved) takes two intervals


def run(policy: str, residency: Callable[[int], Residency], kind: str = "baseline", moved_at: int | None = None,
        moved: int = 2 * MIB, **options: Any) -> Timeline:
    """Two regions (two chunks, one chunk); region r1 turns hot in epoch 2."""
    records = [epoch(k, reads=[[100 * (k + 1), 5], [3000 if k >= 2 else 10]], writes=[[10, 0], [100]],
                     residency=residency(k), migrated=moved if k == moved_at else 0, phase=int(k >= 2),
                     decision=decision(actions=1, rejected=int(k == 1), late=k == 3) if kind == "llm" else None)
               for k in range(EPOCHS)]
    return timeline(layout(2, 1), records, START, policy=policy, kind=kind, **options)


def first_touch(k: int) -> Residency:
    return [[on(0), on(0)], [on(1)]]


def experiment(root: Path, **options: Any) -> Path:
    """first-touch; hot-cold, which swaps r1 into DRAM when it turns hot; llamas twice, the second run failing."""
    runs = {
        "first-touch": run("first-touch", first_touch),
        "hot-cold": run("hot-cold", lambda k: [[on(0), on(1)], [on(0)]] if k >= 2 else first_touch(k), moved_at=2,
                        moved=4 * MIB),
        "llamas-r1": run("llamas", lambda k: [[on(0), on(0)], [split(n0=256, n1=256)]], kind="llm", repeat=1,
                         moved_at=1, usage={"llm_calls": 3, "tokens": 1200}),
        "llamas-r2": run("llamas", lambda k: [[on(0), on(1)], [on(1)]], kind="llm", repeat=2, status=RunStatus.FAILED,
                         reason="the LLM server stopped", usage={"llm_calls": 5, "tokens": 2000}),
    }
    options.setdefault("throughput", THROUGHPUT)
    options.setdefault("migration_budget", BUDGET)
    return run_directory(root, "dram-cxl", runs, policies=["first-touch", "hot-cold", "llamas", "oracle"], **options)


def test_report_and_table_match_golden(tmp_path: Path) -> None:
    summary = write_results(experiment(tmp_path))
    check_golden("report-synthetic.md", (tmp_path / "report.md").read_text())
    check_golden("report-synthetic.table.txt", result_table(summary) + "\n")
    plots = sorted(path.name for path in (tmp_path / "plots").iterdir())
    assert plots == ["access-heat.png", "modeled-time.png", "residency-first-touch.png", "residency-hot-cold.png",
                     "residency-llamas.png", "residency-oracle.png"]
    assert all(path.read_bytes().startswith(b"\x89PNG") for path in (tmp_path / "plots").iterdir())


def test_summary_json_holds_every_policy_both_oracles_and_the_bound(tmp_path: Path) -> None:
    write_results(experiment(tmp_path), with_plots=False)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert (summary["format"], summary["experiment"], summary["system"]) == (2, "synthetic", "dram-cxl")
    assert (summary["epochs"], summary["reference_run"]) == (4, "runs/first-touch")
    assert (summary["migration_throughput"], summary["migration_budget"]) == (THROUGHPUT, BUDGET)
    assert list(summary["policies"]) == ["first-touch", "hot-cold", "llamas", "oracle", "oracle-unbudgeted"]
    oracle, unbudgeted = summary["policies"]["oracle"], summary["policies"]["oracle-unbudgeted"]
    assert (oracle["kind"], oracle["status"], oracle["ratio_to_oracle"]) == ("bound", "ok", 1.0)
    assert (oracle["budget_bytes"], unbudgeted["budget_bytes"]) == (BUDGET, None)
    assert oracle["capacity_bytes"] == {"0": 4 * MIB, "1": 2 * MIB + GiB - 64 * MIB}
    # the budget binds: the unbudgeted oracle swaps r1 in at once and is strictly better
    assert summary["lower_bound_s"] <= unbudgeted["modeled_time_s"] < oracle["modeled_time_s"]
    assert unbudgeted["ratio_to_oracle"] < 1.0
    for name in ("first-touch", "llamas"):
        policy = summary["policies"][name]
        assert policy["modeled_time_s"] >= oracle["modeled_time_s"]
        assert policy["ratio_to_oracle"] == pytest.approx(policy["modeled_time_s"] / oracle["modeled_time_s"])
        assert policy["ratio_to_lower_bound"] == pytest.approx(policy["modeled_time_s"] / summary["lower_bound_s"])
    hot_cold = summary["policies"]["hot-cold"]
    assert (hot_cold["migrated_bytes"], hot_cold["migrated_pages"]) == (4 * MIB, 1024)
    assert hot_cold["migration_time_s"] == pytest.approx(4 * MIB / THROUGHPUT)


def test_the_bounds_are_solved_again_only_when_the_reference_record_changes(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    solved: list[str | None] = []

    def counting(reference: Any, throughput: float, budget: int | None) -> Any:
        solved.append(reference.path if reference else None)
        return solve_bounds(reference, throughput, budget)

    monkeypatch.setattr(report, "solve_bounds", counting)
    run_dir = experiment(tmp_path)
    first = write_results(run_dir, with_plots=False)
    again = write_results(run_dir, with_plots=False)  # as the runner does after a later policy's run
    assert solved == ["runs/first-touch"]
    assert again.policies["oracle"] == first.policies["oracle"]
    record = run_dir / "runs/first-touch/timeline.jsonl"
    stat = record.stat()
    os.utime(record, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))  # rewritten: solved afresh
    write_results(run_dir, with_plots=False)
    assert solved == ["runs/first-touch", "runs/first-touch"]


def test_a_failed_repeat_is_kept_but_the_policy_counts_its_finished_runs(tmp_path: Path) -> None:
    summary = write_results(experiment(tmp_path), with_plots=False)
    llamas = summary.policies["llamas"]
    assert (llamas.kind, llamas.status, llamas.partial) == ("llm", "failed", False)
    assert llamas.reason == "runs/llamas-r2: the LLM server stopped"
    finished, failed = llamas.repeats
    assert (finished.status, failed.status, failed.metrics.epochs) == ("ok", "failed", EPOCHS)
    assert llamas.metrics.modeled_time_s == finished.metrics.modeled_time_s
    assert llamas.usage == {"llm_calls": 3, "tokens": 1200}
    assert (llamas.metrics.decisions, llamas.metrics.actions, llamas.metrics.rejected,
            llamas.metrics.late_decisions) == (4, 4, 1, 1)
    assert any(note.startswith("runs/llamas-r2 failed: the LLM server stopped") for note in summary.notes)


def test_repeats_give_the_median_its_interval_the_spread_and_each_run(tmp_path: Path) -> None:
    placements = {1: first_touch, 2: lambda k: [[on(0), on(0)], [on(0)]], 3: lambda k: [[on(0), on(1)], [on(0)]]}
    runs = {
        f"hot-cold-r{repeat}": run("hot-cold", residency, repeat=repeat)
        for repeat, residency in placements.items()
    }
    summary = write_results(run_directory(tmp_path, "dram-cxl", runs), with_plots=False)
    policy = summary.policies["hot-cold"]
    times = [result.metrics.modeled_time_s or 0.0 for result in policy.repeats]
    assert [result.run for result in policy.repeats] == ["runs/hot-cold-r1", "runs/hot-cold-r2", "runs/hot-cold-r3"]
    assert len(set(times)) == 3
    assert policy.metrics.modeled_time_s == sorted(times)[1] != pytest.approx(sum(times) / 3)  # the median
    assert policy.spread["modeled_time_s"] == (min(times), max(times))
    low, high = policy.interval_95 or (0.0, 0.0)
    assert min(times) <= low <= sorted(times)[1] <= high <= max(times) and low < high
    written = json.loads((tmp_path / "summary.json").read_text())["policies"]["hot-cold"]
    assert written["spread"]["modeled_time_s"] == [min(times), max(times)]
    assert (written["runs"], written["interval_95"]) == (3, [low, high])


def test_a_run_cut_short_is_summarised_as_failed_with_what_it_measured(tmp_path: Path) -> None:
    runs = {"first-touch": run("first-touch", first_touch)}
    root = run_directory(tmp_path, "dram-cxl", runs, cut_short=["first-touch"])
    record = root / "runs" / "first-touch" / "timeline.jsonl"
    lines = record.read_text().splitlines()
    record.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    summary = write_results(root, with_plots=False)
    policy = summary.policies["first-touch"]
    assert (policy.status, policy.partial, policy.metrics.epochs) == ("failed", True, EPOCHS - 1)
    assert policy.reason == "runs/first-touch: the run stopped without an end record"
    assert policy.metrics.modeled_time_s is not None
    assert summary.policies["oracle"].status == "ok"
    assert "0 of 1 (partial)" in result_table(summary)


def test_an_unreadable_timeline_fails_its_run_and_the_others_are_kept(tmp_path: Path) -> None:
    root = experiment(tmp_path)
    record = root / "runs" / "hot-cold" / "timeline.jsonl"
    lines = record.read_text().splitlines()
    record.write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    summary = write_results(root, with_plots=False)
    hot_cold = summary.policies["hot-cold"]
    assert hot_cold.status == "failed"
    assert hot_cold.reason == "runs/hot-cold: runs/hot-cold/timeline.jsonl:2: not a JSON record"
    assert hot_cold.kind is None and hot_cold.metrics.modeled_time_s is None
    assert summary.policies["first-touch"].status == "ok"


def test_a_record_that_contradicts_itself_names_the_epoch(tmp_path: Path) -> None:
    bad = run("first-touch", lambda k: [[on(0), on(7)], [on(1)]])
    summary = write_results(run_directory(tmp_path, "dram-cxl", {"first-touch": bad}), with_plots=False)
    reason = summary.policies["first-touch"].reason or ""
    assert "runs/first-touch/timeline.jsonl: epoch 0: region 'r0' has 512 pages on node 7" in reason
    assert summary.policies["oracle"].status == "failed"
    assert summary.lower_bound_s is None


def test_a_listed_policy_without_a_run_is_reported(tmp_path: Path) -> None:
    runs = {"first-touch": run("first-touch", first_touch)}
    summary = write_results(run_directory(tmp_path, "dram-cxl", runs, policies=["first-touch", "damos", "oracle"]),
                        with_plots=False)
    assert summary.policies["damos"].status == "failed"
    assert summary.policies["damos"].reason == "no run directory runs/damos"
    assert "damos: no run directory (the experiment lists it)." in summary.notes


def test_a_run_directory_without_runs_still_gets_a_summary(tmp_path: Path) -> None:
    summary = write_results(run_directory(tmp_path, "dram-cxl", {}, policies=["first-touch"]))
    assert summary.policies["oracle"].reason == "no run has a readable record to take the ground truth from"
    assert (tmp_path / "report.md").exists()


def test_a_run_that_starts_elsewhere_can_beat_the_oracle_and_is_explained(tmp_path: Path) -> None:
    runs = {"first-touch": run("first-touch", first_touch),
            "interleave": run("interleave", lambda k: [[on(0), on(1)], [on(0)]])}  # r1 on DRAM from the start
    summary = write_results(run_directory(tmp_path, "dram-cxl", runs), with_plots=False)
    assert (summary.policies["interleave"].metrics.ratio_to_oracle or 1.0) < 1.0
    assert ("runs/interleave scored below the oracle: its first epoch's placement differs from the oracle's start "
            "by 4MiB.") in summary.notes


def test_a_run_that_saw_other_accesses_is_flagged(tmp_path: Path) -> None:
    other = run("hot-cold", first_touch)
    other = Timeline(other.start, (epoch(0, reads=[[1, 1], [1]]), *other.epochs[1:]), other.end)
    runs = {"first-touch": run("first-touch", first_touch), "hot-cold": other}
    summary = write_results(run_directory(tmp_path, "dram-cxl", runs), with_plots=False)
    assert ("runs/hot-cold: its ground truth differs from runs/first-touch's in 1 epochs, so its score does not "
            "compare with the others.") in summary.notes


def test_throughput_may_be_a_string_or_measured(tmp_path: Path) -> None:
    root = experiment(tmp_path, throughput="1GB/s")
    assert read_manifest(root).migration_throughput == 1e9
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["experiment"]["migration"] = {"throughput": None, "measured": 6.3e7, "chosen": "measured in the guest"}
    (root / "manifest.json").write_text(json.dumps(manifest))
    read = read_manifest(root)
    assert read.migration_throughput == 6.3e7
    assert read.migration_notes == (("measured", "63000000.0"), ("chosen", "measured in the guest"))


@pytest.mark.parametrize(("migration", "problem"), [
    (None, "experiment.migration.throughput: missing"),
    ({"throughput": None}, "no 'measured' value"),
    ({"throughput": "fast"}, "expected a bandwidth"),
    ({"throughput": 0}, "must be above zero"),
])
def test_a_manifest_without_a_usable_throughput_is_an_error(tmp_path: Path, migration: object, problem: str) -> None:
    root = experiment(tmp_path)
    manifest = json.loads((root / "manifest.json").read_text())
    manifest["experiment"]["migration"] = migration
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ConfigError, match=problem) as error:
        write_results(root)
    assert str(root / "manifest.json") in str(error.value)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(RunDirError, match=re.escape(f"{tmp_path / 'manifest.json'}: missing")):
        write_results(tmp_path)
    root = experiment(tmp_path)
    (root / "catalog" / "systems" / "dram-cxl.yaml").unlink()
    with pytest.raises(RunDirError, match=re.escape("catalog/systems/dram-cxl.yaml: missing")):
        write_results(root)


def test_llamas_report_rerenders_from_the_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = experiment(tmp_path)
    assert main(["report", str(root), "--no-plots"]) == 0
    out = capsys.readouterr().out
    assert "oracle (upper bound)" in out and "lower bound (all fast)" in out
    assert (root / "summary.json").exists() and (root / "report.md").exists()
    assert main(["report", str(tmp_path / "nowhere")]) == 2


def test_the_wear_a_policy_puts_on_persistent_memory_is_reported_beside_its_time(tmp_path: Path) -> None:
    runs = {"first-touch": run("first-touch", first_touch),  # r1, 100 writes an epoch, stays on the PMem node
            "hot-cold": run("hot-cold", lambda k: [[on(0), on(1)], [on(0)]] if k >= 2 else first_touch(k),
                            moved_at=2, moved=4 * MIB)}
    summary = write_results(run_directory(tmp_path, "dram-pmem", runs, throughput=THROUGHPUT), with_plots=False)
    first, hot_cold = summary.policies["first-touch"].metrics, summary.policies["hot-cold"].metrics
    # r0's chunk 0 (10 writes an epoch) stays in DRAM; hot-cold moves r1 to DRAM and r0's second chunk (no
    # writes) to the PMem node in epoch 2
    assert (first.worn_bytes, hot_cold.worn_bytes) == (4 * 100 * 64, 2 * 100 * 64)
    pmem = system("dram-pmem").nodes[1]
    assert pmem.device.endurance_writes == 2.3e6
    assert first.wear_life_years == pytest.approx(pmem.size * 2.3e6 / (400 * 64) * EPOCHS / (365.25 * 86400))
    assert hot_cold.wear_life_years == pytest.approx(2 * (first.wear_life_years or 0))
    text = (tmp_path / "report.md").read_text()
    assert "## Wear" in text and "| first-touch | 25KiB | 12,228 years |" in text
    plain = write_results(experiment(tmp_path / "cxl"), with_plots=False)  # no device wears out there
    assert plain.policies["first-touch"].metrics.worn_bytes is None
    assert "## Wear" not in (tmp_path / "cxl" / "report.md").read_text()


def test_a_region_held_where_its_data_may_not_live_is_reported_in_byte_seconds(tmp_path: Path) -> None:
    runs = {"first-touch": run("first-touch", first_touch),  # r1 stays on the persistent node
            "hot-cold": run("hot-cold", lambda k: [[on(0), on(1)], [on(0)]] if k >= 2 else first_touch(k),
                            moved_at=2, moved=4 * MIB)}
    journal = {"name": "journal", "epochs": EPOCHS, "regions": [{"name": "r0"}, {"name": "r1", "holds": "durable"}]}
    summary = write_results(run_directory(tmp_path, "dram-pmem", runs, throughput=THROUGHPUT, workload=journal),
                            with_plots=False)
    assert system("dram-pmem").nodes[1].device.persistent and not system("dram-pmem").nodes[0].device.persistent
    # hot-cold brings r1 (one 2 MiB chunk) into DRAM, which loses it without power, for epochs 2 and 3
    assert summary.policies["first-touch"].metrics.violation_byte_s == 0
    assert summary.policies["hot-cold"].metrics.violation_byte_s == 2 * 2 * MIB * 1.0
    text = (tmp_path / "report.md").read_text()
    assert "## Constraints" in text and "| first-touch | 0 |" in text and "| hot-cold | 4 MiB·s |" in text
    assert summary.policies["oracle"].metrics.violation_byte_s is None  # a bound, not a run
    plain = write_results(experiment(tmp_path / "cxl"), with_plots=False)  # no region holds anything
    assert plain.policies["first-touch"].metrics.violation_byte_s is None
    assert "## Constraints" not in (tmp_path / "cxl" / "report.md").read_text()


@pytest.mark.parametrize(("years", "text"), [(12228.4, "12,228 years"), (1.434, "1.43 years"),
                                             (88 / 365.25, "88 days"), (0.5 / 365.25, "12 hours"),
                                             (None, "nothing written")])
def test_a_wear_life_is_written_in_the_unit_that_reads(years: float | None, text: str) -> None:
    assert report_years(years) == text


def test_a_full_disk_is_one_error_naming_the_file_and_the_records_stay(tmp_path: Path) -> None:
    run_dir = experiment(tmp_path)
    records = {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file()}
    (run_dir / "summary.json").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(ResultsUnwritable, match=r"cannot write .*summary.json: No space left on device"):
        write_results(run_dir, with_plots=False)
    assert {path: path.read_bytes() for path in records} == records
