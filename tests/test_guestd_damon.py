"""DAMON in guestd: tracepoint lines, kdamond slots, vaddr watches, the sysfs fallback, paddr DAMOS."""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from guestd_fake import FIRST_KDAMOND_PID, KDAMONDS, TRACEFS, FakeGuest, FakeProcess, aggregated_lines
from hypothesis import given
from hypothesis import strategies as st

from guest.guestd.process import PAGE_SIZE
from guest.guestd.tracefs import Region, Snapshot, TraceTail, complete_aggregations, mean_accesses

PID = 4242
HEAP = 0x10000000
REGIONS = (Region(HEAP, HEAP + 0x4000, 5, 2), Region(HEAP + 0x4000, HEAP + 0x10000, 0, 9),
           Region(HEAP + 0x10000, HEAP + 0x20000, 20, 1))
CONTEXT = f"{KDAMONDS}/0/contexts/0"


def newest(text: bytes, until: float | None = None) -> Snapshot | None:
    return next(iter(complete_aggregations(text, until)), None)


def test_the_last_complete_aggregation_is_found() -> None:
    older = [Region(HEAP, HEAP + 0x20000, 1, 1)] * 1
    text = aggregated_lines(older, 9000, 10.0) + aggregated_lines(REGIONS, 9000, 10.1)
    snapshot = newest(text.encode())
    assert snapshot is not None
    assert snapshot.regions == REGIONS
    assert snapshot.time == pytest.approx(10.1)


def test_the_last_aggregation_that_ended_by_a_time_is_found() -> None:
    later = [Region(HEAP, HEAP + 0x20000, 0, 3)]  # memory left idle after the time asked about
    text = aggregated_lines(REGIONS[:1], 9000, 10.0) + aggregated_lines(REGIONS, 9000, 10.1) + \
        aggregated_lines(later, 9000, 10.2)
    found = {until: newest(text.encode(), until) for until in (10.15, 10.1, 10.25, 10.05, 9.9)}
    assert {until: None if snapshot is None else snapshot.regions for until, snapshot in found.items()} == {
        10.15: REGIONS, 10.1: REGIONS, 10.25: tuple(later), 10.05: REGIONS[:1], 9.9: None}


def test_the_aggregations_of_a_window_are_found_newest_first() -> None:
    text = "".join(aggregated_lines(REGIONS, 9000, when) for when in (10.0, 10.1, 10.2, 10.3))
    found = complete_aggregations(text.encode(), until=10.25, since=10.05)
    assert [round(snapshot.time, 2) for snapshot in found] == [10.2, 10.1]


def test_the_mean_over_aggregations_weighs_each_by_the_bytes_it_overlaps() -> None:
    page = 0x1000
    newest_one = Snapshot(2.0, (Region(HEAP, HEAP + 4 * page, 8, 3), Region(HEAP + 4 * page, HEAP + 6 * page, 0, 1)))
    # Split differently, and covering less at the top: its last page is outside every region.
    older = Snapshot(1.9, (Region(HEAP, HEAP + page, 4, 2), Region(HEAP + page, HEAP + 5 * page, 2, 2)))
    mean = mean_accesses([newest_one, older])
    assert mean.aggregations == 2 and mean.time == 2.0
    assert [(region.start, region.end, region.age) for region in mean.regions] == [
        (region.start, region.end, region.age) for region in newest_one.regions]
    # By hand: region 0 saw 8 on 4 pages, then 4 on 1 page and 2 on 3: (32 + 4 + 6) / 8 pages.
    # Region 1 saw 0 on 2 pages, then 2 on the one page the older aggregation covered: 2 / 3 pages.
    assert [region.nr_accesses for region in mean.regions] == [pytest.approx(42 / 8), pytest.approx(2 / 3, abs=1e-3)]
    assert mean_accesses([older]) is older  # one aggregation: its own whole counts


@given(st.lists(st.lists(st.tuples(st.integers(1, 6), st.integers(0, 20)), min_size=1, max_size=6),
                min_size=1, max_size=5))
