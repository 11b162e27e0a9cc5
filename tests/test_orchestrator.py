"""The whole loop of one policy run against a fake VM: the real workload, a fake guest, the real timeline."""

from __future__ import annotations

import itertools
import subprocess
import time
from dataclasses import replace
from pathlib import Path

import pytest
import yaml
from fake_guest import FakeGuest, FakeNode, FakeVm
from fake_openai import FakeOpenAi

from policies.base import Policy
from policies.frontend import ProfileCache
from policies.llamas_direct import DirectSettings, LlamasDirectPolicy
from testbed.errors import ResultsUnwritable
from testbed.experiment import Experiment, load_experiment
from testbed.memtouch import RELEASE_SIGNAL, build_memtouch, memtouch_input, parse_output
from testbed.model import PAGE_SIZE
from testbed.orchestrator import START_RESERVE, START_STATE, run_policy
from testbed.timeline import RunStatus, read_timeline
from testbed.units import MIB
from testbed.values import Action, BufferRange, Migrate, Observation, PolicyContext, Setup, TieringSettings

EPOCHS = 4


@pytest.fixture(scope="module")
def memtouch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_memtouch(tmp_path_factory.mktemp("memtouch"))


@pytest.fixture
def experiment(tmp_path: Path) -> Experiment:
    spec = {"name": "loop", "description": "the loop on a fake guest", "system": "dram-cxl",
            "policies": ["first-touch"], "migration_budget": "8MiB",
            "workload": {"name": "two", "description": "two buffers", "seed": 3, "epoch": "100ms",
                         "regions": [{"name": "hot", "size": "4MiB", "pattern": "uniform", "accesses": 2000,
                                      "write_fraction": 0.5},
                                     {"name": "cold", "size": "8MiB", "pattern": "uniform", "accesses": 100}],
                         "phases": [{"epochs": EPOCHS}]}}
    path = tmp_path / "loop.yaml"
    path.write_text(yaml.safe_dump(spec))
    return load_experiment(str(path))


def fake_vm(memtouch: Path) -> FakeVm:
    return FakeVm(FakeGuest(memtouch, (FakeNode(0, 1024 * MIB, 900 * MIB, (0, 1)), FakeNode(1, 2048 * MIB,
                                                                                          2000 * MIB))))


class Scripted(Policy):
    """In the first interval: the cold buffer to node 1, one move to a node that does not exist, and one
    beyond the interval's budget."""

    name = "scripted"

    def setup(self, context: PolicyContext) -> Setup:
        self.budget = context.migration_budget
        return Setup(tiering=TieringSettings(demotion_enabled=True))

    def decide(self, observation: Observation) -> list[Action]:
        if observation.epoch != 0:
            return []
        hot, cold = observation.regions
        return [Migrate(cold.start, cold.end, 1, "cold out"), Migrate(hot.start, hot.end, 7, "nowhere"),
                Migrate(hot.start, hot.end, 1, "over budget")]


