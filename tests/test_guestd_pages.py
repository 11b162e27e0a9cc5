"""Pages in guestd: residency from numa_maps, soft-dirty from pagemap, move_pages queries and migration."""

from __future__ import annotations

import errno
from collections.abc import Iterator
from pathlib import Path

import pytest
from guestd_fake import PRESENT, SOFT_DIRTY, SWAPPED, FakeGuest, FakeKernel, FakeProcess, build_tree

from guest.guestd.pages import AddressRange, migrate, spread_pages, status_name
from guest.guestd.process import PAGE_SIZE, Process, mapped_parts, page_counts

PID = 4242
HEAP = 0x10000000
FIRST = HEAP // PAGE_SIZE
HEAP_PAGES = 32


class CountingKernel(FakeKernel):
    """Counts pagemap reads, to check that adjacent regions share one read."""

    reads = 0

    def read_bytes(self, relative: str, offset: int, size: int) -> bytes:
        self.reads += 1
        return super().read_bytes(relative, offset, size)


def heap_process(pagemap: dict[int, int] | None = None) -> FakeProcess:
    return FakeProcess(PID, [(HEAP, HEAP + HEAP_PAGES * PAGE_SIZE), (HEAP + 0x100000, HEAP + 0x101000)],
                       {0: 20, 2: 12}, threads=(PID, PID + 1), pagemap=pagemap or {})


def test_numa_maps_sum_to_bytes_per_node(tmp_path: Path) -> None:
    build_tree(tmp_path)
    heap_process().create(tmp_path)
    process = Process(FakeKernel(tmp_path), PID)
    assert process.resident_bytes() == {0: 22 * PAGE_SIZE, 2: 12 * PAGE_SIZE}
    assert process.cpu_seconds() == (2.5, 0.5)  # 250 and 50 ticks at 100 Hz, despite ") " in the name
    assert sorted(process.threads()) == [PID, PID + 1]


def test_soft_dirty_and_residency_per_region_from_pagemap_bits(tmp_path: Path) -> None:
    build_tree(tmp_path)
    heap_process({FIRST: PRESENT | SOFT_DIRTY, FIRST + 1: PRESENT, FIRST + 5: PRESENT | SOFT_DIRTY,
                  FIRST + 6: SWAPPED, FIRST + 7: SOFT_DIRTY}).create(tmp_path)
    kernel = CountingKernel(tmp_path)
    regions = [(HEAP, HEAP + 4 * PAGE_SIZE), (HEAP + 4 * PAGE_SIZE, HEAP + 16 * PAGE_SIZE),
               (HEAP + 16 * PAGE_SIZE, HEAP + 32 * PAGE_SIZE)]
    counts = page_counts(Process(kernel, PID), regions, budget_pages=4096)
    assert [(count.resident, count.written) for count in counts] == [(2, 1), (2, 2), (0, 0)]
    assert kernel.reads == 1  # adjacent regions: one pagemap read


