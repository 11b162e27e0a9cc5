"""The workload spec: parsing, errors naming file and field, and the memtouch input it makes."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from testbed.errors import ConfigError
from testbed.memtouch import memtouch_input
from testbed.model import HeldData
from testbed.units import MIB
from testbed.workload import (
    WORKLOADS_DIR,
    Accesses,
    Pattern,
    Workload,
    load_workload,
    parse_workload,
    resolve_workload,
    workload_path,
)
from testbed.yamlfields import Fields

SPEC_PATH = Path("w.yaml")
GUEST_DRAM_SPARE = 768 * MIB
FULL_SPEC = """
name: two-indexes
description: Hot set moves from a to b.
seed: 9
epoch: 500ms
chunk: 1MiB
regions:
  - name: a
    size: 16MiB
    pattern: zipf
    exponent: 1.2
    accesses: 1000
    write_fraction: 0.25
    description: A hash index.
  - name: log
    size: 8MiB
    pattern: sequential
    stride: 128B
    accesses: 500
    chunk: 4MiB
    holds: durable
phases:
  - epochs: 3
  - name: moved
    epochs: 2
    regions:
      a: {accesses: 10, hot_offset: 4MiB, hot_drift: 1MiB}
"""


def minimal(**region: Any) -> dict[str, Any]:
    fields = {"name": "hot", "size": "8MiB", "pattern": "zipf", "accesses": 1000, **region}
    return {"name": "t", "description": "a test workload", "regions": [fields], "phases": [{"epochs": 2}]}


def parse(data: Any, memory_limit: int | None = None) -> Workload:
    return parse_workload(data, SPEC_PATH, memory_limit=memory_limit)


def with_changes(data: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    """A copy of ``data`` with the item at ``path`` set to ``value``."""
    changed = copy.deepcopy(data)
    target: Any = changed
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    return changed


def test_full_spec_is_read_into_typed_fields() -> None:
    workload = parse(yaml.safe_load(FULL_SPEC))
    a, log = workload.regions
    assert (workload.seed, workload.epoch_us, workload.slices) == (9, 500_000, 50)
    assert (a.size, a.chunk, a.pattern, a.description) == (16 * MIB, MIB, Pattern.ZIPF, "A hash index.")
    assert a.accesses == Accesses(per_epoch=1000, write_fraction=0.25, exponent=1.2)
    assert (log.chunk, log.chunks, log.accesses.stride, log.description) == (4 * MIB, 2, 128, None)
    assert (a.holds, log.holds) == (None, HeldData.DURABLE)
    assert [phase.name for phase in workload.phases] == ["phase0", "moved"]
    assert workload.phases[0].accesses == (a.accesses, log.accesses)
    # A phase changes only what it names; the rest is the region's own definition.
    assert workload.phases[1].accesses[0] == Accesses(per_epoch=10, write_fraction=0.25, exponent=1.2,
                                                      hot_offset=4 * MIB, hot_drift=MIB)
    assert workload.phases[1].accesses[1] == log.accesses
    assert (workload.epochs, workload.footprint, workload.epoch_seconds) == (5, 24 * MIB, 0.5)


def test_defaults() -> None:
    workload = parse(minimal())
    region = workload.regions[0]
    assert (workload.seed, workload.epoch_us, workload.slices) == (0, 1_000_000, 100)
    assert (region.chunk, region.pages, region.chunks) == (2 * MIB, 2048, 4)
    assert region.accesses == Accesses(per_epoch=1000)
    assert parse({**minimal(), "epoch": "5ms"}).slices == 1  # the default slice never exceeds the epoch


BAD_SPECS = [
    (("colour",), "red", "w.yaml: colour: unknown field"),
    (("regions", 0, "colour"), "red", "regions[0].colour: unknown field"),
    (("regions", 0, "write_fraction"), 1.5, "regions[0].write_fraction: expected a fraction from 0 to 1"),
    (("regions", 0, "write_fraction"), True, "regions[0].write_fraction: expected a fraction"),
    (("regions", 0, "exponent"), 0, "regions[0].exponent: expected a zipf exponent"),
    (("regions", 0, "stride"), "64B", "regions[0].stride: applies to sequential regions only (this region is zipf)"),
    (("regions", 0, "hot_offset"), "8MiB", "regions[0].hot_offset: expected a multiple of 4KiB below"),
    (("regions", 0, "hot_drift"), "6KiB", "regions[0].hot_drift: expected a multiple of 4KiB"),
    (("regions", 0, "size"), "6KiB", "regions[0].size: expected a positive multiple of 4KiB"),
    (("regions", 0, "size"), 4096, "regions[0].size: expected a size with a unit"),
    (("regions", 0, "chunk"), "3MiB", "regions[0].chunk: expected a power of two"),
    (("regions", 0, "name"), "hot set", "regions[0].name: expected 1-63 letters"),
    (("regions", 0, "pattern"), "random", "regions[0].pattern: expected one of uniform, zipf, sequential, chase"),
    (("regions", 0, "holds"), "gold", "regions[0].holds: expected one of secrets, durable"),
    (("regions", 0, "accesses"), -1, "regions[0].accesses: expected a whole number >= 0"),
    (("regions", 0, "accesses"), 2**41, "regions[0].accesses: expected at most"),
    (("regions", 0, "description"), "", "regions[0].description: expected non-empty text"),
    (("epoch",), "500us", "epoch: expected a whole number of microseconds from 1000us to 3600s"),
    (("epoch",), "3601s", "epoch: expected a whole number of microseconds"),
    (("epoch",), "1500.5us", "epoch: expected a whole number of microseconds"),
    (("slice",), "2s", "slice: must not be longer than the epoch"),
    (("seed",), -1, "seed: expected a whole number >= 0"),
    (("phases",), [], "phases: needs at least one phase"),
    (("phases", 0, "epochs"), 0, "phases[0].epochs: expected a whole number >= 1"),
    (("phases", 0, "epochs"), 2**32, "phases[0].epochs: expected at most 4294967295"),
    (("seed",), 2**64, "seed: expected at most"),
    (("phases", 0, "regions"), {"cold": {"accesses": 1}}, "phases[0].regions.cold: no region named 'cold' "
                                                          "(regions: hot)"),
    (("phases", 0, "regions"), {"hot": {"pattern": "uniform"}}, "phases[0].regions.hot.pattern: unknown field"),
    (("phases", 0, "regions"), {"hot": {"stride": "8B"}}, "phases[0].regions.hot.stride: applies to sequential"),
    (("phases", 0, "regions"), {"hot": {"write_fraction": 2}}, "phases[0].regions.hot.write_fraction: expected a "
                                                               "fraction"),
    (("phases", 0, "regions"), ["hot"], "phases[0].regions: expected a mapping"),
    (("regions",), [], "regions: expected 1 to 64 regions, got 0"),
]


@pytest.mark.parametrize(("path", "value", "message"), BAD_SPECS, ids=[case[2].split(":")[0] for case in BAD_SPECS])
def test_bad_spec_names_file_and_field(path: tuple[str | int, ...], value: Any, message: str) -> None:
    with pytest.raises(ConfigError) as error:
        parse(with_changes(minimal(), path, value))
    assert message in str(error.value)
    assert str(error.value).startswith("w.yaml: ")


def test_missing_required_fields_are_named() -> None:
    data = minimal()
    del data["regions"][0]["accesses"]
    with pytest.raises(ConfigError, match=r"regions\[0\]\.accesses: missing"):
        parse(data)
    with pytest.raises(ConfigError, match="description: missing"):
        parse({key: value for key, value in minimal().items() if key != "description"})


def test_unknown_field_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as error:
        parse(minimal(colour="red"))
    for known in ("accesses", "exponent", "hot_drift", "stride", "write_fraction", "description"):
        assert known in error.value.problem


def test_duplicate_region_names() -> None:
    data = minimal()
    data["regions"].append(dict(data["regions"][0]))
    with pytest.raises(ConfigError, match=r"regions\[1\]\.name: region 'hot' is defined twice"):
        parse(data)


def test_memory_limit_bounds_each_region_and_the_total() -> None:
    data = minimal(size="64MiB")
    data["regions"].append({"name": "cold", "size": "64MiB", "pattern": "uniform", "accesses": 1})
    assert parse(data, memory_limit=128 * MIB).footprint == 128 * MIB
    with pytest.raises(ConfigError, match=r"regions: the regions total 128MiB, more than the limit of 100MiB"):
        parse(data, memory_limit=100 * MIB)
    with pytest.raises(ConfigError, match=r"regions\[0\]\.size: 64MiB is more than the limit of 32MiB"):
        parse(data, memory_limit=32 * MIB)


def test_embedded_spec_errors_carry_the_prefix() -> None:
    with pytest.raises(ConfigError, match=r"^exp\.yaml: workload\.regions\[0\]\.size: "):
        parse_workload(minimal(size="1KiB"), Path("exp.yaml"), prefix="workload")


def test_resolve_workload_by_name_path_or_inline(tmp_path: Path) -> None:
    (tmp_path / "mine.yaml").write_text(yaml.safe_dump(minimal()))
    experiment = {"by_name": "hot-cold", "by_path": "mine.yaml", "inline": minimal(size="4MiB")}
    fields = Fields(experiment, tmp_path / "experiment.yaml")
    assert resolve_workload(fields, "by_name").name == "hot-cold"
    assert resolve_workload(fields, "by_path").source == tmp_path / "mine.yaml"
    inline = resolve_workload(fields, "inline")
    assert (inline.regions[0].size, inline.source) == (4 * MIB, tmp_path / "experiment.yaml")
    with pytest.raises(ConfigError, match=r"no workload named 'nope' \(known: .*hot-cold"):
        workload_path("nope")


EXAMPLES = sorted(WORKLOADS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_examples_fit_the_guests(path: Path) -> None:
    workload = load_workload(path, memory_limit=1536 * MIB)
    assert workload.name == path.stem
    assert all(region.description for region in workload.regions)
    # A placement problem: more than a 1GiB DRAM node can spare next to the guest's kernel.
    assert workload.footprint > GUEST_DRAM_SPARE


def test_hot_cold_example_moves_the_hot_set() -> None:
    workload = load_workload(workload_path("hot-cold"))
    a, b = (workload.regions.index(r) for r in workload.regions if r.name in ("a", "b"))
    hot = [max((a, b), key=lambda index: phase.accesses[index].per_epoch) for phase in workload.phases]
    assert hot == [a, b, a]


def test_memtouch_input_lines() -> None:
    text = memtouch_input(parse(yaml.safe_load(FULL_SPEC)))
    statements = [line.split("#")[0].strip() for line in text.splitlines() if line.split("#")[0].strip()]
    assert statements == [
        "memtouch version=1",
        "run seed=9 epoch_us=500000 slices=50",
        "region name=a size=16777216 chunk=1048576 pattern=zipf",
        "region name=log size=8388608 chunk=4194304 pattern=sequential",
        "phase epochs=3",
        "access region=a count=1000 write=0.25 exponent=1.2 hot_offset=0 hot_drift=0",
        "access region=log count=500 write=0.0 stride=128",
        "phase epochs=2",
        "access region=a count=10 write=0.25 exponent=1.2 hot_offset=1024 hot_drift=256",
        "access region=log count=500 write=0.0 stride=128",
    ]