def test_the_mean_is_the_byte_by_byte_average(layouts: list[list[tuple[int, int]]]) -> None:
    """Against brute force over pages: each aggregation's regions tile from HEAP with random sizes."""
    page = 0x1000
    aggregations = []
    for when, layout in enumerate(layouts):
        regions, start = [], HEAP
        for pages, accesses in layout:
            regions.append(Region(start, start + pages * page, accesses, 0))
            start += pages * page
        aggregations.append(Snapshot(float(when), tuple(regions)))
    mean = mean_accesses(aggregations)
    for region in mean.regions:
        seen = [(other.nr_accesses) for aggregation in aggregations for address in range(region.start, region.end, page)
                for other in aggregation.regions if other.start <= address < other.end]
        assert region.nr_accesses == pytest.approx(sum(seen) / len(seen), abs=1e-3)


def test_an_aggregation_still_being_written_is_skipped() -> None:
    partial = aggregated_lines(REGIONS, 9000, 10.2).splitlines(keepends=True)[:2]
    text = aggregated_lines(REGIONS, 9000, 10.1) + "".join(partial)
    snapshot = newest(text.encode())
    assert snapshot is not None
    assert snapshot.time == pytest.approx(10.1)


def test_an_aggregation_that_lost_lines_is_skipped() -> None:
    damaged = aggregated_lines(REGIONS, 9000, 10.2).splitlines(keepends=True)
    del damaged[1]
    assert newest("".join(damaged).encode()) is None


def test_other_trace_lines_are_ignored() -> None:
    text = "# tracer: nop\n" + aggregated_lines(REGIONS, 9000, 3.5) + "  <idle>-0 [000] 3.6: something: else\n"
    snapshot = newest(text.encode())
    assert snapshot is not None and len(snapshot.regions) == 3


def test_the_tail_keeps_whole_lines_within_its_capacity(tmp_path: Path) -> None:
    pipe = tmp_path / "trace_pipe"
    many = [Region(HEAP + i * 0x1000, HEAP + (i + 1) * 0x1000, i % 7, 1) for i in range(50)]
    pipe.write_text(aggregated_lines(many, 9000, 1.0) * 20 + aggregated_lines(REGIONS, 9000, 2.0))
    fd = os.open(pipe, os.O_RDONLY | os.O_NONBLOCK)
    try:
        tail = TraceTail(fd, max_regions=50)
        snapshot = tail.snapshot()
    finally:
        os.close(fd)
    assert snapshot is not None and snapshot.regions == REGIONS
    assert len(tail._buffer) <= 2 * 50 * 160 + (1 << 16)
    assert tail._buffer.startswith(b"       kdamond")  # cut at a line boundary


