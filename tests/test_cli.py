"""The ``llamas`` entry point itself: what happens around every command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import testbed.cli.catalog
from testbed.cli import CLOSED_STDOUT_EXIT, main

REPO_ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("unbuffered", ["1", ""], ids=["unbuffered", "buffered"])
def test_output_nobody_reads_ends_quietly_like_a_unix_tool(unbuffered: str) -> None:
    """`llamas render X | head -1`: a reader gone before the output (unbuffered: print fails;
    buffered: the final flush does) is exit 141 and nothing on stderr."""
    read_end, write_end = os.pipe()
    os.close(read_end)  # the reader has gone before the first write: EPIPE every time, no race
    try:
        done = subprocess.run([sys.executable, "-m", "testbed.cli", "render", "dram-cxl"], stdout=write_end,
                              stderr=subprocess.PIPE, text=True, cwd=REPO_ROOT, timeout=60, check=False,
                              env={**os.environ, "PYTHONUNBUFFERED": unbuffered})
    finally:
        os.close(write_end)
    assert "Traceback" not in done.stderr
    assert (done.returncode, done.stderr) == (CLOSED_STDOUT_EXIT, "")
    assert CLOSED_STDOUT_EXIT == 141


def test_a_broken_pipe_that_is_not_stdout_is_still_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """SIGPIPE is not made fatal and other pipes are not silenced: the experiment runner must see them."""
    def broken(*_: object) -> str:
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(testbed.cli.catalog, "render", broken)
    with pytest.raises(BrokenPipeError):
        main(["render", "dram-cxl"])


# What the quick commands must not load: each takes from a tenth of a second (yaml) to a second (openai) to import.
SLOW_IMPORTS = ("numpy", "scipy", "matplotlib", "paramiko", "openai", "policies.registry", "testbed.runner")


@pytest.mark.parametrize(("command", "also_slow"), [(["--help"], ("yaml", "testbed.vms")),
                                                    (["ls"], ()), (["devices"], ())], ids=["help", "ls", "devices"])
def test_the_quick_commands_do_not_load_the_heavy_libraries(command: list[str], also_slow: tuple[str, ...],
                                                            tmp_path: Path) -> None:
    """`llamas --help`, `ls` and `devices` start at once (benchmarks/command.py): the commands that need
    numpy, SSH, the LLM client or the run machinery import them when they run, not when the parser is built."""
    script = ("import sys\nfrom testbed.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
              f"print(' '.join(name for name in {(*SLOW_IMPORTS, *also_slow)!r} if name in sys.modules))")
    done = subprocess.run([sys.executable, "-c", script, *command], capture_output=True, text=True, cwd=REPO_ROOT,
                          timeout=60, check=True, env={**os.environ, "LLAMAS_STATE": str(tmp_path)})
    assert done.stdout.splitlines()[-1] == ""
    assert done.stderr == ""


def test_every_data_command_prints_json_a_script_can_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))
    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path / "cache"))

    def as_json(*command: str, status: int = 0) -> Any:
        assert main([*command, "--json"]) == status
        return json.loads(capsys.readouterr().out)

    devices = {device["name"]: device for device in as_json("devices")}
    assert devices["optane-pmem"]["endurance_writes"] == 2.3e6 and devices["rat"]["latency_model"]["hot_rate"] == 200
    assert "dram-cxl" in {system["name"] for system in as_json("systems")}
    shown = as_json("show", "dram-cxl")
    assert [node["device"]["name"] for node in shown["system"]["nodes"]] == ["ddr5-local", "cxl-expander"]
    assert (shown["hmat"][1]["target"], shown["hmat"][1]["read_latency_ns"]) == (1, 250)
    assert shown["memory_tiers"] == {"0": 4, "1": 40}
    assert as_json("ls") == []  # no VMs in this state directory
    assert as_json("image", "info", status=1)["built"] is False  # an empty cache: nothing built, exit 1
    assert set(as_json("llm", "status")) == {"qwen1.5b", "smollm2"}
