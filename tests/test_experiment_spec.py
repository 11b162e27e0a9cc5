from pathlib import Path

import pytest

from testbed.errors import ConfigError, UserError
from testbed.experiment import DEFAULT_MIGRATION_THROUGHPUT, EXPERIMENTS_DIR, load_experiment

SPEC = """\
name: tiny
description: A tiny experiment.
system: dram-cxl
workload: hot-cold
policies: [first-touch, hot-cold, oracle]
"""


def write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "tiny.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("name", sorted(path.stem for path in EXPERIMENTS_DIR.glob("*.yaml")))
def test_every_shipped_experiment_loads(name: str) -> None:
    experiment = load_experiment(name)
    assert experiment.workload.footprint <= sum(node.size for node in experiment.system.nodes)
    assert experiment.policies


def test_defaults_and_overrides(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path, SPEC))
    assert (experiment.interval_s, experiment.repeats, experiment.migration_budget) == (1.0, 1, 64 * 2**20)
    assert experiment.migration_throughput == DEFAULT_MIGRATION_THROUGHPUT
    assert experiment.decision_deadline_s == pytest.approx(0.5)
    changed = load_experiment(write(tmp_path, SPEC + "interval: 500ms\nseed: 9\nmigration_throughput: measured\n"
                                    "damon: {sample: 10ms, aggregate: 200ms}\n"))
    assert (changed.interval_s, changed.workload.seed, changed.migration_throughput) == (0.5, 9, None)
    assert (changed.damon.sample_us, changed.damon.aggr_us) == (10_000, 200_000)


@pytest.mark.parametrize(("extra", "field", "problem"), [
    ("speed: 3\n", "speed", "unknown field"),
    ("interval: 10ms\n", "interval", "at least 100ms"),
    ("migration_budget: lots\n", "migration_budget", "with a unit"),
    ("damon: {sample: 100ms, aggregate: 10ms}\n", "damon.aggregate", "at least the sample interval"),
])
def test_bad_specs_name_the_field(tmp_path: Path, extra: str, field: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=rf"tiny.yaml: {field}: .*{problem}"):
        load_experiment(write(tmp_path, SPEC + extra))


def test_unknown_and_repeated_policies_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"policies: unknown policy 'fastest' \(known: "):
        load_experiment(write(tmp_path, SPEC.replace("hot-cold,", "fastest,")))
    with pytest.raises(ConfigError, match="lists a policy twice"):
        load_experiment(write(tmp_path, SPEC.replace("oracle]", "oracle, hot-cold]")))


def test_a_workload_too_big_for_the_machine_is_refused(tmp_path: Path) -> None:
    inline = SPEC.replace("workload: hot-cold", "workload:\n  name: big\n  description: too big\n  regions:\n"
                          "    - {name: a, size: 4GiB, pattern: uniform, accesses: 1}\n  phases: [{epochs: 1}]")
    with pytest.raises(ConfigError, match=r"workload.regions\[0\].size"):
        load_experiment(write(tmp_path, inline))


def test_each_llm_policy_brings_its_text_blind_twin(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path, SPEC.replace("hot-cold,", "llamas, hot-cold, llamas-direct,")))
    assert experiment.policies == ("first-touch", "llamas", "llamas-blind", "hot-cold", "llamas-direct",
                                   "llamas-direct-blind", "oracle")
    assert experiment.twins == {"llamas": "llamas-blind", "llamas-direct": "llamas-direct-blind"}
    listed = load_experiment(write(tmp_path, SPEC.replace("hot-cold,", "llamas-blind, llamas,")))
    assert listed.policies == ("first-touch", "llamas-blind", "llamas", "oracle")  # listed once, where listed
    assert experiment.with_policies(("llamas",)).policies == ("llamas", "llamas-blind")


def test_repeats_from_the_spec_or_the_command_line(tmp_path: Path) -> None:
    experiment = load_experiment(write(tmp_path, SPEC + "repeats: 5\n"))
    assert experiment.repeats == 5 and experiment.with_repeats(2).repeats == 2
    with pytest.raises(UserError, match="--repeats: must be at least 1"):
        experiment.with_repeats(0)
    with pytest.raises(UserError, match="unknown policy 'fastest'"):
        experiment.with_policies(("fastest",))