def test_a_busy_trace_pipe_ends_a_drain_and_keeps_what_was_read(tmp_path: Path,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    lines = aggregated_lines(REGIONS, 9000, 2.0).encode()
    reads: Iterator[bytes | OSError] = iter([lines, OSError(errno.EBUSY, "Device or resource busy")])

    def read(_fd: int, _size: int) -> bytes:
        result = next(reads, b"")
        if isinstance(result, OSError):
            raise result
        return result

    monkeypatch.setattr(os, "read", read)
    snapshot = TraceTail(-1, max_regions=10).snapshot()
    assert snapshot is not None and snapshot.regions == REGIONS


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[FakeGuest]:
    guest = FakeGuest(tmp_path, tried_regions=REGIONS)
    guest.add_process(FakeProcess(PID, [(HEAP, HEAP + 0x20000)], {0: 20, 2: 12}))
    yield guest
    guest.daemon.close()


def test_watch_configures_a_vaddr_kdamond_and_a_filtered_trace_instance(guest: FakeGuest, tmp_path: Path) -> None:
    info = guest.result("watch", pid=PID, sample_us=1000, aggr_us=50_000, max_regions=500)
    assert info == {"pid": PID, "kdamond": 0, "kdamond_pid": FIRST_KDAMOND_PID, "source": "tracefs",
                    "sample_us": 1000, "aggr_us": 50_000, "min_regions": 10, "max_regions": 500}

    def read(relative: str) -> str:
        return (tmp_path / relative).read_text().strip()

    assert read(f"{KDAMONDS}/nr_kdamonds") == "4"
    assert read(f"{CONTEXT}/operations") == "vaddr"
    assert read(f"{CONTEXT}/targets/0/pid_target") == str(PID)
    assert read(f"{CONTEXT}/monitoring_attrs/intervals/aggr_us") == "50000"
    assert read(f"{CONTEXT}/monitoring_attrs/nr_regions/max") == "500"
    assert read(f"{CONTEXT}/schemes/nr_schemes") == "0"
    assert read(f"{KDAMONDS}/0/state") == "on"
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    event = tmp_path / f"{TRACEFS}/instances/{instance}/events/damon/damon_aggregated"
    assert (event / "filter").read_text() == f"common_pid == {FIRST_KDAMOND_PID}"
    assert (event / "enable").read_text() == "1"
    assert (tmp_path / f"{TRACEFS}/instances/{instance}/trace_clock").read_text() == "mono"
    # Read only when observed: the ring holds a second of aggregations (20 of 50 ms, the one being written
    # and one more) of 48-byte records, and little more.
    ring = int((tmp_path / f"{TRACEFS}/instances/{instance}/buffer_size_kb").read_text()) * 1024
    assert 22 * 500 * 48 < ring < 2 * 22 * 500 * 64


def test_observe_returns_the_latest_aggregation_with_stable_ids(guest: FakeGuest, tmp_path: Path) -> None:
    guest.result("watch", pid=PID)
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    pipe = tmp_path / f"{TRACEFS}/instances/{instance}/trace_pipe"
    pipe.write_text(aggregated_lines(REGIONS[:1], FIRST_KDAMOND_PID, 5.0) +
                    aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 5.1))
    damon = guest.result("observe", pid=PID, soft_dirty=False)["damon"]
    assert damon["source"] == "tracefs"
    assert damon["running"] is True
    assert damon["time"] == pytest.approx(5.1)
    assert damon["columns"] == ["id", "start", "end", "nr_accesses", "age"]
    assert damon["regions"] == [[i, r.start, r.end, r.nr_accesses, r.age] for i, r in enumerate(REGIONS)]
    again = guest.result("observe", pid=PID, soft_dirty=False)["damon"]
    assert again["regions"] == damon["regions"]  # nothing new in the pipe: the same aggregation
    assert again["observation"] == damon["observation"] + 1


def test_observe_until_gives_the_aggregation_of_the_epoch_not_a_later_one(guest: FakeGuest,
                                                                          tmp_path: Path) -> None:
    guest.result("watch", pid=PID)
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    (tmp_path / f"{TRACEFS}/instances/{instance}/trace_pipe").write_text(
        aggregated_lines(REGIONS[:1], FIRST_KDAMOND_PID, 5.0) + aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 5.1))

    def seen(**until: int) -> tuple[float, int]:
        damon = guest.result("observe", pid=PID, soft_dirty=False, **until)["damon"]
        return round(damon["time"], 6), len(damon["regions"])

    assert seen(damon_until_us=5_050_000) == (5.0, 1)
    assert seen(damon_until_us=5_100_000) == (5.1, 3)
    assert seen() == (5.1, 3)
    assert seen(damon_until_us=4_000_000) == (5.1, 3)  # none that old kept: the latest
    assert guest.error("observe", pid=PID, damon_until_us=-1)[0] == "EINVAL"


def test_observe_over_an_epoch_gives_each_region_its_mean_count(guest: FakeGuest, tmp_path: Path) -> None:
    guest.result("watch", pid=PID)
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    busier = tuple(region._replace(nr_accesses=region.nr_accesses + 2) for region in REGIONS)
    (tmp_path / f"{TRACEFS}/instances/{instance}/trace_pipe").write_text(
        aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 4.9) + aggregated_lines(busier, FIRST_KDAMOND_PID, 5.0)
        + aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 5.1) + aggregated_lines(busier, FIRST_KDAMOND_PID, 5.2))
    damon = guest.result("observe", pid=PID, soft_dirty=False, damon_since_us=4_950_000,
                         damon_until_us=5_150_000)["damon"]
    assert damon["aggregations"] == 2 and damon["time"] == pytest.approx(5.1)
    assert [row[3] for row in damon["regions"]] == [region.nr_accesses + 1 for region in REGIONS]
    code, message = guest.error("observe", pid=PID, damon_since_us=5_150_000, damon_until_us=5_150_000)
    assert code == "EINVAL" and "damon_since_us" in message
    assert guest.error("observe", pid=PID, damon_since_us=1)[0] == "EINVAL"  # a window needs its end


