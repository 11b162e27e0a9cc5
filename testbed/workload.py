"""Workloads: named memory regions, how often and how each is accessed, phase by phase.

A workload spec (YAML in ``experiments/workloads/``, or embedded in an
experiment) is read and checked here, into frozen records; :mod:`testbed.memtouch`
turns it into the input of ``memtouch`` (guest/workloads/memtouch.c), which
performs exactly those accesses in the guest and reports, per epoch, region and
chunk, the reads and writes it did: the ground truth the score is computed from
(:mod:`testbed.score`).

Spec format::

    name: hot-cold
    description: What the workload models and what a good placement does.
    seed: 1                 # optional (0); same seed, same per-chunk counts
    epoch: 1s               # optional (1s); accesses are counted per epoch
    slice: 10ms             # optional (10ms or the epoch): accesses are paced per slice of an epoch
    chunk: 2MiB             # optional (2MiB, a power of two); ground-truth granularity
    regions:                # mapped and first touched in this order
      - name: index
        size: 64MiB
        pattern: zipf       # uniform | zipf | sequential | chase
        accesses: 2000000   # per epoch
        write_fraction: 0.1 # optional (0): share of the accesses that are stores
        exponent: 1.0       # zipf only (1.0): P(page of rank k) ~ 1/(k+1)^exponent
        hot_offset: 0MiB    # zipf only (0): where rank 0 lies in the region
        hot_drift: 0MiB     # zipf only (0): how far the hot set moves each epoch
        stride: 64B         # sequential only (64B, a multiple of 8)
        chunk: 2MiB         # optional, overrides the workload's chunk
        description: A hash index probed by key.   # optional, for program-aware hints
        holds: secrets      # optional, for the score only: secrets | durable (testbed.model.HeldData)
    phases:                 # run in order
      - name: warm-up       # optional (phaseN)
        epochs: 10
        regions:            # optional: per-region changes, relative to the region's own fields
          index: {accesses: 20000, write_fraction: 0.5}
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from testbed.catalog import REPO_ROOT
from testbed.errors import ConfigError
from testbed.model import PAGE_SIZE, HeldData
from testbed.units import format_size, parse_latency, parse_size
from testbed.yamlfields import Fields, choice, load_yaml, named_file, whole

WORKLOADS_DIR = REPO_ROOT / "experiments" / "workloads"

# Limits memtouch enforces too (see its spec reader).
MAX_REGIONS = 64
MAX_REGION_SIZE = 64 * 2**30
MAX_ACCESSES_PER_EPOCH = 2**40
MAX_PHASE_EPOCHS = 2**32 - 1
MAX_SEED = 2**64 - 1
MAX_SLICES = 100_000
MIN_EPOCH_US = 1000
MAX_EPOCH_US = 3600 * 10**6
REGION_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
DEFAULT_EPOCH_US = 1_000_000
DEFAULT_SLICE_US = 10_000
DEFAULT_CHUNK = 2 * 2**20
CACHE_LINE = 64


class Pattern(StrEnum):
    UNIFORM = "uniform"
    ZIPF = "zipf"
    SEQUENTIAL = "sequential"
    CHASE = "chase"


@dataclass(frozen=True)
class Accesses:
    """What one region does in each epoch of a phase."""

    per_epoch: int
    write_fraction: float = 0.0
    exponent: float = 1.0  # zipf
    hot_offset: int = 0  # zipf: bytes from the region's start to the page of rank 0
    hot_drift: int = 0  # zipf: bytes the hot set moves per epoch
    stride: int = CACHE_LINE  # sequential: bytes


@dataclass(frozen=True)
class Region:
    name: str
    size: int  # bytes
    chunk: int  # bytes; ground truth is counted per chunk
    pattern: Pattern
    accesses: Accesses  # as the region defines it; phases may change it
    description: str | None = None
    holds: HeldData | None = None  # for the score only: no policy is told (see testbed.model.HeldData)

    @property
    def pages(self) -> int:
        return self.size // PAGE_SIZE

    @property
    def chunks(self) -> int:
        return -(-self.size // self.chunk)


@dataclass(frozen=True)
class Phase:
    name: str
    epochs: int
    accesses: tuple[Accesses, ...]  # one per region, in region order


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    seed: int
    epoch_us: int
    slices: int  # per epoch
    regions: tuple[Region, ...]
    phases: tuple[Phase, ...]
    source: Path | None = None

    @property
    def footprint(self) -> int:
        """Bytes the regions occupy once touched."""
        return sum(region.size for region in self.regions)

    @property
    def epochs(self) -> int:
        return sum(phase.epochs for phase in self.phases)

    @property
    def epoch_seconds(self) -> float:
        return self.epoch_us / 1e6


# ---- reading the spec ----


def workload_path(name_or_path: str, base_dir: Path = Path()) -> Path:
    """A workload named in ``experiments/workloads/``, or a path (relative to ``base_dir``) to a workload file."""
    return named_file(name_or_path, WORKLOADS_DIR, "workload", base_dir)


def load_workload(path: Path, memory_limit: int | None = None) -> Workload:
    return parse_workload(load_yaml(path), path, memory_limit=memory_limit)


def resolve_workload(fields: Fields, key: str, memory_limit: int | None = None) -> Workload:
    """An experiment's workload field: a workload's name, a path relative to the
    experiment file, or the workload spec itself."""
    value = fields.raw(key)
    if isinstance(value, str):
        return load_workload(workload_path(value, fields.path.parent), memory_limit)
    return parse_workload(value, fields.path, fields.where(key), memory_limit)


def parse_workload(data: object, path: Path, prefix: str = "", memory_limit: int | None = None) -> Workload:
    """A workload from parsed YAML; ``memory_limit`` bounds each region and their total."""
    fields = Fields(data, path, prefix)
    name = fields.text("name")
    description = fields.text("description")
    seed = fields.get("seed", _whole_up_to(0, MAX_SEED), 0)
    epoch_us = fields.get("epoch", _microseconds(MIN_EPOCH_US, MAX_EPOCH_US), DEFAULT_EPOCH_US)
    slice_us = fields.get("slice", _microseconds(1, MAX_EPOCH_US), min(DEFAULT_SLICE_US, epoch_us))
    if slice_us > epoch_us:
        raise fields.error("slice", f"must not be longer than the epoch ({epoch_us}us), got {slice_us}us")
    chunk = fields.get("chunk", _chunk_size, DEFAULT_CHUNK)
    regions = _regions(fields, chunk, memory_limit)
    phases = _phases(fields, regions)
    fields.done()
    return Workload(name=name, description=description, seed=seed, epoch_us=epoch_us,
                    slices=min(MAX_SLICES, max(1, round(epoch_us / slice_us))),
                    regions=regions, phases=phases, source=path)


def _regions(fields: Fields, default_chunk: int, memory_limit: int | None) -> tuple[Region, ...]:
    regions: list[Region] = []
    for _, value, where in fields.items("regions"):
        region = _region(Fields(value, fields.path, where), default_chunk, memory_limit)
        if any(other.name == region.name for other in regions):
            raise ConfigError(fields.path, f"{where}.name", f"region {region.name!r} is defined twice")
        regions.append(region)
    if not 1 <= len(regions) <= MAX_REGIONS:
        raise fields.error("regions", f"expected 1 to {MAX_REGIONS} regions, got {len(regions)}")
    total = sum(region.size for region in regions)
    if memory_limit is not None and total > memory_limit:
        raise fields.error("regions", f"the regions total {format_size(total)}, more than the limit "
                           f"of {format_size(memory_limit)}")
    return tuple(regions)


def _region(fields: Fields, default_chunk: int, memory_limit: int | None) -> Region:
    name = fields.get("name", _region_name)
    size = fields.get("size", _region_size)
    if memory_limit is not None and size > memory_limit:
        raise fields.error("size", f"{format_size(size)} is more than the limit of {format_size(memory_limit)}")
    pattern = fields.get("pattern", choice(Pattern))
    fields.raw("accesses")  # required here; phases may leave it out
    accesses = _changed_accesses(fields, pattern, size, Accesses(per_epoch=0))
    region = Region(name=name, size=size, chunk=fields.get("chunk", _chunk_size, default_chunk), pattern=pattern,
                    accesses=accesses, description=fields.text("description", None),
                    holds=fields.get("holds", choice(HeldData), None))
    fields.done()
    return region


def _changed_accesses(fields: Fields, pattern: Pattern, size: int, base: Accesses) -> Accesses:
    """``base`` with the access fields that ``fields`` gives (those of other patterns are errors)."""
    changes: dict[str, Any] = {}
    for key, (attribute, owner, parse) in _access_fields(size).items():
        if fields.has(key) and owner not in (None, pattern):
            raise fields.error(key, f"applies to {owner} regions only (this region is {pattern})")
        value = fields.get(key, parse, None)
        if value is not None:
            changes[attribute] = value
    return replace(base, **changes)


def _access_fields(size: int) -> dict[str, tuple[str, Pattern | None, Callable[[Any], Any]]]:
    """YAML key -> (Accesses attribute, the pattern it belongs to or None for all, parser)."""
    return {
        "accesses": ("per_epoch", None, _whole_up_to(0, MAX_ACCESSES_PER_EPOCH)),
        "write_fraction": ("write_fraction", None, _fraction),
        "exponent": ("exponent", Pattern.ZIPF, _exponent),
        "hot_offset": ("hot_offset", Pattern.ZIPF, _page_offset(size)),
        "hot_drift": ("hot_drift", Pattern.ZIPF, _page_offset(size)),
        "stride": ("stride", Pattern.SEQUENTIAL, _stride(size)),
    }


def _phases(fields: Fields, regions: tuple[Region, ...]) -> tuple[Phase, ...]:
    phases: list[Phase] = []
    for index, value, where in fields.items("phases"):
        phase = Fields(value, fields.path, where)
        name = phase.text("name", f"phase{index}")
        epochs = phase.get("epochs", _whole_up_to(1, MAX_PHASE_EPOCHS))
        accesses = _phase_accesses(phase, regions) if phase.has("regions") else tuple(r.accesses for r in regions)
        phase.done()
        phases.append(Phase(name=name, epochs=epochs, accesses=accesses))
    if not phases:
        raise fields.error("phases", "needs at least one phase")
    return tuple(phases)


def _phase_accesses(phase: Fields, regions: tuple[Region, ...]) -> tuple[Accesses, ...]:
    changes = phase.raw("regions")
    if not isinstance(changes, dict):
        raise phase.error("regions", "expected a mapping of region name to changed fields")
    known = {region.name for region in regions}
    for name in changes:
        if name not in known:
            raise phase.error(f"regions.{name}", f"no region named {name!r} (regions: {', '.join(sorted(known))})")
    accesses = []
    for region in regions:
        if region.name not in changes:
            accesses.append(region.accesses)
            continue
        change = Fields(changes[region.name], phase.path, phase.where(f"regions.{region.name}"))
        accesses.append(_changed_accesses(change, region.pattern, region.size, region.accesses))
        change.done()
    return tuple(accesses)


def _region_name(value: Any) -> str:
    if not isinstance(value, str) or not REGION_NAME.match(value):
        raise ValueError(f"expected 1-63 letters, digits, '_', '.' or '-', got {value!r}")
    return value


def _region_size(value: Any) -> int:
    size = parse_size(value)
    if size <= 0 or size % PAGE_SIZE or size > MAX_REGION_SIZE:
        raise ValueError(f"expected a positive multiple of 4KiB up to {format_size(MAX_REGION_SIZE)}, got {value!r}")
    return size


def _chunk_size(value: Any) -> int:
    size = parse_size(value)
    if size < PAGE_SIZE or size & (size - 1):
        raise ValueError(f"expected a power of two of at least 4KiB, got {value!r}")
    return size


def _whole_up_to(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        number = whole(minimum)(value)
        if number > maximum:
            raise ValueError(f"expected at most {maximum}, got {value!r}")
        return number

    return parse


def _fraction(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
        raise ValueError(f"expected a fraction from 0 to 1, got {value!r}")
    return float(value)


def _exponent(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.001 <= value <= 100:
        raise ValueError(f"expected a zipf exponent from 0.001 to 100, got {value!r}")
    return float(value)


def _page_offset(region_size: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        offset = parse_size(value)
        if offset % PAGE_SIZE or offset >= region_size:
            raise ValueError(f"expected a multiple of 4KiB below the region's size "
                             f"({format_size(region_size)}), got {value!r}")
        return offset

    return parse


def _stride(region_size: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        stride = parse_size(value)
        if stride <= 0 or stride % 8 or stride > region_size:
            raise ValueError(f"expected a multiple of 8 bytes up to the region's size, got {value!r}")
        return stride

    return parse


def _microseconds(minimum: int, maximum: int) -> Callable[[Any], int]:
    def parse(value: Any) -> int:
        nanoseconds = parse_latency(value)
        if nanoseconds % 1000 or not minimum * 1000 <= nanoseconds <= maximum * 1000:
            raise ValueError(f"expected a whole number of microseconds from {minimum}us to "
                             f"{maximum // 10**6}s, got {value!r}")
        return int(nanoseconds // 1000)

    return parse
