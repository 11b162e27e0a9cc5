"""VM fixtures: one guest image per session, booted VMs shared where tests only read them.

Tests here boot real QEMU guests (TCG where KVM cannot run a guest) and are
marked ``vm``. VMs live in a private state directory and are always taken
down; a failing test prints the console tail of the VMs it used.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from testbed.image import Image, build_image
from testbed.vms import Vm, all_vms, up

pytestmark = pytest.mark.vm


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "/tests/vm/" in str(item.fspath):
            item.add_marker(pytest.mark.vm)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    outcome = yield
    report = outcome.get_result()  # type: ignore[attr-defined]
    if report.when == "call" and report.failed:
        for vm in item.funcargs.get("_vms_used", []):  # type: ignore[attr-defined]
            report.sections.append((f"console of {vm.name}", vm.console_tail(40)))


@pytest.fixture(scope="session")
def vm_state(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Test VMs get their own state directory; whatever a test leaves running is stopped."""
    state = tmp_path_factory.mktemp("llamas-state")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("LLAMAS_STATE", str(state))
        yield state
        for vm in all_vms():
            vm.down()


@pytest.fixture(scope="session")
def guest_image(vm_state: Path) -> Image:
    return build_image(log=lambda line: print(line, flush=True))


@pytest.fixture(scope="session")
def shared_vms(guest_image: Image) -> Iterator[dict[str, Vm]]:
    """Booted VMs by system name, for tests that only look; started on first use."""
    running: dict[str, Vm] = {}
    yield running
    for vm in running.values():
        vm.down()


@pytest.fixture
def _vms_used() -> list[Vm]:
    return []


@pytest.fixture
def booted(shared_vms: dict[str, Vm], _vms_used: list[Vm]) -> Callable[[str], Vm]:
    """``booted("dram-cxl")``: a running VM of that system, shared with other tests."""

    def get(system: str) -> Vm:
        if system not in shared_vms or not shared_vms[system].machine.alive():
            shared_vms[system] = up(system, name=f"shared-{system}", log=print)
        _vms_used.append(shared_vms[system])
        return shared_vms[system]

    return get


@pytest.fixture
def fresh_vm(guest_image: Image, _vms_used: list[Vm]) -> Iterator[Callable[..., Vm]]:
    """``fresh_vm("dram-cxl", backend=...)``: a VM of the test's own, always taken down after it."""
    started: list[Vm] = []

    def start(system: str, **options: object) -> Vm:
        vm = up(system, log=print, **options)  # type: ignore[arg-type]
        started.append(vm)
        _vms_used.append(vm)
        return vm

    yield start
    for vm in started:
        vm.down()
