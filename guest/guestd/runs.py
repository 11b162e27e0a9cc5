"""Processes started for the client, their output streamed back as events.

Each run gets its own session, so ``kill`` reaches the whole process group (a
workload started through a shell included).  Output lines become ``output``
events; ``exit`` follows once both streams are drained.  Runs still alive when
the daemon exits are terminated: their output would have nowhere to go.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO

from .kernel import format_id_list
from .protocol import GuestdError, JsonObject, Output, event, from_os_error
from .syscalls import Syscalls

STOP_GRACE_S = 2.0
log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Placement:
    """A numactl memory policy (``--interleave=all``, ``--membind=0``, ...) and CPU list for a run."""

    memory_option: str | None = None  # e.g. "--interleave=all"
    cpus: tuple[int, ...] = ()

    def prefix(self) -> list[str]:
        options = [f"--physcpubind={format_id_list(self.cpus)}"] if self.cpus else []
        options += [self.memory_option] if self.memory_option else []
        return ["numactl", *options, "--"] if options else []


@dataclass(frozen=True)
class Run:
    id: int
    process: subprocess.Popen[bytes]
    argv: list[str]


class Runs:
    def __init__(self, output: Output, syscalls: Syscalls) -> None:
        self._output = output
        self._syscalls = syscalls
        self._runs: dict[int, Run] = {}
        self._lock = threading.Lock()
        self._next_id = 1

    def start(self, argv: list[str], stdin: str | None, cwd: str | None, env: dict[str, str],
              placement: Placement) -> tuple[Run, Callable[[], None]]:
        """Start a run; the returned callable begins streaming (call it after the reply is sent)."""
        command = placement.prefix() + argv
        try:
            process = subprocess.Popen(
                command, cwd=cwd, env={**os.environ, **env}, start_new_session=True,
                stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,  # never the protocol's stdin
                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            )
        except OSError as error:
            raise from_os_error(error, f"run: cannot start {command[0]!r}") from None
        with self._lock:
            run = Run(self._next_id, process, command)
            self._runs[run.id] = run
            self._next_id += 1
        return run, lambda: self._stream(run, stdin)

    def _stream(self, run: Run, stdin: str | None) -> None:
        assert run.process.stdout is not None and run.process.stderr is not None
        readers = [self._thread(f"run{run.id}-{name}", self._forward, run.id, name, pipe)
                   for name, pipe in (("stdout", run.process.stdout), ("stderr", run.process.stderr))]
        if stdin is not None and run.process.stdin is not None:
            self._thread(f"run{run.id}-stdin", _feed, run.process.stdin, stdin)
        self._thread(f"run{run.id}-exit", self._report_exit, run, readers)

    @staticmethod
    def _thread(name: str, target: Callable[..., None], *args: object) -> threading.Thread:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        thread.start()
        return thread

    def _forward(self, run_id: int, stream: str, pipe: IO[bytes]) -> None:
        for raw in iter(pipe.readline, b""):
            line = raw.decode("utf-8", errors="replace").rstrip("\n")
            self._output.send(event("output", run_id, stream=stream, line=line))
        pipe.close()

    def _report_exit(self, run: Run, readers: list[threading.Thread]) -> None:
        for reader in readers:
            reader.join()
        code = run.process.wait()
        with self._lock:
            self._runs.pop(run.id, None)
        fields: JsonObject = {"code": code, "signal": None}
        if code < 0:
            fields = {"code": None, "signal": signal.Signals(-code).name}
        self._output.send(event("exit", run.id, **fields))

    def kill(self, run_id: int, signum: int) -> JsonObject:
        with self._lock:
            run = self._runs.get(run_id)
        if run is None:
            raise GuestdError("ESRCH", f"kill: run {run_id} is not running (finished, or never started)")
        delivered = self._signal(run, signum)
        return {"run": run_id, "pid": run.process.pid, "delivered": delivered}

    def stop_all(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            self._signal(run, signal.SIGTERM)
        for run in runs:
            try:
                run.process.wait(STOP_GRACE_S)
            except subprocess.TimeoutExpired:
                log.warning("run %d (pid %d) ignored SIGTERM; killing it", run.id, run.process.pid)
                self._signal(run, signal.SIGKILL)

    def _signal(self, run: Run, signum: int) -> bool:
        """Signal the run's whole process group; False if it has already gone."""
        try:
            self._syscalls.kill(-run.process.pid, signum)
        except ProcessLookupError:
            return False
        return True


def _feed(pipe: IO[bytes], text: str) -> None:
    try:
        pipe.write(text.encode())
        pipe.close()
    except BrokenPipeError:
        log.info("a run exited before reading all its stdin")
