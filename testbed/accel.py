"""Choosing the accelerator: KVM where it really works, TCG otherwise, and saying why."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from testbed.errors import UserError


@dataclass(frozen=True)
class Accel:
    name: str  # "kvm" or "tcg"
    reason: str


def choose_accel(requested: str | None = None, root: Path = Path("/")) -> Accel:
    problem = kvm_problem(root)
    if requested == "tcg":
        return Accel("tcg", "requested with --accel tcg")
    if requested == "kvm":
        if problem:
            raise UserError(f"--accel kvm: KVM is not usable here: {problem}")
        return Accel("kvm", "requested with --accel kvm")
    if problem:
        return Accel("tcg", f"KVM is not usable: {problem}; using TCG (software emulation)")
    return Accel("kvm", "/dev/kvm is usable and the CPU has hardware virtualization")


def kvm_problem(root: Path = Path("/")) -> str | None:
    """Why KVM cannot boot a normal guest here, or None when it can."""
    device = root / "dev/kvm"
    if not device.exists():
        return "/dev/kvm does not exist"
    if not os.access(device, os.R_OK | os.W_OK):
        return "/dev/kvm is not readable and writable by this user"
    # kvm_pvm is a software virtualizer: /dev/kvm opens, but an unmodified guest
    # kernel stops with "KVM internal error ... emulation failure".
    if (root / "sys/module/kvm_pvm").exists():
        return "/dev/kvm is provided by kvm_pvm, which cannot run an unmodified guest kernel"
    cpuinfo = (root / "proc/cpuinfo").read_text() if (root / "proc/cpuinfo").exists() else ""
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", cpuinfo, re.MULTILINE):
        return "the CPU does not advertise hardware virtualization (no vmx or svm flag)"
    return None
