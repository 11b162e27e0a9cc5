"""memtouch's side of a workload: its input, its output and its build.

``memtouch`` (guest/workloads/memtouch.c) performs the accesses of a workload
spec (:mod:`testbed.workload`) in the guest. This module writes the spec in the
program's line format, reads back what it reports per epoch, region and chunk
(the ground truth the score is computed from, :mod:`testbed.score`), and
compiles the static binary the image ships.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from testbed.catalog import REPO_ROOT
from testbed.errors import UserError
from testbed.model import PAGE_SIZE
from testbed.workload import Accesses, Pattern, Region, Workload
from testbed.yamlfields import choice

MEMTOUCH_SOURCE = REPO_ROOT / "guest" / "workloads" / "memtouch.c"
# -ffp-contract=off: no fused multiply-add, so the zipf table is bit-identical everywhere.
MEMTOUCH_CFLAGS = ("-std=c11", "-O2", "-static", "-ffp-contract=off", "-Wall", "-Wextra", "-Werror")
MEMTOUCH_FORMAT_VERSION = 1
# With this flag memtouch waits after its regions line and after each epoch line but the last until it is sent
# RELEASE_SIGNAL (a name for the guest daemon's kill), so the host sets up before epoch 0 and acts on an epoch
# before the next one begins. One release per line: only one can be pending, so a second sent early is lost.
BARRIER_FLAG = "--barrier"
RELEASE_SIGNAL = "USR1"

Counts = npt.NDArray[np.int64]


# ---- the program's input ----


def memtouch_input(workload: Workload) -> str:
    """The spec in memtouch's line format (documented at the top of memtouch.c)."""
    lines = [f"memtouch version={MEMTOUCH_FORMAT_VERSION}",
             f"# workload {workload.name}",
             f"run seed={workload.seed} epoch_us={workload.epoch_us} slices={workload.slices}"]
    lines += [f"region name={r.name} size={r.size} chunk={r.chunk} pattern={r.pattern}" for r in workload.regions]
    for phase in workload.phases:
        lines.append(f"phase epochs={phase.epochs}  # {phase.name}")
        lines += [_access_line(region, accesses) for region, accesses in zip(workload.regions, phase.accesses,
                                                                             strict=True)]
    return "\n".join(lines) + "\n"


def _access_line(region: Region, accesses: Accesses) -> str:
    line = f"access region={region.name} count={accesses.per_epoch} write={accesses.write_fraction!r}"
    if region.pattern is Pattern.ZIPF:
        line += (f" exponent={accesses.exponent!r} hot_offset={accesses.hot_offset // PAGE_SIZE}"
                 f" hot_drift={accesses.hot_drift // PAGE_SIZE}")
    elif region.pattern is Pattern.SEQUENTIAL:
        line += f" stride={accesses.stride}"
    return line


# ---- the program's output: ground truth ----


class MemtouchOutputError(ValueError):
    """memtouch printed something that is not its documented output."""


@dataclass(frozen=True)
class RegionLayout:
    """Where a region lies in the workload's address space."""

    name: str
    pattern: Pattern
    address: int
    size: int
    chunk: int
    pages: int
    chunks: int


@dataclass(frozen=True)
class EpochCounts:
    """What memtouch did in one epoch: reads and writes per region (layout order) and chunk."""

    epoch: int
    phase: int
    start_us: int  # CLOCK_MONOTONIC in the guest
    end_us: int
    busy_us: int
    wait_us: int  # held at the barrier before the epoch began: start_us = previous end_us + wait_us
    late: bool  # the accesses took longer than the epoch (none were dropped)
    reads: tuple[Counts, ...]
    writes: tuple[Counts, ...]


@dataclass(frozen=True)
class GroundTruth:
    pid: int
    seed: int
    epoch_us: int
    regions: tuple[RegionLayout, ...]
    epochs: tuple[EpochCounts, ...]
    finished: bool  # memtouch ran every epoch and said so

    def region_index(self, name: str) -> int:
        for index, region in enumerate(self.regions):
            if region.name == name:
                return index
        raise KeyError(name)

    def reads(self, name: str) -> Counts:
        """Reads of region ``name`` as an array [epoch, chunk]."""
        index = self.region_index(name)
        return self._stacked([epoch.reads[index] for epoch in self.epochs], index)

    def writes(self, name: str) -> Counts:
        """Writes of region ``name`` as an array [epoch, chunk]."""
        index = self.region_index(name)
        return self._stacked([epoch.writes[index] for epoch in self.epochs], index)

    def _stacked(self, per_epoch: list[Counts], index: int) -> Counts:
        return np.stack(per_epoch) if per_epoch else np.zeros((0, self.regions[index].chunks), dtype=np.int64)


