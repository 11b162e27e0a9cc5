"""The pytest plugin, run as another project would run it: small test files through pytester, with
``testbed.vms.up`` replaced by a fake that records every start and stop."""

from __future__ import annotations

import shutil
import tomllib
from pathlib import Path

import pytest

import testbed.vms
from testbed.accel import Accelerator
from testbed.catalog import DEFAULT_CATALOG, REPO_ROOT
from testbed.machine import VmBackend
from testbed.render_qemu import VmFiles
from testbed.ssh import CommandResult, SshError
from testbed.vms import BootFailed, BootKind, VmRecord

Events = list[tuple[str, str]]
# The plugin module is already imported (this session loaded it too): nothing to rewrite, nothing to warn about.
PLUGIN = ("-p", "testbed.pytest_plugin", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning")


class FakeShell:
    def run(self, command: str, timeout: float = 120.0, check: bool = True) -> CommandResult:
        if command == "explode":
            raise SshError("guest command failed to run (connection reset): explode")
        out = "fake kernel log\n" if command == "dmesg" else f"ran {command}\n"
        return CommandResult(command, 0, out, "")


class FakeRecord:
    def __init__(self, share: str) -> None:
        self.share = share


class FakeVm:
    """What the plugin and its handle use of ``testbed.vms.Vm``, with files where a real VM keeps them."""

    def __init__(self, name: str, share: str, events: Events) -> None:
        self.name = name
        self.record = FakeRecord(share)
        self.files = VmFiles(testbed.vms.vms_dir() / name)
        self.files.directory.mkdir(parents=True)
        self.files.console.write_text(f"console of {name}\nLLAMAS_READY\n")
        self._events = events
        self._running = True

    def shell(self) -> FakeShell:
        return FakeShell()

    def alive(self) -> bool:
        return self._running

    def down(self) -> None:
        self._running = False
        self._events.append(("down", self.name))
        shutil.rmtree(self.files.directory)


@pytest.fixture
def events(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Events:
    """Every fake VM's start ("up", "NAME SYSTEM SHARE") and stop ("down", NAME), in order."""
    recorded: Events = []

    def fake_up(system_ref: str, *, name: str, share: str | None = None, owned: bool = False,
                extra_cmdline: str = "", **_: object) -> FakeVm:
        assert owned, "a test's VM must die with the pytest process"
        recorded.append(("up", f"{name} {system_ref} {share}"))
        if extra_cmdline == "root=/dev/vdz":
            failed_boot(name)
        return FakeVm(name, share or "", recorded)

    monkeypatch.setattr(testbed.vms, "up", fake_up)
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))
    # Only the plugin as this checkout has it, whether or not the installed entry point is current.
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")
    return recorded


def failed_boot(name: str) -> None:
    """As ``up`` leaves a boot that failed: its directory, record and console log, for ``llamas down``."""
    directory = testbed.vms.vms_dir() / name
    directory.mkdir(parents=True)
    VmRecord(name=name, system=str(DEFAULT_CATALOG / "systems" / "dram-cxl.yaml"), catalog=str(DEFAULT_CATALOG),
             backend=VmBackend.QEMU, accel=Accelerator.TCG, accel_reason="test", ssh_port=2222, image="image",
             handle="", started=0.0, boot=BootKind.COLD, boot_seconds=0.0, cmdline="root=/dev/vdz").write(directory)
    VmFiles(directory).console.write_text("llamas-initrd: cannot mount the root file system /dev/vdz\n")
    raise BootFailed(f"{name}: the VM stopped during boot")


def run(pytester: pytest.Pytester, source: str, *args: str) -> pytest.RunResult:
    pytester.makepyfile(test_inner=source)
    return pytester.runpytest(*PLUGIN, *args)


def started(events: Events) -> list[str]:
    return [what.split()[0] for kind, what in events if kind == "up"]


def stopped(events: Events) -> list[str]:
    return [what for kind, what in events if kind == "down"]


INNER = '''
import pytest

@pytest.mark.llamas_systems("dram-cxl", "cxl-type3")
def test_on_each(llamas_vm, llamas_system):
    vm = llamas_vm()
    assert vm.name.startswith(f"pytest-{llamas_system}-")
    assert vm.run("uname -r").rc == 0

def test_shares_the_booted_vm(llamas_vm):
    vm = llamas_vm("dram-cxl")
    assert vm.run(["echo", "a b"]).stdout == "ran echo 'a b'\\n"
    assert vm.share is None

def test_fails(llamas_vm):
    assert llamas_vm("dram-cxl", share="build").share == "/mnt/host"
    assert False, "the test's own failure"

def test_after_a_failure_gets_a_new_vm(llamas_vm):
    llamas_vm("dram-cxl", share="build/")

def test_run_raises(llamas_vm):
    llamas_vm("cxl-type3").run("explode")

def test_fresh(llamas_vm):
    llamas_vm("cxl-type3", fresh=True)
'''


