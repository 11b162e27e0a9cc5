"""The fixture's kernel and package options reach ``up`` as ``llamas up`` passes them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import testbed.image
import testbed.vms
from testbed.errors import UserError
from testbed.kernel import OwnKernel
from testbed.pytest_plugin import LlamasVms, SessionVms


@pytest.fixture
def starts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[dict[str, Any]]:
    recorded: list[dict[str, Any]] = []

    def fake_up(system_ref: str, **options: Any) -> object:
        recorded.append(options)
        return object()

    monkeypatch.setattr(testbed.vms, "up", fake_up)
    monkeypatch.setattr(testbed.image, "require_image", lambda packages: f"image with {packages}")
    return recorded


def factory(base: Path) -> LlamasVms:
    return LlamasVms(SessionVms(), None, base, base / "artifacts")


def test_kernel_paths_are_taken_from_where_pytest_started(tmp_path: Path, starts: list[dict[str, Any]]) -> None:
    (tmp_path / "build").mkdir()
    (tmp_path / "build/bzImage").write_bytes(b"\x7fELF" + bytes(64))
    llamas_vm = factory(tmp_path)
    llamas_vm("dram-cxl", kernel="build/bzImage")
    llamas_vm("dram-cxl")
    kernel = starts[0]["kernel"]
    assert isinstance(kernel, OwnKernel) and kernel.kernel == tmp_path / "build/bzImage"
    assert starts[0]["image"] is None  # the image of the LLAMAS_GUEST_PACKAGES setting, as `up` picks it
    assert starts[1]["kernel"] is None  # other options, another VM
    assert len(llamas_vm.names) == 2 and llamas_vm.names[0] != llamas_vm.names[1]


def test_packages_choose_the_image(tmp_path: Path, starts: list[dict[str, Any]]) -> None:
    factory(tmp_path)("dram-cxl", packages=["strace", "gdb"])
    assert starts[0]["image"] == "image with ('gdb', 'strace')"
    with pytest.raises(UserError, match=r"^llamas_vm\(packages=\.\.\.\): 'GDB' is not a Debian package name"):
        factory(tmp_path)("dram-cxl", packages=["GDB"])


def test_a_missing_kernel_is_named(tmp_path: Path, starts: list[dict[str, Any]]) -> None:
    with pytest.raises(UserError, match=rf"^{tmp_path}/build/bzImage: no such file$"):
        factory(tmp_path)("dram-cxl", kernel="build/bzImage")
    assert starts == []
