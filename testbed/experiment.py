"""Experiment specs (``experiments/*.yaml``): a machine, a workload, the policies to compare.

Format::

    name: hot-cold-cxl
    description: What question the experiment answers.
    system: dram-cxl              # a catalog name or a path (relative to this file)
    workload: hot-cold            # a name in experiments/workloads/, a path, or the workload itself
    policies: [first-touch, hot-cold, llamas, oracle]   # each LLM policy's text-blind twin is added
    interval: 1s                  # optional (the workload's epoch): one observation and decision each
    repeats: 5                    # optional (1): runs of each policy, each from the same saved VM state
    seed: 7                       # optional (the workload's): the workload's random seed
    migration_budget: 64MiB       # optional (64MiB): bytes a policy may move per interval
    decision_deadline: 500ms      # optional (half the interval): later decisions are skipped
    migration_throughput: 2GB/s   # optional (2GB/s): what migrating costs in the score; or "measured"
    hints: false                  # optional (false): give every policy the program's notes on its buffers
    damon:                        # optional: DAMON monitoring of the workload
      sample: 5ms
      aggregate: 100ms
      min_regions: 10
      max_regions: 1000

The migration throughput is a model parameter: the score prices the accesses
at the devices' latencies, so it prices a migration at a real machine's page
migration rate too. The throughput migration reaches in the emulated guest
(~60 MiB/s under TCG) is recorded beside it; ``measured`` uses that instead.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

from policies.registry import TWINS, known_policies, with_twins
from testbed.catalog import Catalog, default_catalog
from testbed.errors import UserError
from testbed.model import System
from testbed.units import parse_bandwidth, parse_latency, parse_size
from testbed.values import Monitoring
from testbed.workload import Workload, resolve_workload
from testbed.yamlfields import Fields, boolean, load_yaml, named_file, whole

EXPERIMENTS_DIR = Path(__file__).resolve().parent.parent / "experiments"
DEFAULT_BUDGET = 64 * 2**20
DEFAULT_MIGRATION_THROUGHPUT = 2e9  # bytes/s: Linux page migration on a real server, a few GB/s
MEASURED = "measured"


@dataclass(frozen=True)
class Experiment:
    name: str
    description: str
    system: System
    workload: Workload
    policies: tuple[str, ...]  # as the spec lists them, each LLM policy followed by its twin
    repeats: int
    migration_budget: int
    decision_deadline_s: float
    migration_throughput: float | None  # bytes/s; None: measured in the guest
    hints: bool
    damon: Monitoring
    source: Path
    catalog: Catalog  # the system and its devices were read from it

    @property
    def interval_s(self) -> float:
        return self.workload.epoch_seconds

    @property
    def twins(self) -> dict[str, str]:
        """LLM policy -> its text-blind twin, for the LLM policies run."""
        return {name: TWINS[name] for name in self.policies if name in TWINS}

    def with_policies(self, policies: tuple[str, ...]) -> Experiment:
        """The same experiment with these policies instead (checked as a spec's are; twins added)."""
        return replace(self, policies=with_twins(_checked_policies(policies, UserError)))

    def with_repeats(self, repeats: int) -> Experiment:
        if repeats < 1:
            raise UserError(f"--repeats: must be at least 1, got {repeats}")
        return replace(self, repeats=repeats)


def load_experiment(name_or_path: str, catalog: Catalog | None = None) -> Experiment:
    path = named_file(name_or_path, EXPERIMENTS_DIR, "experiment")
    fields = Fields(load_yaml(path), path)
    catalog = catalog or default_catalog()
    system_ref = fields.text("system")
    system = catalog.load_system(_relative(system_ref, path))
    workload = resolve_workload(fields, "workload", memory_limit=_usable_memory(system))
    workload = _with_overrides(fields, workload)
    experiment = Experiment(
        name=fields.text("name"),
        description=fields.text("description"),
        system=system,
        workload=workload,
        policies=_policies(fields),
        repeats=fields.get("repeats", whole(1), 1),
        migration_budget=fields.get("migration_budget", parse_size, DEFAULT_BUDGET),
        decision_deadline_s=fields.get("decision_deadline", parse_latency, workload.epoch_us * 500) / 1e9,
        migration_throughput=_throughput(fields),
        hints=fields.get("hints", boolean, False),
        damon=_damon(fields) if fields.has("damon") else Monitoring(),
        source=path,
        catalog=catalog,
    )
    fields.raw("damon", None)
    fields.done()
    return experiment


def _relative(reference: str, spec: Path) -> str:
    """A system given as a path is relative to the experiment file; a name is looked up in the catalog."""
    if reference.endswith((".yaml", ".yml")):
        return str(spec.parent / reference)
    return reference


def _usable_memory(system: System) -> int:
    """The workload must fit in the machine's memory, with room for the guest's own needs."""
    return sum(node.size for node in system.nodes) - 256 * 2**20


def _with_overrides(fields: Fields, workload: Workload) -> Workload:
    if fields.has("interval"):
        interval_us = round(fields.get("interval", parse_latency) / 1e3)
        if interval_us < 100_000:
            raise fields.error("interval", "must be at least 100ms (each interval observes and migrates)")
        workload = replace(workload, epoch_us=interval_us, slices=max(1, min(workload.slices, interval_us // 1000)))
    if fields.has("seed"):
        workload = replace(workload, seed=fields.get("seed", whole(0)))
    return workload


def _policies(fields: Fields) -> tuple[str, ...]:
    names = tuple(str(value) for _, value, _ in fields.items("policies"))
    return with_twins(_checked_policies(names, lambda message: fields.error("policies", message)))


def _checked_policies(names: tuple[str, ...], error: Callable[[str], Exception]) -> tuple[str, ...]:
    if not names:
        raise error("needs at least one policy")
    if len(set(names)) != len(names):
        raise error(f"lists a policy twice: {list(names)}")
    unknown = [name for name in names if name not in known_policies()]
    if unknown:
        raise error(f"unknown policy {unknown[0]!r} (known: {', '.join(known_policies())})")
    return names


def _throughput(fields: Fields) -> float | None:
    value = fields.raw("migration_throughput", None)
    if value is None:
        return DEFAULT_MIGRATION_THROUGHPUT
    if value == MEASURED:
        return None
    return fields.get("migration_throughput", parse_bandwidth)


def _damon(fields: Fields) -> Monitoring:
    damon = fields.sub("damon")
    default = Monitoring()
    result = replace(
        default,
        sample_us=round(damon.get("sample", parse_latency, default.sample_us * 1e3) / 1e3),
        aggr_us=round(damon.get("aggregate", parse_latency, default.aggr_us * 1e3) / 1e3),
        min_regions=damon.get("min_regions", whole(3), default.min_regions),
        max_regions=damon.get("max_regions", whole(3), default.max_regions),
    )
    damon.done()
    if result.aggr_us < result.sample_us:
        raise damon.error("aggregate", "must be at least the sample interval")
    return result