def test_vms_are_shared_by_options_and_a_failing_test_keeps_artifacts_and_gives_its_vms_up(
        pytester: pytest.Pytester, events: Events, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    result = run(pytester, INNER, "--llamas-artifacts", str(artifacts))
    result.assert_outcomes(passed=5, failed=2)
    result.stdout.fnmatch_lines(["*llamas artifacts*", "*console, last lines:*"])
    name = started(events)
    build = (pytester.path / "build").resolve()  # relative to where pytest started
    assert events == [
        ("up", f"{name[0]} dram-cxl None"), ("up", f"{name[1]} cxl-type3 None"),  # the marked test's two runs
        # test_shares_the_booted_vm took the first; a share makes another VM, which the failing test gives up.
        ("up", f"{name[2]} dram-cxl {build}"), ("down", name[2]),
        ("up", f"{name[3]} dram-cxl {build}"),
        ("down", name[1]),  # the second, whose command raised
        ("up", f"{name[4]} cxl-type3 None"), ("down", name[4]),  # fresh: down when its test ends
        ("down", name[0]), ("down", name[3]),  # the shared ones at the session's end
    ]
    failed = artifacts / "test_inner.py_test_fails" / name[2]
    assert (failed / "console.log").read_text() == f"console of {name[2]}\nLLAMAS_READY\n"
    assert (failed / "dmesg.txt").read_text() == "fake kernel log\n"
    assert (artifacts / "test_inner.py_test_run_raises" / name[1] / "dmesg.txt").exists()
    assert not (artifacts / "test_inner.py_test_after_a_failure_gets_a_new_vm").exists()


def test_without_the_option_artifacts_go_to_the_tests_tmp_path(pytester: pytest.Pytester, events: Events) -> None:
    result = run(pytester, "def test_fails(llamas_vm, tmp_path):\n"
                           "    llamas_vm('dram-cxl')\n"
                           "    open('where', 'w').write(str(tmp_path))\n"
                           "    assert False\n")
    result.assert_outcomes(failed=1)
    where = Path((pytester.path / "where").read_text())
    assert (where / "llamas" / started(events)[0] / "dmesg.txt").read_text() == "fake kernel log\n"


def test_a_failed_boot_keeps_its_console_log_and_leaves_nothing_behind(pytester: pytest.Pytester,
                                                                      events: Events, tmp_path: Path) -> None:
    result = run(pytester, "def test_boot(llamas_vm):\n    llamas_vm('dram-cxl', extra_cmdline='root=/dev/vdz')\n",
                 "--llamas-artifacts", str(tmp_path / "artifacts"))
    result.assert_outcomes(failed=1)
    name = started(events)[0]
    console = tmp_path / "artifacts" / "test_inner.py_test_boot" / name / "console.log"
    assert "cannot mount the root file system" in console.read_text()
    assert not (testbed.vms.vms_dir() / name).exists()


def test_ctrl_c_in_a_test_still_takes_its_vms_down(pytester: pytest.Pytester, events: Events) -> None:
    pytester.makepyfile(test_inner="def test_interrupted(llamas_vm):\n"
                                   "    llamas_vm('dram-cxl')\n"
                                   "    raise KeyboardInterrupt\n")
    # In process, and the interruption kept from reaching this test.
    recorder = pytester.inline_run(*PLUGIN, no_reraise_ctrlc=True)
    assert recorder.ret == pytest.ExitCode.INTERRUPTED
    assert stopped(events) == started(events) and len(started(events)) == 1


def test_misuse_is_said_in_words(pytester: pytest.Pytester, events: Events) -> None:
    result = run(pytester, '''
import pytest

def test_no_system(llamas_vm):
    llamas_vm()

@pytest.mark.llamas_systems("dram-cxl")
def test_another_system(llamas_vm):
    llamas_vm("cxl-type3")
''')
    result.assert_outcomes(failed=2)
    result.stdout.fnmatch_lines(["*llamas_vm(): name a system, or mark the test @pytest.mark.llamas_systems(...)*",
                                 "*this run is on 'dram-cxl'; call llamas_vm() without a system*"])
    assert events == []


def test_the_marker_needs_the_fixture(pytester: pytest.Pytester, events: Events) -> None:
    result = run(pytester, "import pytest\n\n@pytest.mark.llamas_systems('dram-cxl')\ndef test_x():\n    pass\n")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*@pytest.mark.llamas_systems needs the llamas_vm (or llamas_system) fixture*"])


def test_the_plugin_is_the_pytest11_entry_point() -> None:
    project = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["project"]
    assert project["entry-points"]["pytest11"] == {"llamas": "testbed.pytest_plugin"}
