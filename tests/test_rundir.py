"""The run directory's manifest records the accelerator the VMs used, not a probe of its own."""

from __future__ import annotations

import json
from pathlib import Path

from testbed.rundir import MANIFEST_FILE, record_accelerator


def test_the_first_vm_fills_in_the_accelerator_and_a_different_later_one_is_noted(tmp_path: Path) -> None:
    (tmp_path / MANIFEST_FILE).write_text(json.dumps(
        {"format": 1, "accelerator": {"name": "none yet", "reason": "no VM has been booted"}}))
    record_accelerator(tmp_path, "tcg", "KVM is not usable: kvm_pvm")
    record_accelerator(tmp_path, "tcg", "KVM is not usable: kvm_pvm")
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["accelerator"] == {
        "name": "tcg", "reason": "KVM is not usable: kvm_pvm"}
    record_accelerator(tmp_path, "kvm", "requested with --accel kvm")
    accelerator = json.loads((tmp_path / MANIFEST_FILE).read_text())["accelerator"]
    assert accelerator["name"] == "tcg" and "a later VM used kvm" in accelerator["reason"]
