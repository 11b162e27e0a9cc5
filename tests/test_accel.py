from pathlib import Path

import pytest

from testbed.accel import Accelerator, choose_accel, kvm_problem
from testbed.errors import UserError


def fake_host(tmp_path: Path, flags: str, pvm: bool = False, kvm: bool = True) -> Path:
    (tmp_path / "dev").mkdir()
    (tmp_path / "proc").mkdir()
    if kvm:
        (tmp_path / "dev/kvm").write_text("")
    (tmp_path / "proc/cpuinfo").write_text(f"processor\t: 0\nflags\t\t: fpu {flags} sse2\n")
    if pvm:
        (tmp_path / "sys/module/kvm_pvm").mkdir(parents=True)
    return tmp_path


def test_hardware_virtualization_means_kvm(tmp_path: Path) -> None:
    root = fake_host(tmp_path, "vmx")
    assert kvm_problem(root) is None
    assert choose_accel(None, root).name == "kvm"


@pytest.mark.parametrize(("flags", "pvm", "kvm", "reason"), [
    ("svm", True, True, "kvm_pvm"),
    ("sse4_2", False, True, "no vmx or svm"),
    ("vmx", False, False, "does not exist"),
])
def test_tcg_when_kvm_cannot_run_a_guest(tmp_path: Path, flags: str, pvm: bool, kvm: bool, reason: str) -> None:
    root = fake_host(tmp_path, flags, pvm, kvm)
    chosen = choose_accel(None, root)
    assert chosen.name == "tcg"
    assert reason in chosen.reason
    with pytest.raises(UserError, match=reason):
        choose_accel(Accelerator.KVM, root)
    assert choose_accel(Accelerator.TCG, root).name == "tcg"
