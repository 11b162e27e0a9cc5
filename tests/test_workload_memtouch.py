"""memtouch's output is read and checked; compiled natively on the host and run on short specs, it does and
reports what the spec says."""

from __future__ import annotations

import json
import os
import queue
import signal
import struct
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from testbed.memtouch import (
    BARRIER_FLAG,
    RELEASE_SIGNAL,
    GroundTruth,
    MemtouchBuildError,
    MemtouchOutputError,
    OutputReader,
    build_memtouch,
    memtouch_input,
    parse_output,
)
from testbed.units import MIB
from testbed.workload import WORKLOADS_DIR, Pattern, Workload, load_workload, parse_workload

PAGE = 4096
LINE = 64
ELF_PT_INTERP = 3


# ---- parsing memtouch's output ----

REGIONS_LINE = {"type": "regions", "version": 1, "pid": 42, "seed": 9, "epoch_us": 100000, "slices": 10,
                "page_size": 4096, "regions": [
                    {"name": "a", "pattern": "zipf", "address": 2**21, "size": 2**22, "chunk": 2**21,
                     "pages": 1024, "chunks": 2},
                    {"name": "b", "pattern": "uniform", "address": 2**23, "size": 2**21, "chunk": 2**21,
                     "pages": 512, "chunks": 1}]}


def epoch_line(epoch: int, reads: list[list[int]], writes: list[list[int]], late: Any = False) -> dict[str, Any]:
    return {"type": "epoch", "epoch": epoch, "phase": 0, "start_us": 10 + epoch, "end_us": 11 + epoch,
            "busy_us": 1, "late": late, "reads": reads, "writes": writes}


def jsonl(*objects: dict[str, Any]) -> list[str]:
    return [json.dumps(item) for item in objects]


def test_output_is_parsed_into_arrays_per_region_and_epoch() -> None:
    truth = parse_output(jsonl(REGIONS_LINE, epoch_line(0, [[5, 1], [7]], [[2, 0], [0]]),
                               epoch_line(1, [[4, 2], [6]], [[1, 1], [3]], late=True),
                               {"type": "done", "epochs": 2, "late_epochs": 1}))
    assert truth.finished and (truth.pid, truth.seed, truth.epoch_us) == (42, 9, 100000)
    assert [region.name for region in truth.regions] == ["a", "b"]
    assert truth.regions[0].pattern is Pattern.ZIPF
    np.testing.assert_array_equal(truth.reads("a"), [[5, 1], [4, 2]])
    np.testing.assert_array_equal(truth.writes("b"), [[0], [3]])
    assert [epoch.late for epoch in truth.epochs] == [False, True]


def test_wait_us_is_read_and_defaults_to_0_for_older_lines() -> None:
    truth = parse_output(jsonl(REGIONS_LINE, {**epoch_line(0, [[0, 0], [0]], [[0, 0], [0]]), "wait_us": 7},
                               epoch_line(1, [[0, 0], [0]], [[0, 0], [0]])))
    assert [epoch.wait_us for epoch in truth.epochs] == [7, 0]


def test_output_reader_reports_epochs_as_they_arrive() -> None:
    reader = OutputReader()
    assert reader.feed(json.dumps(REGIONS_LINE)) is None
    epoch = reader.feed(json.dumps(epoch_line(0, [[1, 2], [3]], [[0, 0], [1]])))
    assert epoch is not None
    np.testing.assert_array_equal(epoch.reads[0], [1, 2])
    truth = reader.result()
    assert not truth.finished and len(truth.epochs) == 1


def test_output_without_epochs_gives_empty_arrays() -> None:
    truth = parse_output(jsonl(REGIONS_LINE))
    assert truth.reads("a").shape == (0, 2)
    with pytest.raises(KeyError):
        truth.reads("c")


