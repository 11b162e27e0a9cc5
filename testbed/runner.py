"""Running an experiment: every policy on the same machine and workload, into one run directory.

The run directory holds everything needed to trust and reproduce the numbers:
the manifest (versions, image, accelerator, the resolved configuration), a
copy of the catalog files the machine was built from, one timeline per policy
run, and the summary, report and plots computed from those files alone.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from policies.registry import BOUNDS, embedded_model_for, make_policy
from testbed.catalog import REPO_ROOT
from testbed.errors import ResultsUnwritable
from testbed.experiment import Experiment
from testbed.image import build_image
from testbed.llm_server import running_server
from testbed.orchestrator import run_policy
from testbed.report import result_table, write_results
from testbed.rundir import copy_catalog, record_accelerator, run_path, write_manifest
from testbed.summary import Summary
from testbed.timeline import RunStatus
from testbed.vms import Vm, booter

Progress = Callable[[str], None]
RUNS_DIR = REPO_ROOT / "runs"


def default_run_dir(experiment: Experiment) -> Path:
    return RUNS_DIR / f"{experiment.name}-{time.strftime('%Y%m%d-%H%M%S')}"


def run_experiment(experiment: Experiment, run_dir: Path, progress: Progress = print) -> Path:
    """Run every policy (and repeat) of ``experiment``; the run directory is valid after each one.

    The embedded LLM server runs for the experiment when one of its policies may ask an LLM and no other
    endpoint is configured (started for it and stopped after, unless it was already running)."""
    model = embedded_model_for(experiment.policies)
    with running_server(model) if model is not None else contextlib.nullcontext():
        return _run_policies(experiment, run_dir, progress)


def _run_policies(experiment: Experiment, run_dir: Path, progress: Progress) -> Path:
    image = build_image(log=progress)
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        copy_catalog(experiment, run_dir)  # its file copies' errors name no file: the run directory is named
    except OSError as error:
        raise ResultsUnwritable(run_dir, error) from None
    write_manifest(experiment, run_dir, image.key, image.manifest()["kernel"])
    boot_vm = booter(experiment.system, experiment.catalog, image, progress)

    def boot(name: str) -> Vm:
        vm = boot_vm(name)
        record_accelerator(run_dir, vm.record.accel, vm.record.accel_reason)
        return vm
    summary: Summary | None = None  # of the run directory as it is now; None once a run has changed it
    try:
        for repeat in range(experiment.repeats):
            for name in experiment.policies:
                if name in BOUNDS:
                    continue  # computed from the ground truth of the runs, not run in the VM
                out = run_path(run_dir, name, repeat + 1, experiment.repeats)
                progress(f"== {name}" + (f" (repeat {repeat + 1}/{experiment.repeats})" if experiment.repeats > 1
                                         else ""))
                summary = None
                end = run_policy(experiment, make_policy(name), repeat + 1, out, progress, boot)
                if end.status != RunStatus.OK:
                    progress(f"{name}: failed: {end.reason}")
                summary = write_results(run_dir)
    finally:
        # Ctrl-C or a failure mid-run leaves a run the last summary does not cover (on a full disk the summary
        # cannot be written either: the error says so, and `llamas report` makes it once there is room).
        if summary is None:
            summary = write_results(run_dir)
        progress(result_table(summary))
    return run_dir
