"""memtouch compiled natively on the host and run on short specs: it does and reports what the spec says."""

from __future__ import annotations

import signal
import struct
import subprocess
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.workload import (
    WORKLOADS_DIR,
    GroundTruth,
    MemtouchBuildError,
    Workload,
    build_memtouch,
    load_workload,
    memtouch_input,
    parse_output,
    parse_workload,
)

MiB = 2**20
PAGE = 4096
LINE = 64
ELF_PT_INTERP = 3


@pytest.fixture(scope="session")
def memtouch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_memtouch(tmp_path_factory.mktemp("memtouch"))


def workload(*regions: dict[str, Any], phases: list[dict[str, Any]] | None = None, seed: int = 1,
             epoch: str = "50ms") -> Workload:
    return parse_workload({"name": "test", "description": "a test workload", "seed": seed, "epoch": epoch,
                           "regions": list(regions), "phases": phases or [{"epochs": 2}]},
                          Path("test.yaml"))


def region(name: str, pattern: str, accesses: int, size: str = "4MiB", chunk: str = "1MiB",
           **fields: Any) -> dict[str, Any]:
    return {"name": name, "size": size, "chunk": chunk, "pattern": pattern, "accesses": accesses, **fields}


def run(binary: Path, spec: Workload) -> GroundTruth:
    result = subprocess.run([str(binary)], input=memtouch_input(spec), capture_output=True, text=True,
                            timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    truth = parse_output(result.stdout.splitlines())
    assert truth.finished
    return truth


def totals(truth: GroundTruth, name: str) -> Any:
    return truth.reads(name) + truth.writes(name)


def test_build_is_static_and_cached(memtouch: Path) -> None:
    modified = memtouch.stat().st_mtime_ns
    assert build_memtouch(memtouch.parent) == memtouch
    assert memtouch.stat().st_mtime_ns == modified
    assert ELF_PT_INTERP not in elf_segment_types(memtouch.read_bytes())  # no dynamic loader: static


def elf_segment_types(image: bytes) -> set[int]:
    assert image[:4] == b"\x7fELF"
    (table,) = struct.unpack_from("<Q", image, 0x20)
    size, count = struct.unpack_from("<HH", image, 0x36)
    return {struct.unpack_from("<I", image, table + index * size)[0] for index in range(count)}


def test_build_without_a_compiler_says_what_to_install(tmp_path: Path) -> None:
    with pytest.raises(MemtouchBuildError, match="install gcc and libc6-dev"):
        build_memtouch(tmp_path, compiler="no-such-compiler")
    assert not any(tmp_path.iterdir())


def test_counts_equal_the_spec_in_every_epoch_region_and_phase(memtouch: Path) -> None:
    spec = workload(region("u", "uniform", 30_000), region("z", "zipf", 20_000, write_fraction=0.5),
                    region("s", "sequential", 10_000), region("c", "chase", 5_000, write_fraction=0.1),
                    phases=[{"epochs": 2}, {"epochs": 1, "regions": {"u": {"accesses": 7}, "c": {"accesses": 0}}}])
    truth = run(memtouch, spec)
    assert [epoch.phase for epoch in truth.epochs] == [0, 0, 1]
    for name, expected in (("u", [30_000, 30_000, 7]), ("z", [20_000] * 3), ("s", [10_000] * 3),
                           ("c", [5_000, 5_000, 0])):
        assert totals(truth, name).sum(axis=1).tolist() == expected, name


def test_regions_line_describes_the_mappings(memtouch: Path) -> None:
    truth = run(memtouch, workload(region("a", "uniform", 1, size="6MiB", chunk="4MiB"),
                                   region("b", "chase", 1, size="64KiB", chunk="4KiB")))
    a, b = truth.regions
    assert (a.size, a.chunk, a.pages, a.chunks) == (6 * MiB, 4 * MiB, 1536, 2)
    assert (b.size, b.chunk, b.pages, b.chunks) == (64 * 1024, PAGE, 16, 16)
    assert a.address % (2 * MiB) == 0 and b.address % (2 * MiB) == 0
    assert truth.reads("a").shape == (2, 2)


def test_epochs_follow_each_other_at_the_interval(memtouch: Path) -> None:
    truth = run(memtouch, workload(region("a", "uniform", 1000), phases=[{"epochs": 3}]))
    for before, after in zip(truth.epochs, truth.epochs[1:], strict=False):
        assert after.start_us == before.end_us
    for epoch in truth.epochs:
        assert epoch.late or epoch.end_us - epoch.start_us == 50_000
        assert epoch.busy_us <= epoch.end_us - epoch.start_us


def test_a_late_epoch_is_reported_and_keeps_all_its_accesses(memtouch: Path) -> None:
    # A pointer chase through 16MiB takes far longer than 1ms per million steps.
    truth = run(memtouch, workload(region("c", "chase", 1_000_000, size="16MiB"), epoch="1ms"))
    assert all(epoch.late for epoch in truth.epochs)
    assert totals(truth, "c").sum(axis=1).tolist() == [1_000_000, 1_000_000]
    assert all(epoch.end_us - epoch.start_us >= epoch.busy_us > 1000 for epoch in truth.epochs)


@pytest.mark.parametrize("pattern", ["uniform", "zipf", "sequential", "chase"])
def test_same_seed_same_counts_other_seed_other_counts(memtouch: Path, pattern: str) -> None:
    spec = workload(region("r", pattern, 50_000, write_fraction=0.3), seed=5)
    first, again, other = run(memtouch, spec), run(memtouch, spec), run(memtouch, replace(spec, seed=6))
    for kind in ("reads", "writes"):
        assert np.array_equal(getattr(first, kind)("r"), getattr(again, kind)("r"))
    # A sequential walk does not depend on the seed; the random patterns must.
    assert np.array_equal(totals(first, "r"), totals(other, "r")) == (pattern == "sequential")


def zipf_chunk_shares(pages: int, pages_per_chunk: int, exponent: float, hot_page: int = 0) -> Any:
    weights = np.roll(np.arange(1, pages + 1, dtype=float) ** -exponent, hot_page)
    return weights.reshape(-1, pages_per_chunk).sum(axis=1) / weights.sum()


def within_binomial_error(observed: Any, total: int, shares: Any) -> bool:
    expected = total * shares
    return bool(np.all(np.abs(observed - expected) <= 5 * np.sqrt(expected * (1 - shares)) + 1))


def test_zipf_follows_its_distribution_from_the_first_page(memtouch: Path) -> None:
    truth = run(memtouch, workload(region("z", "zipf", 200_000, size="16MiB", exponent=1.2)))
    counts = totals(truth, "z")
    assert counts[:, 0].min() > 0.8 * 200_000
    for epoch in counts:
        assert within_binomial_error(epoch, 200_000, zipf_chunk_shares(4096, 256, 1.2))


def test_zipf_hot_offset_and_drift_move_the_hot_set(memtouch: Path) -> None:
    spec = workload(region("z", "zipf", 100_000, size="16MiB", exponent=1.5, hot_offset="8MiB", hot_drift="1MiB"),
                    phases=[{"epochs": 4}])
    counts = totals(run(memtouch, spec), "z")
    assert counts.argmax(axis=1).tolist() == [8, 9, 10, 11]
    assert within_binomial_error(counts[2], 100_000, zipf_chunk_shares(4096, 256, 1.5, hot_page=2560))


def test_sequential_covers_chunks_evenly_and_resumes_where_it_stopped(memtouch: Path) -> None:
    half_region = 4 * MiB // 2 // LINE
    counts = totals(run(memtouch, workload(region("s", "sequential", half_region), phases=[{"epochs": 3}])), "s")
    per_chunk = MiB // LINE
    assert counts.tolist() == [[per_chunk, per_chunk, 0, 0], [0, 0, per_chunk, per_chunk],
                               [per_chunk, per_chunk, 0, 0]]
    strided = totals(run(memtouch, workload(region("s", "sequential", 4 * MiB // 256, stride="256B"))), "s")
    assert strided.tolist() == [[MiB // 256] * 4] * 2


def test_chase_visits_every_line_once_per_cycle(memtouch: Path) -> None:
    lines = 4 * MiB // LINE
    counts = totals(run(memtouch, workload(region("c", "chase", lines))), "c")
    assert counts.tolist() == [[MiB // LINE] * 4] * 2


def test_uniform_spreads_evenly(memtouch: Path) -> None:
    counts = totals(run(memtouch, workload(region("u", "uniform", 160_000, size="16MiB"))), "u")
    assert all(within_binomial_error(epoch, 160_000, np.full(16, 1 / 16)) for epoch in counts)


@pytest.mark.parametrize("fraction", [0.0, 0.3, 0.999, 1.0])
@pytest.mark.parametrize("pattern", ["zipf", "chase"])
def test_write_fraction_holds_to_one_access_per_epoch(memtouch: Path, pattern: str, fraction: float) -> None:
    truth = run(memtouch, workload(region("r", pattern, 12_345, write_fraction=fraction)))
    writes = truth.writes("r").sum(axis=1)
    assert (writes + truth.reads("r").sum(axis=1)).tolist() == [12_345, 12_345]
    assert np.all(np.abs(writes - fraction * 12_345) <= 1)


def test_write_fraction_holds_per_chunk(memtouch: Path) -> None:
    truth = run(memtouch, workload(region("u", "uniform", 100_000, write_fraction=0.25)))
    share = truth.writes("u") / totals(truth, "u")
    assert np.all(np.abs(share - 0.25) < 0.02)


BAD_INPUTS = [
    ("region name=a size=100 chunk=4096 pattern=zipf", "line 3: key 'size' must be a whole number from 4096"),
    ("region name=a size=4096 chunk=12288 pattern=zipf", "line 3: size must be a multiple of 4096 and chunk a power"),
    ("region name=a size=4096 chunk=4096 pattern=random", "line 3: unknown pattern 'random'"),
    ("region name=a size=4096 chunk=4096 pattern=zipf\nphase epochs=1\naccess region=a count=1 stride=8",
     "line 5: unexpected key 'stride' for 'access'"),
    ("region name=a size=4096 chunk=4096 pattern=zipf\nphase epochs=1\naccess region=a count=1 write=1.5",
     "line 5: key 'write' must be a number from 0 to 1, got '1.5'"),
    ("region name=a size=4096 chunk=4096 pattern=zipf\nphase epochs=1\naccess region=b count=1",
     "line 5: no region named 'b'"),
    ("region name=a size=4096 chunk=4096 pattern=zipf\nphase epochs=1", "phase 0 has no 'access' line for region 'a'"),
    ("region name=a size=4096 chunk=4096 pattern=zipf\nregion name=a size=4096 chunk=4096 pattern=zipf",
     "line 4: region 'a' defined twice"),
    ("region name=a size=4096 pattern=zipf", "line 3: 'region' needs key 'chunk'"),
    ("region name=a size=-4096 chunk=4096 pattern=zipf", "key 'size' must be a whole number"),
    ("region name=a size=4096 chunk=4096 pattern=zipf oops", "line 3: expected key=value, got 'oops'"),
    ("bogus x=1", "line 3: unknown statement 'bogus'"),
    ("", "the spec ends before its first 'phase'"),
]


@pytest.mark.parametrize(("body", "message"), BAD_INPUTS)
def test_bad_input_exits_2_naming_line_and_key(memtouch: Path, body: str, message: str) -> None:
    text = f"memtouch version=1\nrun seed=1 epoch_us=100000 slices=1\n{body}\n"
    result = subprocess.run([str(memtouch)], input=text, capture_output=True, text=True, timeout=10, check=False)
    assert result.returncode == 2
    assert message in result.stderr
    assert result.stdout == ""


def test_spec_must_start_with_the_format_header(memtouch: Path, tmp_path: Path) -> None:
    spec = tmp_path / "spec.txt"
    spec.write_text("run seed=1 epoch_us=100000 slices=1\n")
    result = subprocess.run([str(memtouch), str(spec)], capture_output=True, text=True, timeout=10, check=False)
    assert (result.returncode, result.stderr.strip()) == (
        2, "memtouch: bad spec: line 1: the spec must start with 'memtouch version=1'")
    missing = subprocess.run([str(memtouch), str(tmp_path / "none")], capture_output=True, text=True, check=False)
    assert missing.returncode == 2 and "cannot open" in missing.stderr


EXAMPLES = sorted(WORKLOADS_DIR.glob("*.yaml"))


@pytest.mark.parametrize("path", EXAMPLES, ids=[path.stem for path in EXAMPLES])
def test_examples_are_accepted_by_memtouch(memtouch: Path, path: Path) -> None:
    text = memtouch_input(load_workload(path))
    result = subprocess.run([str(memtouch), "--check"], input=text, capture_output=True, text=True, timeout=10,
                            check=False)
    assert (result.returncode, result.stderr, result.stdout) == (0, "", "")


def test_extreme_values_accepted_by_the_parser_are_accepted_by_memtouch(memtouch: Path) -> None:
    spec = workload(region("z", "zipf", 2**40, size="8KiB", chunk="4KiB", exponent=100, hot_offset="4KiB",
                           hot_drift="4KiB", write_fraction=1),
                    region("s", "sequential", 0, size="64GiB", chunk="64GiB", stride="64GiB"),
                    phases=[{"epochs": 2**32 - 1}], seed=2**64 - 1, epoch="3600s")
    result = subprocess.run([str(memtouch), "--check"], input=memtouch_input(spec), capture_output=True, text=True,
                            timeout=10, check=False)
    assert (result.returncode, result.stderr) == (0, "")


def test_linger_keeps_the_memory_mapped_until_a_signal(memtouch: Path) -> None:
    spec = workload(region("a", "uniform", 100))
    process = subprocess.Popen([str(memtouch), "--linger"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               text=True)
    assert process.stdin and process.stdout
    process.stdin.write(memtouch_input(spec))
    process.stdin.close()
    lines = [process.stdout.readline() for _ in range(4)]  # regions, two epochs, done
    assert '"type":"done"' in lines[-1]
    time.sleep(0.2)
    assert process.poll() is None  # still there, memory still mapped
    process.terminate()
    assert process.wait(timeout=10) == -signal.SIGTERM
