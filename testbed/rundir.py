"""The run directory of an experiment: every file in it is written and read here.

::

    manifest.json                  versions and the resolved experiment. Read back: experiment.name,
                                   .system, .workload (a name or a spec with a name), .interval_s,
                                   .policies (names or {"name": ...}), .migration.throughput (bytes/s,
                                   or a string like "2GB/s"; null: use .migration.measured) and the
                                   rest of .migration (how it was chosen). Scalar fields outside the
                                   experiment (versions, accelerator) are listed in the report as
                                   they are.
    catalog/                       the device YAMLs and systems/<system>.yaml of the run
    runs/<policy>[-r<N>]/timeline.jsonl     one per policy run (testbed.timeline)
    summary.json, report.md, plots/         computed from the files above alone (testbed.report)
"""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import time
from dataclasses import asdict, dataclass
from functools import cached_property
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Any

from testbed.catalog import REPO_ROOT, Catalog, system_yaml
from testbed.errors import ConfigError, ResultsUnwritable, UserError
from testbed.model import HeldData, System
from testbed.proc import run
from testbed.render_qemu import QEMU_BINARY
from testbed.score import Array, RunData, access_costs, placed_shares, run_data
from testbed.timeline import RunStatus, Timeline, read_timeline
from testbed.units import UnitError, parse_bandwidth

if TYPE_CHECKING:  # only the writers take an experiment; reading a run directory must not load the policies
    from testbed.experiment import Experiment

MANIFEST_FILE = "manifest.json"
TIMELINE_FILE = "timeline.jsonl"  # in each runs/<policy>[-r<N>]/
SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"
PLOTS_DIR = "plots"
RUN_NAME = re.compile(r"^(?P<policy>.+?)(?:-r(?P<repeat>\d+))?$")


class RunDirError(UserError):
    """A run directory that lacks what a report needs."""


@dataclass(frozen=True)
class Manifest:
    """What the report reads from manifest.json."""

    experiment: str
    system: str
    workload: str | None
    interval_s: float | None
    policies: tuple[str, ...]
    twins: tuple[tuple[str, str], ...]  # (LLM policy, its text-blind twin)
    migration_budget: int | None  # bytes a policy may move per interval; None in manifests before it was recorded
    migration_throughput: float
    migration_notes: tuple[tuple[str, str], ...]  # the rest of experiment.migration: how it was chosen
    facts: tuple[tuple[str, str], ...]  # scalar fields outside the experiment: versions, hashes, accelerator
    holds: tuple[HeldData | None, ...] = ()  # per workload region, for the constraints column; () before it was kept


@dataclass(frozen=True)
class Record:
    """A run's timeline and its arrays."""

    timeline: Timeline
    data: RunData
    costs: Array  # [k, c, n] seconds (testbed.score.access_costs)

    @cached_property
    def shares(self) -> Array:
        """[k, c, n]: the residency the score charges (testbed.score.placed_shares), made once per run."""
        return placed_shares(self.data, self.costs)


@dataclass(frozen=True)
class Run:
    """A run directory as read: its record, or why there is none."""

    path: str  # relative to the run directory
    policy: str
    repeat: int
    record: Record | None
    error: str | None = None

    @property
    def status(self) -> RunStatus:
        ok = self.record is not None and self.record.timeline.end.status == RunStatus.OK
        return RunStatus.OK if ok else RunStatus.FAILED

    @property
    def epochs(self) -> int:
        return self.record.data.epochs if self.record is not None else 0


# ---- written before the runs ----


def copy_catalog(experiment: Experiment, run_dir: Path) -> None:
    """The devices and the system, so the report can be recomputed from the run directory alone."""
    target = run_dir / "catalog"
    (target / "systems").mkdir(parents=True, exist_ok=True)
    for node in experiment.system.nodes:
        if node.device.source:
            shutil.copy2(node.device.source, target / f"{node.device.name}.yaml")
    _write(target / "systems" / f"{experiment.system.name}.yaml", system_yaml(experiment.system))


