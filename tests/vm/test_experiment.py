"""Experiments end to end in real guests: the score's promises, and failures that keep what was recorded."""

from __future__ import annotations

import json
import os
import signal
from dataclasses import asdict, replace
from pathlib import Path

import pytest

from policies.base import Policy
from policies.first_touch import FirstTouch
from testbed.cli import main
from testbed.experiment import load_experiment
from testbed.image import Image
from testbed.orchestrator import START_STATE, run_policy
from testbed.runner import run_experiment
from testbed.timeline import read_timeline
from testbed.values import Action, Observation
from testbed.vms import all_vms, booter
from testbed.workload import parse_workload

SHORT = {"name": "short", "description": "a few quick intervals", "epoch": "500ms",
         "regions": [{"name": "a", "size": "64MiB", "pattern": "uniform", "accesses": 20000}],
         "phases": [{"epochs": 8}]}


def test_smoke_experiment_scores_policies_against_the_bounds(guest_image: Image, tmp_path: Path) -> None:
    run_dir = run_experiment(load_experiment("smoke"), tmp_path / "smoke")
    summary = json.loads((run_dir / "summary.json").read_text())
    policies = summary["policies"]
    assert {name: row["status"] for name, row in policies.items()} == {
        "first-touch": "ok", "hot-cold": "ok", "oracle": "ok", "oracle-unbudgeted": "ok"}
    time = {name: row["modeled_time_s"] for name, row in policies.items()}
    assert time["hot-cold"] < time["first-touch"], time
    # The budgeted oracle is held to what the policies are; lifting the budget can only help.
    assert time["oracle"] <= min(time["first-touch"], time["hot-cold"]), time
    assert summary["lower_bound_s"] <= time["oracle-unbudgeted"] <= time["oracle"] * (1 + 1e-6), time
    assert policies["oracle"]["budget_bytes"] == summary["migration_budget"] == 64 * 2**20
    assert policies["hot-cold"]["gap_closed"] > 0
    assert summary["best_baseline"] == "hot-cold"
    assert policies["hot-cold"]["migrated_bytes"] > 0
    assert policies["first-touch"]["epochs"] == 20
    for name in ("manifest.json", "report.md", "catalog/systems/dram-cxl.yaml", "runs/hot-cold/timeline.jsonl"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "plots").glob("*.png"))
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["image"]["key"] == guest_image.key
    # The report comes back from the files alone.
    (run_dir / "summary.json").unlink()
    assert main(["report", str(run_dir), "--no-plots"]) == 0
    assert json.loads((run_dir / "summary.json").read_text())["policies"]["oracle"]["modeled_time_s"] == \
        pytest.approx(time["oracle"])


class Failing(Policy):
    """Does nothing for two intervals, then ``fail`` (raise, or take the VM down)."""

    name = "failing"

    def __init__(self, fail: str) -> None:
        self.fail = fail

    def decide(self, observation: Observation) -> list[Action]:
        if observation.epoch == 2:
            if self.fail == "raise":
                raise RuntimeError("the policy's own bug")
            vm = next(vm for vm in all_vms() if vm.name.endswith("-failing-r1"))
            os.kill(int(vm.record.handle), signal.SIGKILL)
        return []


@pytest.mark.parametrize(("fail", "reason", "recorded"), [
    ("raise", "RuntimeError: the policy's own bug", [0, 1]),  # the interval it failed in has no decision
    ("kill-vm", "the VM stopped", [0, 1, 2]),  # the decision returned; the next observation found no VM
])
def test_a_failing_run_keeps_its_record_and_leaves_no_vm(guest_image: Image, tmp_path: Path, fail: str,
                                                         reason: str, recorded: list[int]) -> None:
    experiment = load_experiment("smoke")
    experiment = replace(experiment, workload=parse_workload(SHORT, Path("short.yaml")))
    boot = booter(experiment.system, experiment.catalog)
    end = run_policy(experiment, Failing(fail), 1, tmp_path / fail, print, boot)
    assert end.status == "failed"
    assert reason in (end.reason or "")
    timeline = read_timeline(tmp_path / fail / "timeline.jsonl")
    assert [epoch.epoch for epoch in timeline.epochs] == recorded  # everything up to the failure is kept
    assert timeline.end.status == "failed"
    assert not [vm for vm in all_vms() if vm.name.endswith("-failing-r1")]
    # ... and the next policy of the experiment runs as usual.
    assert run_policy(experiment, FirstTouch(), 1, tmp_path / "next", print, boot).status == "ok"


def test_repeats_start_from_the_declared_state_and_see_the_same_ground_truth(guest_image: Image,
                                                                             tmp_path: Path) -> None:
    experiment = load_experiment("smoke")
    experiment = replace(experiment, workload=parse_workload(SHORT, Path("short.yaml")))
    boot = booter(experiment.system, experiment.catalog)
    timelines = []
    for repeat in (1, 2):
        assert run_policy(experiment, FirstTouch(), repeat, tmp_path / f"r{repeat}", print, boot).status == "ok"
        timelines.append(read_timeline(tmp_path / f"r{repeat}" / "timeline.jsonl"))
    first, second = timelines
    declared = {name: str(value).lower() for name, value in asdict(START_STATE).items()}
    assert first.start.kernel == second.start.kernel == declared  # read back from the guest, not assumed
    assert [(e.reads, e.writes) for e in first.epochs] == [(e.reads, e.writes) for e in second.epochs]
    # The barrier holds the workload at every epoch boundary, so both repeats see the same epochs (a slow
    # host makes epochs late, which is timing, not the claim tested here).
    assert first.start.barrier and second.start.barrier
    assert [e.epoch for e in first.epochs] == [e.epoch for e in second.epochs] == list(range(len(first.epochs)))