BAD_OUTPUTS = [
    (["not json"], "line 1: not JSON"),
    (jsonl(epoch_line(0, [[0, 0], [0]], [[0, 0], [0]])), "line 1: expected the 'regions' line first"),
    (jsonl(REGIONS_LINE, epoch_line(1, [[0, 0], [0]], [[0, 0], [0]])), "line 2: expected epoch 0, got 1"),
    (jsonl(REGIONS_LINE, epoch_line(0, [[0], [0]], [[0, 0], [0]])), "line 2: 'reads' of region 'a' must be 2 counts"),
    (jsonl(REGIONS_LINE, epoch_line(0, [[0, 0]], [[0, 0], [0]])), "line 2: 'reads' has 1 regions, expected 2"),
    (jsonl(REGIONS_LINE, epoch_line(0, [[0, -1], [0]], [[0, 0], [0]])), "'reads' of region 'a' must be 2 counts"),
    (jsonl(REGIONS_LINE, epoch_line(0, [[0, 0], [0]], [[0, 0], [0]], late="no")), "'late' must be true or false"),
    (jsonl(REGIONS_LINE, {**epoch_line(0, [[0, 0], [0]], [[0, 0], [0]]), "wait_us": -1}),
     "'wait_us' must be a whole number"),
    (jsonl(REGIONS_LINE, {"type": "done", "epochs": 3}), "line 2: 'done' reports 3 epochs, 0 were printed"),
    (jsonl(REGIONS_LINE, {"type": "done", "epochs": 0}, {"type": "done", "epochs": 0}), "line 3: output continues"),
    (jsonl(REGIONS_LINE, {"type": "surprise"}), "line 2: unexpected line type 'surprise'"),
    (jsonl({**REGIONS_LINE, "pid": "x"}), "'pid' must be a whole number"),
    ([], "printed no 'regions' line"),
]


@pytest.mark.parametrize(("output", "message"), BAD_OUTPUTS)
def test_bad_output_names_the_line(output: list[str], message: str) -> None:
    with pytest.raises(MemtouchOutputError, match=message):
        parse_output(output)