def write_manifest(experiment: Experiment, run_dir: Path, image_key: str, kernel: str) -> None:
    """The manifest as a run starts; the accelerator is filled in by the first VM (record_accelerator)."""
    manifest: dict[str, Any] = {
        "format": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "project": {"version": version("llamas-testbed"), "git": _git_revision()},
        "image": {"key": image_key, "kernel": kernel},
        "qemu": run([QEMU_BINARY, "--version"]).splitlines()[0],
        "accelerator": {"name": "none yet", "reason": "no VM has been booted"},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average": os.getloadavg()[0]},
        "llm": {"setting": os.environ.get("LLAMAS_LLM", "local")},
        "experiment": _resolved(experiment),
    }
    _write(run_dir / MANIFEST_FILE, json.dumps(manifest, indent=2) + "\n")


def record_accelerator(run_dir: Path, name: str, reason: str) -> None:
    """The accelerator the run's VMs actually used (the first VM's; a later one that differs is noted)."""
    path = run_dir / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    recorded = manifest["accelerator"]
    if recorded["name"] == "none yet":
        manifest["accelerator"] = {"name": name, "reason": reason}
    elif recorded["name"] != name and "differ" not in recorded["reason"]:
        recorded["reason"] += f"; runs differ: a later VM used {name} ({reason})"
    else:
        return
    _write(path, json.dumps(manifest, indent=2) + "\n")


def _resolved(experiment: Experiment) -> dict[str, Any]:
    workload = experiment.workload
    return {
        "name": experiment.name,
        "description": experiment.description,
        "source": str(experiment.source),
        "system": experiment.system.name,
        "policies": list(experiment.policies),
        "twins": experiment.twins,
        "repeats": experiment.repeats,
        "interval_s": experiment.interval_s,
        "migration_budget": experiment.migration_budget,
        "decision_deadline_s": experiment.decision_deadline_s,
        "migration": {"throughput": experiment.migration_throughput,
                      "chosen": "measured in the guest" if experiment.migration_throughput is None else "model"},
        "hints": experiment.hints,
        "damon": asdict(experiment.damon),
        "workload": {"name": workload.name, "description": workload.description, "seed": workload.seed,
                     "epochs": workload.epochs, "footprint": workload.footprint,
                     "regions": [{"name": r.name, "size": r.size, "pattern": str(r.pattern),
                                  **({"holds": str(r.holds)} if r.holds else {})} for r in workload.regions],
                     "phases": [{"name": p.name, "epochs": p.epochs} for p in workload.phases]},
    }


def _git_revision() -> str:
    try:
        revision = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision


def run_path(run_dir: Path, policy: str, repeat: int, repeats: int) -> Path:
    """Where a policy run writes its timeline: ``runs/<policy>``, or ``runs/<policy>-r<N>`` when repeated."""
    return run_dir / "runs" / (policy if repeats == 1 else f"{policy}-r{repeat}")


# ---- written after the runs ----


def write_summary(run_dir: Path, summary: dict[str, Any]) -> None:
    _write(run_dir / SUMMARY_FILE, json.dumps(summary, indent=2) + "\n")


def write_report(run_dir: Path, markdown: str) -> None:
    _write(run_dir / REPORT_FILE, markdown)


def _write(path: Path, text: str) -> None:
    """``path`` holds ``text``; a full disk (or any write error) is :class:`ResultsUnwritable` naming it."""
    try:
        path.write_text(text)
    except OSError as error:
        raise ResultsUnwritable(path, error) from None


# ---- read back ----


def read_manifest(run_dir: Path) -> Manifest:
    path = run_dir / MANIFEST_FILE
    if not path.exists():
        raise RunDirError(f"{path}: missing (is {path.parent} a run directory?)")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(path, "", f"not JSON: {error}") from None
    experiment = data.get("experiment") if isinstance(data, dict) else None
    if not isinstance(experiment, dict):
        raise ConfigError(path, "experiment", "missing (an object describing the experiment)")
    migration = experiment.get("migration")
    if not isinstance(migration, dict) or "throughput" not in migration:
        raise ConfigError(path, "experiment.migration.throughput", "missing (bytes per second)")
    throughput = migration["throughput"] if migration["throughput"] is not None else migration.get("measured")
    if throughput is None:
        raise ConfigError(path, "experiment.migration", "the throughput is to be measured in the guest, but no "
                          "'measured' value (bytes per second) is recorded")
    return Manifest(
        experiment=_text(path, experiment, "name"),
        system=_text(path, experiment, "system"),
        workload=_name_of(experiment.get("workload")),
        interval_s=_number_or_none(experiment.get("interval_s")),
        policies=tuple(name for name in map(_name_of, experiment.get("policies") or ()) if name),
        twins=_twins(path, experiment.get("twins")),
        migration_budget=_bytes_or_none(path, experiment.get("migration_budget")),
        migration_throughput=_throughput(path, throughput),
        migration_notes=tuple((key, str(value)) for key, value in migration.items() if key != "throughput"),
        facts=tuple(_facts({key: value for key, value in data.items() if key != "experiment"})),
        holds=_holds(path, experiment.get("workload")),
    )


