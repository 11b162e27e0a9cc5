"""The testbed as a pytest fixture, for other projects' tests (entry point ``llamas`` in ``pytest11``).

    def test_my_allocator_uses_the_cxl_node(llamas_vm):
        vm = llamas_vm("dram-cxl", share="build/")
        assert vm.run("/mnt/host/my-test --node 1").rc == 0

    @pytest.mark.llamas_systems("dram-cxl", "cxl-type3")
    def test_on_each(llamas_vm):
        vm = llamas_vm()  # this run's system

Boots are slow under TCG, so one warm-started VM per (system, options) serves every test of the
session that asks for it. A test that fails gives its VMs up: their console logs and dmesg are
saved first (in the test's tmp_path, or under ``--llamas-artifacts DIR``), then they are taken down,
since what the test left in them is unknown; ``fresh=True`` gives a test a VM of its own. The rest
are taken down when the session ends, Ctrl-C included, and die with the pytest process if it is
killed. Everything the testbed itself needs is imported on first use: this module is loaded by
every pytest run where the testbed is installed.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import shutil
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from testbed.errors import UserError
from testbed.handle import VmHandle

if TYPE_CHECKING:
    from testbed.accel import Accelerator
    from testbed.kernel import PathArg
    from testbed.machine import VmBackend

MARKER = "llamas_systems"
CONSOLE_TAIL_LINES = 20


@dataclass(frozen=True)
class _Options:
    """What a VM was started with: tests asking for the same get the same VM."""

    system: str
    share: str | None
    accel: Accelerator | None
    backend: VmBackend
    warm: bool
    extra_cmdline: str
    kernel: str | None = None  # the user's kernel, initrd and modules tree, absolute (testbed/kernel.py)
    initrd: str | None = None
    modules: str | None = None
    packages: tuple[str, ...] | None = None  # extra guest packages; None: the LLAMAS_GUEST_PACKAGES setting


class SessionVms:
    """Every VM the session started, by name, and which of them are shared, by their options."""

    def __init__(self) -> None:
        self.handles: dict[str, VmHandle] = {}
        self.shared: dict[_Options, str] = {}
        self._numbers = itertools.count(1)

    def new_name(self, system: str) -> str:
        """Unique beside the user's own VMs and other pytest runs (``llamas ls`` shows them)."""
        return f"pytest-{Path(system).stem}-{os.getpid()}-{next(self._numbers)}"

    def start(self, name: str, options: _Options) -> VmHandle:
        from testbed.image import require_image
        from testbed.kernel import own_kernel
        from testbed.vms import up

        kernel = own_kernel(options.kernel, options.initrd, options.modules)
        vm = up(options.system, name=name, backend=options.backend, accel=options.accel,
                warm=options.warm, extra_cmdline=options.extra_cmdline, share=options.share, owned=True,
                kernel=kernel, image=None if options.packages is None else require_image(options.packages))
        handle = VmHandle(vm)
        self.handles[name] = handle
        return handle

    def down(self, name: str) -> None:
        self.shared = {options: shared for options, shared in self.shared.items() if shared != name}
        handle = self.handles.pop(name, None)
        if handle is not None:
            handle.down()
            return
        from testbed.vms import load_vm

        # A boot that failed leaves the VM's directory for its console log; the artifacts have it now.
        with contextlib.suppress(UserError):
            load_vm(name).down()

    def close(self) -> None:
        for name in list(self.handles):
            self.down(name)