# ---- running the program ----


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
    assert (a.size, a.chunk, a.pages, a.chunks) == (6 * MIB, 4 * MIB, 1536, 2)
    assert (b.size, b.chunk, b.pages, b.chunks) == (64 * 1024, PAGE, 16, 16)
    assert a.address % (2 * MIB) == 0 and b.address % (2 * MIB) == 0
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
    half_region = 4 * MIB // 2 // LINE
    counts = totals(run(memtouch, workload(region("s", "sequential", half_region), phases=[{"epochs": 3}])), "s")
    per_chunk = MIB // LINE
    assert counts.tolist() == [[per_chunk, per_chunk, 0, 0], [0, 0, per_chunk, per_chunk],
                               [per_chunk, per_chunk, 0, 0]]
    strided = totals(run(memtouch, workload(region("s", "sequential", 4 * MIB // 256, stride="256B"))), "s")
    assert strided.tolist() == [[MIB // 256] * 4] * 2


def test_chase_visits_every_line_once_per_cycle(memtouch: Path) -> None:
    lines = 4 * MIB // LINE
    counts = totals(run(memtouch, workload(region("c", "chase", lines))), "c")
    assert counts.tolist() == [[MIB // LINE] * 4] * 2


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


# ---- the epoch barrier ----

RELEASE = signal.Signals[f"SIG{RELEASE_SIGNAL}"]


class Held:
    """A running memtouch whose output a thread reads, so that a test can wait for a line with a timeout."""

    def __init__(self, binary: Path, spec: Workload, flags: tuple[str, ...]) -> None:
        self.process = subprocess.Popen([str(binary), *flags], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                        text=True)
        assert self.process.stdin and self.process.stdout
        self.process.stdin.write(memtouch_input(spec))
        self.process.stdin.close()
        self.reader = OutputReader()
        self._lines: queue.Queue[str] = queue.Queue()
        self._thread = threading.Thread(target=self._read, args=(self.process.stdout,), daemon=True)
        self._thread.start()

    def _read(self, stdout: Any) -> None:
        for line in stdout:
            self._lines.put(line)

    def line(self, timeout: float = 10) -> dict[str, Any]:
        text = self._lines.get(timeout=timeout)
        self.reader.feed(text)
        value: dict[str, Any] = json.loads(text)
        return value

    def silent_for(self, seconds: float) -> bool:
        try:
            self.line(timeout=seconds)
        except queue.Empty:
            return True
        return False

    def release(self) -> None:
        os.kill(self.process.pid, RELEASE)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self._thread.join(timeout=10)
        assert self.process.stdout
        self.process.stdout.close()


@pytest.fixture
def start(memtouch: Path) -> Iterator[Callable[..., Held]]:
    """Starts memtouch on a spec with the given flags (the barrier by default); ends what is left at teardown."""
    started: list[Held] = []

    def starting(spec: Workload, *flags: str) -> Held:
        started.append(Held(memtouch, spec, flags or (BARRIER_FLAG,)))
        return started[-1]

    yield starting
    for held in started:
        held.close()


def run_released(held: Held, epochs: int, delay: float = 0) -> GroundTruth:
    """Releases the start and each epoch but the last ``delay`` seconds after its line, as the host does once it
    has acted."""
    assert held.line()["type"] == "regions"
    time.sleep(delay)
    held.release()
    for epoch in range(epochs):
        assert held.line()["epoch"] == epoch
        if epoch + 1 < epochs:
            time.sleep(delay)
            held.release()
    assert held.line()["type"] == "done"
    assert held.process.wait(timeout=10) == 0
    return held.reader.result()


@pytest.mark.parametrize("flags", [(BARRIER_FLAG,), (BARRIER_FLAG, "--linger"), ("--linger", BARRIER_FLAG)])
def test_barrier_holds_each_epoch_until_released(start: Callable[..., Held], flags: tuple[str, ...]) -> None:
    held = start(workload(region("a", "uniform", 1000), phases=[{"epochs": 3}]), *flags)
    assert held.line()["type"] == "regions"
    assert held.silent_for(0.5)  # held before epoch 0 too, for the host to watch and place
    held.release()
    for epoch in range(2):
        assert held.line()["epoch"] == epoch
        assert held.silent_for(0.5)
        held.release()
    assert held.line()["epoch"] == 2
    assert held.line(timeout=5)["type"] == "done"  # no release after the last epoch
    if "--linger" in flags:
        time.sleep(0.2)
        assert held.process.poll() is None
    else:
        assert held.process.wait(timeout=10) == 0


def test_a_release_sent_before_the_boundary_is_kept(start: Callable[..., Held]) -> None:
    held = start(workload(region("a", "uniform", 1000), phases=[{"epochs": 2}], epoch="300ms"))
    assert held.line()["type"] == "regions"
    held.release()
    time.sleep(0.05)  # taken: epoch 0 is under way
    held.release()  # epoch 0 runs for 300ms yet
    first, second = held.line(), held.line(timeout=5)
    assert (first["epoch"], second["epoch"]) == (0, 1)
    assert second["wait_us"] < 20_000 and second["start_us"] == first["end_us"] + second["wait_us"]
    assert held.line()["type"] == "done"
    assert held.process.wait(timeout=10) == 0


@pytest.mark.parametrize("hold", [0, 0.3])
def test_barrier_does_not_change_the_counts(memtouch: Path, start: Callable[..., Held], hold: float) -> None:
    spec = workload(region("u", "uniform", 20_000, write_fraction=0.2), region("z", "zipf", 20_000, hot_drift="1MiB"),
                    region("s", "sequential", 10_000), region("c", "chase", 5_000, write_fraction=0.5),
                    phases=[{"epochs": 2}, {"epochs": 2, "regions": {"u": {"accesses": 7}}}])
    free, held = run(memtouch, spec), run_released(start(spec), epochs=4, delay=hold)
    assert [epoch.wait_us for epoch in free.epochs] == [0] * 4
    for name in ("u", "z", "s", "c"):
        np.testing.assert_array_equal(held.reads(name), free.reads(name), err_msg=name)
        np.testing.assert_array_equal(held.writes(name), free.writes(name), err_msg=name)


def test_wait_us_is_the_hold_and_the_next_epoch_is_paced_from_its_release(start: Callable[..., Held]) -> None:
    truth = run_released(start(workload(region("a", "uniform", 1000))), epochs=2, delay=0.4)
    before, after = truth.epochs
    assert before.wait_us >= 300_000 and after.wait_us >= 300_000
    assert after.start_us == before.end_us + after.wait_us
    # Paced from the old schedule, the epoch would have been late by the whole hold.
    assert not after.late and after.end_us - after.start_us == 50_000
    assert after.busy_us < 50_000


@pytest.mark.parametrize("ending", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_ends_a_held_program(start: Callable[..., Held], ending: signal.Signals) -> None:
    held = start(workload(region("a", "uniform", 100)))
    assert held.line()["type"] == "regions"
    time.sleep(0.1)  # into the wait before epoch 0
    held.release()
    assert held.line()["epoch"] == 0
    time.sleep(0.1)  # into the wait
    held.process.send_signal(ending)
    assert held.process.wait(timeout=10) == -ending


def test_check_excludes_the_other_flags(memtouch: Path) -> None:
    text = memtouch_input(workload(region("a", "uniform", 1)))
    for flags in (["--check", BARRIER_FLAG], [BARRIER_FLAG, "--check"], [BARRIER_FLAG, BARRIER_FLAG]):
        result = subprocess.run([str(memtouch), *flags], input=text, capture_output=True, text=True, timeout=10,
                                check=False)
        assert (result.returncode, result.stdout) == (2, ""), flags
        assert result.stderr.startswith("usage: memtouch [--check | [--linger] [--barrier]]")