def test_large_regions_are_sampled_within_the_budget(tmp_path: Path) -> None:
    build_tree(tmp_path)
    pages = 1 << 20
    # The budget allows 4 stretches of 512 pages, a quarter of the region apart; mark the first two present.
    pagemap = {FIRST + block * (pages // 4) + page: PRESENT for block in (0, 1) for page in range(512)}
    heap_process(pagemap).create(tmp_path)
    kernel = CountingKernel(tmp_path)
    [count] = page_counts(Process(kernel, PID), [(HEAP, HEAP + pages * PAGE_SIZE)], budget_pages=2048)
    assert count.resident == pages // 2
    assert count.written == 0
    assert kernel.reads == 4


def test_region_samples_are_spread_evenly_and_bounded() -> None:
    small = spread_pages(HEAP, HEAP + 10 * PAGE_SIZE, 64)
    assert list(small) == [HEAP + page * PAGE_SIZE for page in range(10)]  # small regions: every page
    large = spread_pages(HEAP, HEAP + 100 * PAGE_SIZE, 64)
    pages = [(address - HEAP) // PAGE_SIZE for address in large]
    assert len(pages) <= 64
    assert pages == list(range(3, 100, 7))  # a stride of 2 would alias with interleaving: 7, from the middle
    assert list(spread_pages(HEAP + 100, HEAP + 100 + PAGE_SIZE, 8)) == [HEAP, HEAP + PAGE_SIZE]  # both it touches
    assert list(spread_pages(HEAP + 100, HEAP + 100 + PAGE_SIZE, 1)) == [HEAP + PAGE_SIZE]


@pytest.mark.parametrize(("start", "end", "parts"), [
    (HEAP, HEAP + PAGE_SIZE, [(HEAP, HEAP + PAGE_SIZE)]),
    (HEAP + 31 * PAGE_SIZE, HEAP + 33 * PAGE_SIZE, [(HEAP + 31 * PAGE_SIZE, HEAP + 32 * PAGE_SIZE)]),
    (HEAP - PAGE_SIZE, HEAP + PAGE_SIZE, [(HEAP, HEAP + PAGE_SIZE)]),
    (HEAP, HEAP + 0x101000, [(HEAP, HEAP + 32 * PAGE_SIZE), (HEAP + 0x100000, HEAP + 0x101000)]),
    (HEAP + 40 * PAGE_SIZE, HEAP + 50 * PAGE_SIZE, []),
])
def test_mapped_parts_skip_the_gaps(start: int, end: int, parts: list[tuple[int, int]]) -> None:
    mappings = [(HEAP, HEAP + HEAP_PAGES * PAGE_SIZE), (HEAP + 0x100000, HEAP + 0x101000)]
    assert mapped_parts(mappings, start, end) == parts


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[FakeGuest]:
    guest = FakeGuest(tmp_path)
    guest.add_process(heap_process({FIRST + page: PRESENT | SOFT_DIRTY for page in range(4)}))
    # Pages 0-15 on node 0, 16-23 on node 2, 24-31 never touched.
    guest.syscalls.pages[PID] = {HEAP + page * PAGE_SIZE: 0 if page < 16 else 2 for page in range(24)}
    yield guest
    guest.daemon.close()


def test_observe_reports_process_facts_and_clears_soft_dirty(guest: FakeGuest, tmp_path: Path) -> None:
    first = guest.result("observe", pid=PID)
    assert first["resident_bytes"] == {"0": 22 * PAGE_SIZE, "2": 12 * PAGE_SIZE}
    assert first["cpu"] == {"user_s": 2.5, "system_s": 0.5}
    assert first["affinity"] == [0, 1, 2, 3]
    assert first["threads"] == 2
    assert first["damon"] is None
    assert first["soft_dirty_since"] is None
    assert (tmp_path / f"proc/{PID}/clear_refs").read_text() == "4"
    second = guest.result("observe", pid=PID)
    assert second["soft_dirty_since"] >= first["time"]


def test_observe_ranges_counts_pages_per_node_per_chunk(guest: FakeGuest) -> None:
    [area] = guest.result("observe", pid=PID, ranges=[{"start": HEAP, "length": 32 * PAGE_SIZE,
                                                       "chunk": 8 * PAGE_SIZE}])["ranges"]
    assert [chunk["offset"] for chunk in area["chunks"]] == [0, 8 * PAGE_SIZE, 16 * PAGE_SIZE, 24 * PAGE_SIZE]
    assert [chunk["nodes"] for chunk in area["chunks"]] == [{"0": 8}, {"0": 8}, {"2": 8}, {}]
    assert area["chunks"][3]["absent"] == {"ENOENT": 8}
    assert [chunk["written_pages"] for chunk in area["chunks"]] == [4, 0, 0, 0]


def test_observe_ranges_can_sample_pages(guest: FakeGuest) -> None:
    [area] = guest.result("observe", pid=PID, soft_dirty=False,
                          ranges=[{"start": HEAP, "length": 32 * PAGE_SIZE, "stride": 4}])["ranges"]
    assert area["stride"] == 7  # 4 rounded up to a stride coprime with 30: pages 0, 7, 14, 21, 28
    assert area["chunks"] == [{"offset": 0, "nodes": {"0": 3, "2": 1}, "absent": {"ENOENT": 1}}]


@pytest.mark.parametrize("nodes", [2, 3, 4, 6])
@pytest.mark.parametrize("stride", [1, 2, 6, 16, 30, 64])
def test_sampled_residency_sees_every_node_of_an_interleave(tmp_path: Path, nodes: int, stride: int) -> None:
    guest = FakeGuest(tmp_path)
    guest.add_process(FakeProcess(PID, [(HEAP, HEAP + 4096 * PAGE_SIZE)], {}))
    guest.syscalls.pages[PID] = {HEAP + page * PAGE_SIZE: page % nodes for page in range(4096)}
    try:
        [area] = guest.result("observe", pid=PID, soft_dirty=False,
                              ranges=[{"start": HEAP, "length": 4096 * PAGE_SIZE, "stride": stride}])["ranges"]
    finally:
        guest.daemon.close()
    [chunk] = area["chunks"]
    counts = [chunk["nodes"].get(str(node), 0) for node in range(nodes)]
    assert max(counts) - min(counts) <= 1, counts  # an even share each, as interleaving put them


def test_migrate_moves_pages_within_the_budget(guest: FakeGuest) -> None:
    result = guest.result("migrate", pid=PID, node=2, budget_bytes=10 * PAGE_SIZE,
                          ranges=[{"start": HEAP, "length": 32 * PAGE_SIZE}])
    assert result["moved_pages"] == 10
    assert result["moved_bytes"] == 10 * PAGE_SIZE
    assert result["budget_exhausted"] is True
    assert result["process_exited"] is False
    assert sum(node == 2 for node in guest.syscalls.pages[PID].values()) == 18


def test_pages_already_there_or_absent_cost_no_budget(guest: FakeGuest) -> None:
    result = guest.result("migrate", pid=PID, node=0, budget_bytes=1 << 30,
                          ranges=[{"start": HEAP, "length": 32 * PAGE_SIZE}])
    assert (result["moved_pages"], result["already_on_node"], result["not_present"]) == (8, 16, 8)
    assert result["budget_exhausted"] is False
    assert result["failed"] == {}


def test_a_range_over_a_gap_moves_what_is_mapped(guest: FakeGuest) -> None:
    """DAMON regions span the gaps between mappings: the gap is skipped and counted."""
    result = guest.result("migrate", pid=PID, node=0, budget_bytes=1 << 30,
                          ranges=[{"start": HEAP, "length": 40 * PAGE_SIZE}])
    assert (result["moved_pages"], result["already_on_node"], result["not_present"]) == (8, 16, 8)
    assert result["unmapped_bytes"] == 8 * PAGE_SIZE


def test_a_batch_already_on_the_node_is_only_queried(guest: FakeGuest) -> None:
    before = guest.syscalls.calls
    result = guest.result("migrate", pid=PID, node=0, budget_bytes=1 << 30,
                          ranges=[{"start": HEAP, "length": 16 * PAGE_SIZE}])
    assert (result["moved_pages"], result["already_on_node"], result["not_present"]) == (0, 16, 0)
    assert guest.syscalls.calls == before + 1


def test_migrate_counts_failures_by_errno(guest: FakeGuest) -> None:
    guest.syscalls.full_nodes.add(1)
    result = guest.result("migrate", pid=PID, node=1, budget_bytes=1 << 30,
                          ranges=[{"start": HEAP, "length": 4 * PAGE_SIZE}])
    assert result["moved_pages"] == 0
    assert result["failed"] == {"ENOMEM": 4}


def test_a_process_that_exits_mid_migration_is_reported_not_fatal(guest: FakeGuest) -> None:
    guest.syscalls.pages[PID].update({HEAP + page * PAGE_SIZE: 2 for page in range(24)})
    guest.syscalls.exit_after_calls = 2  # the first batch's query and move succeed, then the process is gone
    areas = [AddressRange(HEAP, 16 * PAGE_SIZE), AddressRange(HEAP + 16 * PAGE_SIZE, 8 * PAGE_SIZE)]
    result = migrate(guest.syscalls, PID, areas, node=0, budget_pages=100)
    assert result["process_exited"] is True
    assert result["moved_pages"] == 16


def test_migrate_by_region_ids_needs_a_current_observation(guest: FakeGuest) -> None:
    code, message = guest.error("migrate", pid=PID, node=2, budget_bytes=PAGE_SIZE, regions=[0])
    assert code == "ENOENT"
    assert "observe first" in message


@pytest.mark.parametrize(("args", "code", "words"), [
    ({"pid": 999, "node": 2}, "ESRCH", "pid 999"),
    ({"node": 7}, "ENODEV", "node 7"),
    ({"node": 2, "budget_bytes": 0}, "EINVAL", "migrate.budget_bytes"),
    ({"node": 2, "ranges": [{"start": HEAP + 40 * PAGE_SIZE, "length": 2 * PAGE_SIZE}]}, "EFAULT",
     f"ranges[0] {HEAP + 40 * PAGE_SIZE:#x}+0x2000 is not mapped at all"),
    ({"node": 2, "ranges": []}, "EINVAL", "give 'ranges' or 'regions'"),
    ({"node": 2, "ranges": [{"start": HEAP, "length": 1, "extra": 1}]}, "EINVAL", "migrate.ranges[0].extra"),
])
def test_migrate_validates_with_clear_errors(guest: FakeGuest, args: dict[str, object], code: str,
                                             words: str) -> None:
    request = {"pid": PID, "budget_bytes": PAGE_SIZE, "ranges": [{"start": HEAP, "length": PAGE_SIZE}], **args}
    assert guest.error("migrate", **request)[0] == code
    assert words in guest.error("migrate", **request)[1]


def test_migrate_refuses_a_full_node(guest: FakeGuest, tmp_path: Path) -> None:
    (tmp_path / "sys/devices/system/node/node2/meminfo").write_text("Node 2 MemTotal: 100 kB\nNode 2 MemFree: 0 kB\n")
    code, message = guest.error("migrate", pid=PID, node=2, budget_bytes=PAGE_SIZE,
                                ranges=[{"start": HEAP, "length": PAGE_SIZE}])
    assert code == "ENOSPC"
    assert "node 2 has 0 bytes free" in message


def test_place_pins_every_thread(guest: FakeGuest) -> None:
    result = guest.result("place", pid=PID, node=1)
    assert result == {"pid": PID, "cpus": [2, 3], "threads": 2, "previous": [0, 1, 2, 3]}
    assert guest.syscalls.affinity == {PID: [2, 3], PID + 1: [2, 3]}


@pytest.mark.parametrize(("args", "words"), [
    ({"node": 2}, "node 2 has no CPUs"),
    ({"cpus": [7]}, "not all online"),
    ({"cpus": [0], "node": 0}, "exactly one"),
    ({}, "exactly one"),
])
def test_place_validates(guest: FakeGuest, args: dict[str, object], words: str) -> None:
    code, message = guest.error("place", pid=PID, **args)
    assert code == "EINVAL"
    assert words in message


def test_status_names_fall_back_for_unknown_errnos() -> None:
    assert status_name(-errno.EBUSY) == "EBUSY"
    assert status_name(-4095) == "E4095"
