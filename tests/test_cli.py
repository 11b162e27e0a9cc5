"""The ``llamas`` entry point itself: what happens around every command."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

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