class LlamasVms:
    """The ``llamas_vm`` fixture, one per test: ``llamas_vm(system, **options)`` returns a ready VmHandle."""

    def __init__(self, session: SessionVms, parametrized: str | None, base: Path, artifacts: Path) -> None:
        self._session = session
        self._parametrized = parametrized
        self._base = base
        self.artifacts = artifacts
        # Names are recorded before the boot, so that a failed boot's console log is kept too.
        self.names: list[str] = []
        self._fresh: set[str] = set()
        self.failed = False

    def __call__(self, system: str | None = None, *, share: PathArg | None = None,
                 accel: Accelerator | None = None, backend: VmBackend | None = None, warm: bool = True,
                 extra_cmdline: str = "", fresh: bool = False, kernel: PathArg | None = None,
                 initrd: PathArg | None = None, modules: PathArg | None = None,
                 packages: Sequence[str] | None = None) -> VmHandle:
        """A VM of ``system`` (a name from the catalog or a path; under ``@pytest.mark.llamas_systems``,
        leave it out to get this run's). ``share``: a host directory (relative to where pytest was
        started) the guest sees at /mnt/host. ``kernel``, ``initrd``, ``modules``: your own kernel, as
        ``llamas up --kernel`` takes them (paths relative to there too). ``packages``: extra Debian
        packages in the image (built beforehand: ``llamas image build --packages``). ``fresh``: a VM of
        this test's own, not shared."""
        from testbed.image import guest_packages
        from testbed.machine import VmBackend

        chosen = self._system(system)
        chosen_packages = None if packages is None else guest_packages(packages, "llamas_vm(packages=...)")
        options = _Options(chosen, self._absolute(share), accel, backend or VmBackend.QEMU, warm, extra_cmdline,
                           self._absolute(kernel), self._absolute(initrd), self._absolute(modules), chosen_packages)
        name = None if fresh else self._session.shared.get(options)
        if name is not None and self._session.handles[name].alive():
            self.names.append(name)
            return self._session.handles[name]
        if name is not None:  # it died (a test shut it down): start another
            self._session.down(name)
        name = self._session.new_name(chosen)
        self.names.append(name)
        if fresh:
            self._fresh.add(name)
        handle = self._session.start(name, options)
        if not fresh:
            self._session.shared[options] = name
        return handle

    def _absolute(self, path: PathArg | None) -> str | None:
        return str((self._base / path).resolve()) if path is not None else None

    def _system(self, system: str | None) -> str:
        if system is None:
            if self._parametrized is None:
                raise UserError(f"llamas_vm(): name a system, or mark the test @pytest.mark.{MARKER}(...)")
            return self._parametrized
        if self._parametrized is not None and system != self._parametrized:
            raise UserError(f"llamas_vm({system!r}) in a test marked {MARKER}: this run is on "
                            f"{self._parametrized!r}; call llamas_vm() without a system")
        return system

    def keep_artifacts(self) -> str:
        """The test failed: save what its VMs can tell while they still run; say where it is."""
        self.failed = True
        return "\n\n".join(save_artifacts(name, self._session.handles.get(name), self.artifacts / name)
                           for name in dict.fromkeys(self.names))

    def release(self) -> None:
        """After the test: give up its fresh VMs, every VM it used if it failed, and what is left of a boot
        that failed (a test may have caught the error)."""
        for name in dict.fromkeys(self.names):
            if self.failed or name in self._fresh or name not in self._session.handles:
                self._session.down(name)


_FACTORY = pytest.StashKey[LlamasVms]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("llamas", "LLaMaS testbed VMs")
    group.addoption("--llamas-artifacts", metavar="DIR",
                    help="keep the console log and dmesg of a failing test's VMs under DIR/<test> "
                         "(default: the test's tmp_path/llamas)")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", f"{MARKER}(*systems): run the test once on each system; "
                                       "llamas_vm() then starts that run's system")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marker = metafunc.definition.get_closest_marker(MARKER)
    if marker is None:
        return
    systems = list(marker.args)
    where = f"{metafunc.definition.nodeid}: @pytest.mark.{MARKER}"
    # A collection error of this kind is shown as its message alone, without pytest's own traceback.
    if not systems or not all(isinstance(system, str) for system in systems):
        raise pytest.Collector.CollectError(f"{where} takes system names")
    if "llamas_system" not in metafunc.fixturenames:
        raise pytest.Collector.CollectError(f"{where} needs the llamas_vm (or llamas_system) fixture")
    metafunc.parametrize("llamas_system", systems, indirect=True)


@pytest.fixture
def llamas_system(request: pytest.FixtureRequest) -> str | None:
    """This run's system under ``@pytest.mark.llamas_systems``; None in an unmarked test."""
    system: str | None = getattr(request, "param", None)
    return system


@pytest.fixture(scope="session")
def _llamas_session() -> Iterator[SessionVms]:
    session = SessionVms()
    yield session
    session.close()


@pytest.fixture
def llamas_vm(request: pytest.FixtureRequest, tmp_path: Path, llamas_system: str | None,
              _llamas_session: SessionVms) -> Iterator[LlamasVms]:
    option = request.config.getoption("llamas_artifacts")
    artifacts = Path(option) / re.sub(r"[^\w.-]+", "_", request.node.nodeid) if option else tmp_path / "llamas"
    factory = LlamasVms(_llamas_session, llamas_system, request.config.invocation_params.dir, artifacts)
    request.node.stash[_FACTORY] = factory
    yield factory
    factory.release()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    """A failing test's VMs, while they still run: their console logs and dmesg, into its artifacts."""
    report = yield
    factory = item.stash.get(_FACTORY, None)
    if factory is not None and factory.names and report.failed and report.when in ("setup", "call"):
        report.sections.append(("llamas artifacts", factory.keep_artifacts()))
    return report


def save_artifacts(name: str, handle: VmHandle | None, directory: Path) -> str:
    """Copy what the VM's directory holds and ask a live guest for its kernel log; say where they are."""
    from testbed.render_qemu import VmFiles
    from testbed.vms import console_tail, vms_dir

    directory.mkdir(parents=True, exist_ok=True)
    files = VmFiles(vms_dir() / name)
    for source in (files.console, files.qemu_log):
        if source.exists():
            shutil.copy2(source, directory / source.name)
    (directory / "dmesg.txt").write_text(_dmesg(handle))
    return f"{name}: {directory}\nconsole, last lines:\n{console_tail(files.console, CONSOLE_TAIL_LINES)}"


def _dmesg(handle: VmHandle | None) -> str:
    if handle is None or not handle.alive():
        return "(the VM was not running)\n"
    try:
        return handle.dmesg()
    except (UserError, OSError) as error:
        return f"(dmesg could not be read: {error})\n"