def test_observe_bounds_the_regions_it_reports(guest: FakeGuest, tmp_path: Path) -> None:
    guest.result("watch", pid=PID)
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    (tmp_path / f"{TRACEFS}/instances/{instance}/trace_pipe").write_text(
        aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 1.0))
    damon = guest.result("observe", pid=PID, soft_dirty=False, max_regions=2)["damon"]
    assert damon["total_regions"] == 3
    assert [row[0] for row in damon["regions"]] == [0, 1]


def test_without_tracefs_regions_come_from_a_stat_scheme(guest: FakeGuest, tmp_path: Path) -> None:
    shutil.rmtree(tmp_path / TRACEFS)
    assert guest.result("watch", pid=PID)["source"] == "sysfs"
    scheme = tmp_path / f"{CONTEXT}/schemes/0"
    assert (scheme / "action").read_text() == "stat"
    # DAMOS maxima default to 0 in the kernel: unless written, nothing would match.
    assert (scheme / "access_pattern/sz/max").read_text() == str((1 << 64) - 1)
    assert (scheme / "access_pattern/nr_accesses/max").read_text() == str((1 << 32) - 1)
    assert (scheme / "access_pattern/age/max").read_text() == str((1 << 32) - 1)
    damon = guest.result("observe", pid=PID, soft_dirty=False)["damon"]
    assert damon["source"] == "sysfs"
    assert [tuple(row[1:]) for row in damon["regions"]] == [(r.start, r.end, r.nr_accesses, r.age) for r in REGIONS]
    assert ("0", "update_schemes_tried_regions") in guest.kernel.commands


def test_watching_again_with_other_settings_restarts_and_same_settings_is_a_no_op(guest: FakeGuest) -> None:
    first = guest.result("watch", pid=PID)
    assert guest.result("watch", pid=PID) == first
    second = guest.result("watch", pid=PID, aggr_us=200_000)
    assert second["kdamond_pid"] != first["kdamond_pid"]
    assert guest.kernel.running_kdamonds() == [str(second["kdamond"])]


def test_unwatch_and_exit_stop_kdamonds_and_remove_instances(guest: FakeGuest, tmp_path: Path) -> None:
    guest.add_process(FakeProcess(PID + 1, [(HEAP, HEAP + 0x1000)], {0: 1}))
    guest.result("watch", pid=PID)
    guest.result("watch", pid=PID + 1)
    assert len(guest.kernel.running_kdamonds()) == 2
    assert guest.result("unwatch", pid=PID) == {"pid": PID, "was_watched": True}
    assert guest.result("unwatch", pid=PID) == {"pid": PID, "was_watched": False}
    assert len(guest.kernel.running_kdamonds()) == 1
    guest.daemon.close()
    assert guest.kernel.running_kdamonds() == []
    assert os.listdir(tmp_path / f"{TRACEFS}/instances") == []


def test_a_full_kdamond_array_is_ebusy_with_advice(guest: FakeGuest) -> None:
    for offset in range(4):
        guest.add_process(FakeProcess(PID + 10 + offset, [(HEAP, HEAP + 0x1000)], {0: 1}))
        guest.result("watch", pid=PID + 10 + offset)
    code, message = guest.error("watch", pid=PID)
    assert code == "EBUSY"
    assert "--kdamonds" in message


def test_watch_of_a_missing_process_is_esrch(guest: FakeGuest) -> None:
    code, message = guest.error("watch", pid=31337)
    assert (code, message) == ("ESRCH", "pid 31337: no such process")
    assert guest.kernel.running_kdamonds() == []


def test_monitoring_settings_are_checked(guest: FakeGuest) -> None:
    code, message = guest.error("watch", pid=PID, min_regions=100, max_regions=50)
    assert code == "EINVAL"
    assert "watch.max_regions" in message