def test_the_loop_records_ground_truth_residency_and_decisions(memtouch: Path, experiment: Experiment,
                                                               tmp_path: Path) -> None:
    vm = fake_vm(memtouch)
    names: list[str] = []

    def boot(name: str) -> FakeVm:
        names.append(name)
        return vm

    end = run_policy(experiment, Scripted(), 1, tmp_path / "run", lambda line: None, boot)
    assert (end.status, end.epochs) == (RunStatus.OK, EPOCHS)
    assert names == ["loop-scripted-r1"] and vm.downs == 1
    # The declared start state first, then what the policy's setup changes, then a read-back.
    tiering = [call for call in vm.guest_daemon.calls if call.startswith("tiering")]
    assert tiering == [f"tiering {START_STATE}", f"tiering {TieringSettings(demotion_enabled=True)}", "tiering None"]
    assert "run cpus=[0, 1]" in vm.guest_daemon.calls  # the workload runs on node 0's CPUs

    timeline = read_timeline(tmp_path / "run" / "timeline.jsonl")
    # Ground truth is what memtouch reports for the same input, run on its own.
    alone = subprocess.run([str(memtouch), "-"], input=memtouch_input(experiment.workload), capture_output=True,
                           text=True, check=True)
    truth = parse_output(alone.stdout.splitlines())
    assert [record.reads for record in timeline.epochs] == [
        tuple(tuple(int(v) for v in counts) for counts in epoch.reads) for epoch in truth.epochs]
    assert [region.name for region in timeline.start.regions] == ["hot", "cold"]
    assert timeline.start.nodes[0].workload_bytes == 12 * MIB
    # Every node starts with its total less the start reserve free, the daemon holding the rest: node 1 had
    # 2000 MiB of 2048 free, so 16 MiB were held; node 0 had 900 of 1024, none, and the run says so.
    assert [node.held_bytes for node in timeline.start.nodes] == [0, 2000 * MIB - (2048 * MIB - START_RESERVE)]
    assert timeline.start.nodes[1].free_bytes == 2048 * MIB - START_RESERVE
    # Free memory as settled (node 0: its 900 MiB, nothing held) and after the first touch (12 MiB less there).
    assert [node.settled_free_bytes for node in timeline.start.nodes] == [900 * MIB, 2048 * MIB - START_RESERVE]
    assert [node.touched_free_bytes for node in timeline.start.nodes] == [888 * MIB, 2048 * MIB - START_RESERVE]
    assert timeline.start.notes == ("node 0 started 28 MiB short of its start free memory (928 MiB)",)
    assert timeline.start.kernel == {"numa_balancing": "0", "demotion_enabled": "true",
                                     "transparent_hugepage": "never", "zone_reclaim_mode": "0"}
    # One release before epoch 0 and after each epoch but the last, then the end of the lingering workload.
    kills = [call for call in vm.guest_daemon.calls if call.startswith("kill")]
    assert kills == [f"kill {RELEASE_SIGNAL}"] * EPOCHS + ["kill TERM"]
    assert timeline.start.barrier and all(record.wait_s > 0 for record in timeline.epochs)
    # Each interval's DAMON view is asked for over the epoch on memtouch's clock, not as of the asking.
    windows = [(since, until) for since, until in vm.guest_daemon.damon_windows if until is not None]
    asked = [until for _, until in windows]
    assert len(asked) == EPOCHS
    assert all(later - earlier >= experiment.interval_s * 1e6 for earlier, later in itertools.pairwise(asked))
    assert asked[-1] <= time.monotonic() * 1e6  # memtouch runs on the host here: the same clock
    assert all(since is not None and until - since >= experiment.interval_s * 1e6 for since, until in windows)
    assert all(since is not None and since >= ended
               for (_, ended), (since, _) in itertools.pairwise(windows))  # each starts after the last ended

    first, second = timeline.epochs[0], timeline.epochs[1]
    assert first.decision is not None
    [applied] = first.decision.actions
    assert (applied.action.why, applied.outcome.moved_bytes) == ("cold out", 8 * MIB)
    reasons = {rejected.action.why: rejected.reason for rejected in first.decision.rejected}
    assert reasons["nowhere"].startswith("node 7 is not a node with memory")
    assert reasons["over budget"].startswith("over budget")
    # The move made after interval 0 shows in interval 1: the kernel's count and where the pages are.
    assert second.migrated_bytes == 8 * MIB
    hot_chunks, cold_chunks = first.residency
    assert all(set(chunk) == {0} for chunk in (*hot_chunks, *cold_chunks))
    hot_chunks, cold_chunks = second.residency
    assert all(set(chunk) == {0} for chunk in hot_chunks) and all(set(chunk) == {1} for chunk in cold_chunks)


class Raising(Policy):
    name = "raising"

    def decide(self, observation: Observation) -> list[Action]:
        if observation.epoch == 1:
            raise RuntimeError("the policy's own bug")
        return []


class KillingTheVm(Policy):
    name = "killer"

    def __init__(self, vm: FakeVm) -> None:
        self.vm = vm

    def decide(self, observation: Observation) -> list[Action]:
        if observation.epoch == 1:
            self.vm.guest_daemon.alive = False
        return []


class KillingTheWorkload(Policy):
    """SIGKILLs the workload in the second interval, as the guest kernel's OOM killer would (counting it, if
    ``oom``) or as anyone else might (not counting it)."""

    name = "oom"

    def __init__(self, vm: FakeVm, oom: bool) -> None:
        self.vm = vm
        self.oom = oom

    def decide(self, observation: Observation) -> list[Action]:
        if observation.epoch == 1:
            self.vm.guest_daemon.oom_kills += self.oom
            self.vm.guest_daemon.runs[-1].kill("KILL")
        return []


@pytest.mark.parametrize(("kind", "reason", "recorded"), [
    ("raise", "RuntimeError: the policy's own bug", [0]),
    ("kill-vm", "the VM stopped", [0, 1]),
    ("oom", "the workload ended before reporting all its intervals: killed by the guest kernel's OOM killer "
            "(SIGKILL; oom_kill in /proc/vmstat rose by 1)", [0, 1]),
    ("kill", "the workload ended before reporting all its intervals: signal SIGKILL", [0, 1]),
])
def test_a_failing_run_keeps_its_record_and_takes_its_vm_down(memtouch: Path, experiment: Experiment,
                                                               tmp_path: Path, kind: str, reason: str,
                                                               recorded: list[int]) -> None:
    vm = fake_vm(memtouch)
    policies: dict[str, Policy] = {"raise": Raising(), "kill-vm": KillingTheVm(vm),
                                   "oom": KillingTheWorkload(vm, oom=True), "kill": KillingTheWorkload(vm, oom=False)}
    policy = policies[kind]
    end = run_policy(experiment, policy, 1, tmp_path / kind, lambda line: None, lambda name: vm)
    assert end.status == RunStatus.FAILED
    assert reason in (end.reason or "")
    timeline = read_timeline(tmp_path / kind / "timeline.jsonl")
    assert [epoch.epoch for epoch in timeline.epochs] == recorded
    assert timeline.end.status == RunStatus.FAILED
    assert vm.downs == 1
    assert all(run.exit is not None for run in vm.guest_daemon.runs)  # the workload did not outlive the run


