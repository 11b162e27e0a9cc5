"""Running an experiment: every policy on the same machine and workload, into one run directory.

The run directory holds everything needed to trust and reproduce the numbers:
the manifest (versions, image, accelerator, the resolved configuration), a
copy of the catalog files the machine was built from, one timeline per policy
run, and the summary, report and plots computed from those files alone.
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from policies.registry import BOUNDS, make_policy
from testbed.accel import choose_accel
from testbed.catalog import REPO_ROOT, system_yaml
from testbed.experiment import Experiment
from testbed.image import build_image
from testbed.orchestrator import run_policy
from testbed.proc import run
from testbed.report import result_table, summarize

Progress = Callable[[str], None]
RUNS_DIR = REPO_ROOT / "runs"


def default_run_dir(experiment: Experiment) -> Path:
    return RUNS_DIR / f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_experiment(experiment: Experiment, run_dir: Path, progress: Progress = print) -> Path:
    """Run every policy (and repeat) of ``experiment``; the run directory is valid after each one."""
    run_dir.mkdir(parents=True, exist_ok=True)
    image = build_image(log=progress)
    _copy_catalog(experiment, run_dir / "catalog")
    _write_manifest(experiment, run_dir, image.key, image.manifest()["kernel"])
    try:
        for repeat in range(experiment.repeats):
            for name in experiment.policies:
                if name in BOUNDS:
                    continue  # computed from the ground truth of the runs, not run in the VM
                out = run_dir / "runs" / (name if experiment.repeats == 1 else f"{name}-r{repeat + 1}")
                progress(f"== {name}" + (f" (repeat {repeat + 1}/{experiment.repeats})" if experiment.repeats > 1
                                         else ""))
                end = run_policy(experiment, make_policy(name), repeat + 1, out, progress, image)
                if end.status != "ok":
                    progress(f"{name}: failed: {end.reason}")
                summarize(run_dir)
    finally:
        summary = summarize(run_dir)
        progress(result_table(summary))
    return run_dir


def _copy_catalog(experiment: Experiment, target: Path) -> None:
    """The devices and the system, so the report can be recomputed from the run directory alone."""
    (target / "systems").mkdir(parents=True, exist_ok=True)
    for node in experiment.system.nodes:
        if node.device.source:
            shutil.copy2(node.device.source, target / f"{node.device.name}.yaml")
    (target / "systems" / f"{experiment.system.name}.yaml").write_text(system_yaml(experiment.system))


def _write_manifest(experiment: Experiment, run_dir: Path, image_key: str, kernel: str) -> None:
    accel = choose_accel()
    manifest: dict[str, Any] = {
        "format": 1,
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "project": {"version": version("llamas-testbed"), "git": _git_revision()},
        "image": {"key": image_key, "kernel": kernel},
        "qemu": run(["qemu-system-x86_64", "--version"]).splitlines()[0],
        "accelerator": {"name": accel.name, "reason": accel.reason},
        "host": {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version(),
                 "load_average": os.getloadavg()[0]},
        "llm": {"setting": os.environ.get("LLAMAS_LLM", "local")},
        "experiment": _resolved(experiment),
    }
    (run_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")


def _resolved(experiment: Experiment) -> dict[str, Any]:
    workload = experiment.workload
    return {
        "name": experiment.name,
        "description": experiment.description,
        "source": str(experiment.source),
        "system": experiment.system.name,
        "policies": list(experiment.policies),
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
                     "regions": [{"name": r.name, "size": r.size, "pattern": str(r.pattern)} for r in workload.regions],
                     "phases": [{"name": p.name, "epochs": p.epochs} for p in workload.phases]},
    }


def _git_revision() -> str:
    try:
        revision = subprocess.run(["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return revision