def load_system(run_dir: Path, name: str) -> System:
    path = run_dir / "catalog" / "systems" / f"{name}.yaml"
    if not path.exists():
        raise RunDirError(f"{path}: missing (a run directory keeps a copy of the system and device files it used)")
    return Catalog(run_dir / "catalog").load_system(name)


def read_runs(run_dir: Path, system: System) -> list[Run]:
    """Every run under ``runs/``, in name order."""
    runs = run_dir / "runs"
    paths = sorted(path for path in runs.iterdir() if path.is_dir()) if runs.is_dir() else []
    return [_read_run(run_dir, path, system) for path in paths]


def _read_run(run_dir: Path, path: Path, system: System) -> Run:
    """A run, or what is known of it: a record that cannot be read makes a failed run with the reason."""
    match = RUN_NAME.match(path.name)
    policy, repeat = (match["policy"], int(match["repeat"] or 0)) if match else (path.name, 0)
    relative = path.relative_to(run_dir).as_posix()
    name = f"{relative}/{TIMELINE_FILE}"  # reasons name files relative to the run directory
    if not (path / TIMELINE_FILE).exists():
        return Run(relative, policy, repeat, None, f"{name}: missing")
    try:
        timeline = read_timeline(path / TIMELINE_FILE)
        data = run_data(timeline, len(system.nodes))
    except (ValueError, TypeError, KeyError) as error:  # TimelineError, JSON and field errors alike
        problem = _describe(error).replace(f"{run_dir}/", "")
        return Run(relative, policy, repeat, None, problem if problem.startswith(name) else f"{name}: {problem}")
    record = Record(timeline, data, access_costs(data, system))
    return Run(relative, timeline.start.policy, timeline.start.repeat, record)


def _describe(error: Exception) -> str:
    if isinstance(error, KeyError):
        return f"a record lacks the field {error}"
    if isinstance(error, TypeError):
        return f"a record does not have the expected fields ({error})"
    return str(error)


# ---- manifest fields ----


def _text(path: Path, experiment: dict[str, Any], key: str) -> str:
    value = experiment.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(path, f"experiment.{key}", f"expected a name, got {value!r}")
    return value


def _name_of(value: object) -> str | None:
    """A name given as a string or as an object with a name."""
    if isinstance(value, dict):
        value = value.get("name")
    return value if isinstance(value, str) else None


def _holds(path: Path, workload: object) -> tuple[HeldData | None, ...]:
    """What each workload region holds, in region order."""
    regions = workload.get("regions") if isinstance(workload, dict) else None
    if not isinstance(regions, list):
        return ()
    try:
        return tuple(HeldData(region["holds"]) if isinstance(region, dict) and "holds" in region else None
                     for region in regions)
    except ValueError as error:
        raise ConfigError(path, "experiment.workload.regions", f"holds: {error}") from None


def _twins(path: Path, value: object) -> tuple[tuple[str, str], ...]:
    if value is None:
        return ()
    if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise ConfigError(path, "experiment.twins", f"expected {{policy: its twin}}, got {value!r:.60}")
    return tuple(value.items())


def _bytes_or_none(path: Path, value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(path, "experiment.migration_budget", f"expected bytes (a whole number), got {value!r:.40}")
    return value


def _number_or_none(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def _throughput(path: Path, value: object) -> float:
    try:
        number = _number_or_none(value)
        throughput = number if number is not None else parse_bandwidth(value)
    except UnitError as error:
        raise ConfigError(path, "experiment.migration.throughput", str(error)) from None
    if throughput <= 0:
        raise ConfigError(path, "experiment.migration.throughput", f"must be above zero, got {value!r}")
    return throughput


def _facts(data: dict[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Scalar fields, nested objects flattened to dotted keys; lists are left out."""
    facts = []
    for key, value in data.items():
        if isinstance(value, dict):
            facts += _facts(value, f"{prefix}{key}.")
        elif isinstance(value, (str, int, float, bool)) or value is None:
            facts.append((f"{prefix}{key}", "-" if value is None else str(value)))
    return facts