def test_a_full_disk_stops_the_experiment_with_one_error_and_takes_the_vm_down(
        memtouch: Path, experiment: Experiment, tmp_path: Path) -> None:
    vm = fake_vm(memtouch)
    out = tmp_path / "full"
    out.mkdir()
    (out / "timeline.jsonl").symlink_to("/dev/full")  # every write: ENOSPC
    with pytest.raises(ResultsUnwritable, match=r"cannot write .*timeline.jsonl: No space left on device; the "
                                                r"experiment stops here"):
        run_policy(experiment, Scripted(), 1, out, lambda line: None, lambda name: vm)
    assert vm.downs == 1
    assert all(run.exit is not None for run in vm.guest_daemon.runs)


# ---- what a policy is told ----


class Recording(Policy):
    """Keeps the context it was set up with; decides nothing."""

    name = "recording"

    def __init__(self, text_blind: bool = False) -> None:
        self.text_blind = text_blind
        self.context: PolicyContext | None = None
        self.buffers: list[tuple[BufferRange, ...]] = []

    def setup(self, context: PolicyContext) -> Setup:
        self.context = context
        return Setup()

    def decide(self, observation: Observation) -> list[Action]:
        self.buffers.append(observation.buffers)
        return []


def with_hints(experiment: Experiment, hints: bool) -> Experiment:
    regions = tuple(replace(region, description=f"what the program does with {region.name}")
                    for region in experiment.workload.regions)
    return replace(experiment, hints=hints, workload=replace(experiment.workload, regions=regions))


@pytest.mark.parametrize("hints", [False, True])
def test_a_policy_is_told_what_an_os_could_know_and_hints_only_when_enabled(
        memtouch: Path, experiment: Experiment, tmp_path: Path, hints: bool) -> None:
    experiment = with_hints(experiment, hints)
    policy = Recording()
    assert run_policy(experiment, policy, 1, tmp_path, lambda line: None, lambda name: fake_vm(memtouch)).status == "ok"
    assert policy.context is not None
    told = repr(policy.context)
    assert experiment.description not in told and experiment.workload.description not in told
    assert policy.context.system_description == experiment.system.description
    assert [hint.name for hint in policy.context.hints] == (["hot", "cold"] if hints else [])
    # Where the hinted buffers lie, and where their pages are, in every observation (the program's annotation).
    assert policy.buffers and all(buffers == policy.buffers[0] for buffers in policy.buffers)
    buffers = policy.buffers[0]
    assert [b.name for b in buffers] == (["hot", "cold"] if hints else [])
    if hints:
        assert all(sum(b.nodes.values()) == pytest.approx(b.end - b.start, abs=PAGE_SIZE) for b in buffers)


def test_a_text_blind_twin_gets_no_device_or_system_text(memtouch: Path, experiment: Experiment,
                                                         tmp_path: Path) -> None:
    policy = Recording(text_blind=True)
    run_policy(with_hints(experiment, True), policy, 1, tmp_path, lambda line: None, lambda name: fake_vm(memtouch))
    assert policy.context is not None
    assert (policy.context.system_description, policy.context.device_descriptions) == ("", {})
    assert [hint.name for hint in policy.context.hints] == ["hot", "cold"]  # the program's notes are not the text


def test_no_prompt_of_an_llm_policy_holds_the_experiment_or_workload_narrative(
        memtouch: Path, experiment: Experiment, tmp_path: Path) -> None:
    experiment = with_hints(experiment, True)
    with FakeOpenAi("{}") as fake:  # every answer unusable: the backend decides, the questions are still asked
        policy = LlamasDirectPolicy(lambda run_dir: fake.client(), ProfileCache(tmp_path / "cache"),
                                    direct=DirectSettings(deadline_s=0.05))
        run_policy(experiment, policy, 1, tmp_path / "run", lambda line: None, lambda name: fake_vm(memtouch))
        prompts = [message["content"] for request in fake.requests for message in request["messages"]]
    assert len(prompts) >= 2 * 3  # the devices, the hints and at least one epoch
    assert any("what the program does with hot" in prompt for prompt in prompts)
    assert any(experiment.system.nodes[1].device.description.split(".")[0] in prompt for prompt in prompts)
    assert not any(experiment.description in prompt or experiment.workload.description in prompt
                   for prompt in prompts)