def test_damos_migrates_on_the_physical_ranges_of_the_chosen_nodes(guest: FakeGuest, tmp_path: Path) -> None:
    info = guest.result("damos", nodes=[0], schemes=[
        {"action": "migrate_cold", "target_node": 2, "age": [10, 1000], "quota_bytes": 64 << 20,
         "quota_reset_ms": 1000},
    ])
    assert info["nodes"] == [0]
    context = tmp_path / f"{KDAMONDS}/{info['id']}/contexts/0"
    assert (context / "operations").read_text() == "paddr"
    # Node 0 owns memory blocks 0-3 of 128 MiB: one merged region.
    assert (context / "targets/0/regions/nr_regions").read_text() == "1"
    assert (context / "targets/0/regions/0/start").read_text() == "0"
    assert (context / "targets/0/regions/0/end").read_text() == str(4 * 128 << 20)
    scheme = context / "schemes/0"
    assert (scheme / "action").read_text() == "migrate_cold"
    assert (scheme / "target_nid").read_text() == "2"
    assert (scheme / "access_pattern/age/min").read_text() == "10"
    assert (scheme / "access_pattern/nr_accesses/max").read_text() == str((1 << 32) - 1)
    assert (scheme / "quotas/bytes").read_text() == str(64 << 20)
    stats = guest.result("damos_stop", id=info["id"])
    assert stats["running"] is False
    assert stats["schemes"][0]["stats"]["nr_applied"] == 12
    assert guest.kernel.running_kdamonds() == []


@pytest.mark.parametrize(("scheme", "field"), [
    ({"action": "migrate_hot"}, "target_node"),
    ({"action": "pageout", "target_node": 0}, "target_node"),
    ({"action": "willneed"}, "action"),
    ({"action": "stat", "age": [5, 1]}, "age"),
    ({"action": "migrate_hot", "target_node": 9}, "node 9"),
])
def test_damos_schemes_are_checked(guest: FakeGuest, scheme: dict[str, object], field: str) -> None:
    code, message = guest.error("damos", schemes=[scheme])
    assert code in ("EINVAL", "ENODEV")
    assert field in message
    assert guest.kernel.running_kdamonds() == []


def test_observed_regions_carry_page_counts_and_can_be_migrated_by_id(guest: FakeGuest, tmp_path: Path) -> None:
    guest.result("watch", pid=PID)
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    (tmp_path / f"{TRACEFS}/instances/{instance}/trace_pipe").write_text(
        aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 1.0))
    guest.syscalls.pages[PID] = {HEAP + page * 0x1000: 0 for page in range(0x20)}
    damon = guest.result("observe", pid=PID)["damon"]
    assert damon["columns"][-2:] == ["resident_pages", "written_pages"]
    assert [row[-2:] for row in damon["regions"]] == [[0, 0], [0, 0], [0, 0]]  # an empty pagemap
    moved = guest.result("migrate", pid=PID, node=2, budget_bytes=1 << 20, regions=[0, 2],
                         observation=damon["observation"])
    assert moved["moved_pages"] == 4 + 16
    guest.result("observe", pid=PID)
    code, message = guest.error("migrate", pid=PID, node=2, budget_bytes=1 << 20, regions=[1],
                                observation=damon["observation"])
    assert code == "ESTALE"
    assert f"observation {damon['observation']}" in message
    code, message = guest.error("migrate", pid=PID, node=2, budget_bytes=1 << 20, regions=[3])
    assert (code, "region ids [3]" in message) == ("EINVAL", True)


def test_the_slot_of_an_exited_process_is_reused(guest: FakeGuest, tmp_path: Path) -> None:
    for offset in range(4):
        guest.add_process(FakeProcess(PID + 10 + offset, [(HEAP, HEAP + 0x1000)], {0: 1}))
        guest.result("watch", pid=PID + 10 + offset)
    shutil.rmtree(tmp_path / f"proc/{PID + 10}")  # the process exits and its kdamond stops by itself
    (tmp_path / f"{KDAMONDS}/0/state").write_text("off\n")
    assert guest.result("watch", pid=PID)["kdamond"] == 0