class OutputReader:
    """Reads memtouch's output line by line, as it arrives, checking each line.

    Lines (JSON objects, documented at the top of memtouch.c):
    ``{"type":"regions",...}`` first, then ``{"type":"epoch",...,"reads":[[..],..],"writes":[[..],..]}``
    once per epoch, then ``{"type":"done","epochs":N,"late_epochs":N}``.
    """

    def __init__(self) -> None:
        self._header: dict[str, Any] | None = None
        self._regions: tuple[RegionLayout, ...] = ()
        self._epochs: list[EpochCounts] = []
        self._finished = False
        self._line = 0

    def feed(self, text: str) -> EpochCounts | None:
        """Takes one line; returns the epoch it reports, if it reports one."""
        self._line += 1
        line = self._object(text)
        kind = line.get("type")
        if self._finished:
            raise self._error("output continues after the 'done' line")
        if kind == "regions" and self._header is None:
            self._header = line
            self._regions = tuple(self._layout(region) for region in self._list(line, "regions"))
            return None
        if self._header is None:
            raise self._error(f"expected the 'regions' line first, got {kind!r}")
        if kind == "epoch":
            epoch = self._epoch(line)
            self._epochs.append(epoch)
            return epoch
        if kind == "done":
            if self._int(line, "epochs") != len(self._epochs):
                raise self._error(f"'done' reports {line['epochs']} epochs, {len(self._epochs)} were printed")
            self._finished = True
            return None
        raise self._error(f"unexpected line type {kind!r}")

    @property
    def finished(self) -> bool:
        """memtouch has printed its 'done' line."""
        return self._finished

    def result(self) -> GroundTruth:
        if self._header is None:
            raise MemtouchOutputError("memtouch printed no 'regions' line")
        return GroundTruth(pid=self._int(self._header, "pid"), seed=self._int(self._header, "seed"),
                           epoch_us=self._int(self._header, "epoch_us"), regions=self._regions,
                           epochs=tuple(self._epochs), finished=self._finished)

    def _object(self, text: str) -> dict[str, Any]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError as error:
            raise self._error(f"not JSON: {error.msg}") from None
        if not isinstance(value, dict):
            raise self._error("expected a JSON object")
        return value

    def _layout(self, value: Any) -> RegionLayout:
        if not isinstance(value, dict):
            raise self._error("expected each region to be an object")
        name = value.get("name")
        if not isinstance(name, str):
            raise self._error("each region needs a name")
        try:
            pattern = choice(Pattern)(value.get("pattern"))
        except ValueError as error:
            raise self._error(f"pattern: {error}") from None
        return RegionLayout(name=name, pattern=pattern, address=self._int(value, "address"),
                            size=self._int(value, "size"), chunk=self._int(value, "chunk"),
                            pages=self._int(value, "pages"), chunks=self._int(value, "chunks"))

    def _epoch(self, line: dict[str, Any]) -> EpochCounts:
        number = self._int(line, "epoch")
        if number != len(self._epochs):
            raise self._error(f"expected epoch {len(self._epochs)}, got {number}")
        if not isinstance(line.get("late"), bool):
            raise self._error("'late' must be true or false")
        return EpochCounts(epoch=number, phase=self._int(line, "phase"), start_us=self._int(line, "start_us"),
                           end_us=self._int(line, "end_us"), busy_us=self._int(line, "busy_us"),
                           # Lines of a memtouch without the barrier lack it.
                           wait_us=self._int(line, "wait_us") if "wait_us" in line else 0,
                           late=line["late"], reads=self._counts(line, "reads"), writes=self._counts(line, "writes"))

    def _counts(self, line: dict[str, Any], key: str) -> tuple[Counts, ...]:
        per_region = self._list(line, key)
        if len(per_region) != len(self._regions):
            raise self._error(f"'{key}' has {len(per_region)} regions, expected {len(self._regions)}")
        counts = []
        for region, values in zip(self._regions, per_region, strict=True):
            if not isinstance(values, list) or len(values) != region.chunks or not all(
                    type(v) is int and v >= 0 for v in values):
                raise self._error(f"'{key}' of region {region.name!r} must be {region.chunks} counts")
            counts.append(np.array(values, dtype=np.int64))
        return tuple(counts)

    def _list(self, line: dict[str, Any], key: str) -> list[Any]:
        value = line.get(key)
        if not isinstance(value, list):
            raise self._error(f"'{key}' must be a list")
        return value

    def _int(self, line: dict[str, Any], key: str) -> int:
        value = line.get(key)
        if type(value) is not int or value < 0:
            raise self._error(f"'{key}' must be a whole number, got {value!r}")
        return value

    def _error(self, problem: str) -> MemtouchOutputError:
        return MemtouchOutputError(f"memtouch output line {self._line}: {problem}")


def parse_output(lines: Iterable[str]) -> GroundTruth:
    reader = OutputReader()
    for line in lines:
        if line.strip():
            reader.feed(line)
    return reader.result()


# ---- building the program ----


class MemtouchBuildError(UserError):
    """memtouch could not be compiled on this host."""


def build_memtouch(out_dir: Path, compiler: str = "gcc") -> Path:
    """A static memtouch binary in ``out_dir``, compiled once per source and flags.

    The binary runs in the guest unchanged; its name carries the hash, so a
    changed source never reuses a stale build.
    """
    source = MEMTOUCH_SOURCE.read_bytes()
    digest = hashlib.sha256(source + " ".join((compiler, *MEMTOUCH_CFLAGS)).encode()).hexdigest()[:16]
    target = out_dir / f"memtouch-{digest}"
    if target.exists():
        return target
    out_dir.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f"{target.name}.partial-{os.getpid()}")
    # The exact bytes hashed are compiled (from stdin), so the name cannot lie about the content.
    command = [compiler, *MEMTOUCH_CFLAGS, "-x", "c", "-o", str(partial), "-"]
    try:
        result = subprocess.run(command, input=source, capture_output=True, check=False)
    except FileNotFoundError:
        raise MemtouchBuildError(f"cannot build memtouch: no {compiler!r} (install gcc and libc6-dev)") from None
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise MemtouchBuildError(f"cannot build memtouch from {MEMTOUCH_SOURCE} (a static build needs "
                                 f"libc6-dev):\n{result.stderr.decode(errors='replace').strip()}")
    partial.replace(target)
    return target
