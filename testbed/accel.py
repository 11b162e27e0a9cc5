"""Choosing the accelerator: KVM where it really works, TCG otherwise, and saying why."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from testbed.errors import UserError


class Accelerator(StrEnum):
    KVM = "kvm"
    TCG = "tcg"  # QEMU's software emulation


@dataclass(frozen=True)
class Accel:
    name: Accelerator
    reason: str


def choose_accel(requested: Accelerator | None = None, root: Path = Path("/")) -> Accel:
    problem = kvm_problem(root)
    if requested == Accelerator.TCG:
        return Accel(Accelerator.TCG, "requested with --accel tcg")
    if requested == Accelerator.KVM:
        if problem:
            raise UserError(f"--accel kvm: KVM is not usable here: {problem}")
        return Accel(Accelerator.KVM, "requested with --accel kvm")
    if problem:
        return Accel(Accelerator.TCG, f"KVM is not usable: {problem}; using TCG (software emulation)")
    return Accel(Accelerator.KVM, "/dev/kvm is usable and the CPU has hardware virtualization")


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