def test_damos_schemes_on_different_nodes_run_on_kdamonds_of_their_own(guest: FakeGuest, tmp_path: Path) -> None:
    info = guest.result("damos", schemes=[
        {"action": "migrate_hot", "target_node": 0, "nodes": [1, 2], "nr_accesses": [2, 100],
         "quota_bytes": 32 << 20, "quota_weights": [0, 1000, 1000], "young": True},
        {"action": "migrate_cold", "target_node": 2, "nodes": [0], "young": False},
        {"action": "stat", "nodes": [2, 1]},  # the same memory as the first: the same kdamond
    ])
    assert [kdamond["nodes"] for kdamond in info["kdamonds"]] == [[1, 2], [0]]
    assert [scheme["nodes"] for scheme in info["schemes"]] == [[1, 2], [0], [1, 2]]
    slow, fast = (tmp_path / f"{KDAMONDS}/{kdamond['kdamond']}/contexts/0" for kdamond in info["kdamonds"])
    assert info["id"] == info["kdamonds"][0]["kdamond"]
    # Each kdamond watches only its nodes' memory blocks: node 0 has blocks 0-3, nodes 1 and 2 blocks 4-15.
    assert [(context / "targets/0/regions/0/start").read_text() for context in (slow, fast)] == [
        str(4 * 128 << 20), "0"]
    assert [(context / "schemes/nr_schemes").read_text() for context in (slow, fast)] == ["2", "1"]
    assert (slow / "schemes/1/action").read_text() == "stat"
    assert (slow / "schemes/0/quotas/weights/nr_accesses_permil").read_text() == "1000"
    assert (fast / "schemes/0/quotas/weights/nr_accesses_permil").read_text() == "0"
    # Young pages only, by excluding the others; and the other way round.
    assert [(slow / f"schemes/0/filters/0/{name}").read_text() for name in ("type", "matching")] == ["young", "N"]
    assert (fast / "schemes/0/filters/0/matching").read_text() == "Y"
    assert (slow / "schemes/1/filters/nr_filters").read_text() == "0"
    (slow / "schemes/1/stats/nr_tried").write_text("7\n")
    (fast / "schemes/0/stats/nr_tried").write_text("5\n")
    report = guest.result("damos_stop", id=info["id"])
    assert [scheme["stats"]["nr_tried"] for scheme in report["schemes"]] == [0, 5, 7]  # in request order
    assert guest.kernel.running_kdamonds() == []


def test_damos_that_cannot_start_all_its_kdamonds_leaves_none_running(guest: FakeGuest) -> None:
    for offset in range(3):
        guest.add_process(FakeProcess(PID + 10 + offset, [(HEAP, HEAP + 0x1000)], {0: 1}))
        guest.result("watch", pid=PID + 10 + offset)
    code, _ = guest.error("damos", schemes=[{"action": "migrate_hot", "target_node": 0, "nodes": [2]},
                                            {"action": "migrate_cold", "target_node": 2, "nodes": [0]}])
    assert code == "EBUSY"
    assert len(guest.kernel.running_kdamonds()) == 3


def test_observe_samples_where_each_regions_pages_are_in_one_query(guest: FakeGuest, tmp_path: Path) -> None:
    guest.result("watch", pid=PID)
    [instance] = os.listdir(tmp_path / f"{TRACEFS}/instances")
    (tmp_path / f"{TRACEFS}/instances/{instance}/trace_pipe").write_text(
        aggregated_lines(REGIONS, FIRST_KDAMOND_PID, 1.0))
    # Region 0 (4 pages) on node 0, region 1 (12 pages) never touched, region 2 (16 pages) half on node 2.
    guest.syscalls.pages[PID] = {
        **{HEAP + page * PAGE_SIZE: 0 for page in range(4)},
        **{HEAP + 0x10000 + page * PAGE_SIZE: 0 for page in range(8)},
        **{HEAP + 0x18000 + page * PAGE_SIZE: 2 for page in range(8)},
    }
    before = guest.syscalls.calls
    damon = guest.result("observe", pid=PID, soft_dirty=False, region_nodes=True)["damon"]
    assert guest.syscalls.calls == before + 1
    assert damon["columns"][-1] == "sampled_pages"
    assert [row[-1] for row in damon["regions"]] == [4, 12, 16]
    assert damon["region_nodes"] == [{"0": 4 * PAGE_SIZE}, {}, {"0": 8 * PAGE_SIZE, "2": 8 * PAGE_SIZE}]
    # Sampled within the budget, 4 pages a region at most: at a stride of 7 pages (4 would alias with
    # interleaving), spread so each half of region 2 gets one.
    sampled = guest.result("observe", pid=PID, soft_dirty=False, region_nodes=True,
                           region_nodes_budget_pages=12)["damon"]
    assert [row[-1] for row in sampled["regions"]] == [4, 2, 2]
    assert sampled["region_nodes"] == damon["region_nodes"]
    plain = guest.result("observe", pid=PID, soft_dirty=False)["damon"]
    assert plain["region_nodes"] is None
    assert "sampled_pages" not in plain["columns"]
