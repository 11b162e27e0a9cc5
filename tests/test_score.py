"""The score: modeled memory time of hand-made runs, worked out by hand."""

from __future__ import annotations

from dataclasses import replace as with_fields

import numpy as np
import pytest
from synthetic_runs import epoch, layout, nodes, on, split, system, timeline

from testbed.ledger import HEADROOM
from testbed.memtouch import RegionLayout
from testbed.model import HeldData
from testbed.score import (
    LINE_BYTES,
    YEAR_S,
    TimelineError,
    Wear,
    access_costs,
    capacities,
    lower_bound_s,
    placed_shares,
    run_data,
    score,
    score_run,
    violation_byte_s,
)
from testbed.timeline import EpochRecord, RunStatus
from testbed.units import MIB
from testbed.workload import Pattern

NS = 1e-9
GiB = 2**30
# dram-cxl: node 0 ddr5-local (80ns reads and writes), node 1 cxl-expander (250ns), one socket.
DRAM_CXL = nodes((GiB, 100 * MIB, 4 * MIB), (2 * GiB, 2 * GiB, 0))


def two_chunks_three_epochs() -> list[EpochRecord]:
    return [
        epoch(0, reads=[[100, 10]], writes=[[20, 0]], residency=[[on(0), on(1)]]),
        epoch(1, reads=[[0, 50]], writes=[[0, 50]], residency=[[on(1), split(n0=256, n1=256)]], migrated=2 * MIB),
        epoch(2, reads=[[1000, 0]], residency=[[on(1), on(0)]]),
    ]


def test_access_and_migration_time_by_hand() -> None:
    record = timeline(layout(2), two_chunks_three_epochs(), DRAM_CXL)
    result = score_run(record, system("dram-cxl"), throughput=GiB)
    # epoch 0: chunk 0 on DRAM: (100 reads + 20 writes) x 80ns; chunk 1 on CXL: 10 x 250ns  -> 12100ns
    # epoch 1: chunk 0 idle; chunk 1 half on each: 100 accesses x (0.5 x 80 + 0.5 x 250)ns  -> 16500ns
    # epoch 2: chunk 0 on CXL: 1000 x 250ns                                                  -> 250000ns
    assert result.access_time_s == pytest.approx((12100 + 16500 + 250000) * NS)
    # 2MiB migrated at 1GiB/s
    assert result.migration_time_s == pytest.approx(2 / 1024)
    assert result.modeled_time_s == pytest.approx(278600 * NS + 2 / 1024)
    assert result.migrated_bytes == 2 * MIB
    # everything on DRAM: (130 + 100 + 1000) x 80ns
    assert result.lower_bound_s == pytest.approx(1230 * 80 * NS)
    assert result.epochs == 3
    assert result.unsampled == ()


def test_rat_latency_follows_each_chunks_access_rate() -> None:
    # rat.yaml: 50ns at 200 accesses per 4KiB page per second or more, 600ns at 0, linear between.
    pages = 512  # a 2MiB chunk
    hot, warm = 200 * pages, 100 * pages  # per 1s interval: 200 and 100 accesses per page per second
    records = [epoch(0, reads=[[hot, warm]], residency=[[on(1), on(1)]])]
    start = nodes((GiB, 0, 0), (GiB, GiB, 4 * MIB))
    result = score_run(timeline(layout(2), records, start), system("dram-rat"), throughput=1e9)
    # hot chunk at 50ns; warm chunk halfway: 600 + (50 - 600) x 0.5 = 325ns
    assert result.access_time_s == pytest.approx((hot * 50 + warm * 325) * NS)
    # best per chunk: the hot chunk on RAT (50 < 80ns), the warm one on DRAM (80 < 325ns)
    assert result.lower_bound_s == pytest.approx((hot * 50 + warm * 80) * NS)


def test_rat_rate_is_per_second_of_the_interval() -> None:
    warm = 100 * 512  # 100 accesses per page in a 0.5s interval: 200 per second, the hot rate
    records = [epoch(0, reads=[[0]], writes=[[warm]], residency=[[on(1)]])]
    start = nodes((GiB, 0, 0), (GiB, GiB, 2 * MIB))
    result = score_run(timeline(layout(1), records, start, interval_s=0.5), system("dram-rat"), throughput=1e9)
    assert result.access_time_s == pytest.approx(warm * 50 * NS)  # writes keep the read/write ratio (1 for RAT)


def test_remote_socket_adds_the_link_latency() -> None:
    # two-socket-cxl: node 1 is DDR5 on socket 1, reached from socket 0 over a 60ns link.
    records = [epoch(0, reads=[[10, 10, 10]], residency=[[on(0), on(1), on(2)]])]
    start = nodes((GiB, GiB, 0), (GiB, GiB, 0), (GiB, GiB, 0))
    result = score_run(timeline(layout(3), records, start), system("two-socket-cxl"), throughput=1e9)
    assert result.access_time_s == pytest.approx(10 * (80 + 140 + 250) * NS)


def test_write_latency_differs_from_read_latency() -> None:
    # three-tier: node 2 is optane-pmem, 300ns reads and 900ns writes.
    records = [epoch(0, reads=[[3]], writes=[[2]], residency=[[on(2)]])]
    start = nodes((GiB, GiB, 0), (GiB, GiB, 0), (GiB, GiB, 2 * MIB))
    result = score_run(timeline(layout(1), records, start), system("three-tier"), throughput=1e9)
    assert result.access_time_s == pytest.approx((3 * 300 + 2 * 900) * NS)


def test_an_unsampled_chunk_is_charged_on_its_slowest_node_and_listed() -> None:
    records = [epoch(0, reads=[[10], [7, 5]], residency=[[on(0)], [on(0), {}]])]
    result = score_run(timeline(layout(1, 2), records, DRAM_CXL), system("dram-cxl"), throughput=1e9)
    assert result.access_time_s == pytest.approx((17 * 80 + 5 * 250) * NS)
    assert result.unsampled == ((0, 1, 1),)  # epoch 0, region 1, its chunk 1


def test_a_short_last_chunk_has_its_own_size() -> None:
    short = RegionLayout("r0", Pattern.UNIFORM, 0x7F0000000000, 3 * MIB, 2 * MIB, 768, 2)  # 2MiB + 1MiB
    data = run_data(timeline((short,), [epoch(0, reads=[[0, 256]])], DRAM_CXL), 2)
    assert data.chunk_bytes.tolist() == [2 * MIB, MIB]
    assert data.access_rate[0, 1] == pytest.approx(1.0)  # 256 accesses over 256 pages in 1s


def test_lower_bound_is_below_every_placement() -> None:
    rng = np.random.default_rng(5)
    reads = rng.integers(0, 1000, (4, 3)).tolist()
    records = [epoch(k, reads=[reads[k]], residency=[[on(int(n)) for n in rng.integers(0, 2, 3)]]) for k in range(4)]
    result = score_run(timeline(layout(3), records, DRAM_CXL), system("dram-cxl"), throughput=1e9)
    assert result.lower_bound_s <= result.access_time_s


def test_costs_are_per_node_and_the_bound_takes_the_cheapest() -> None:
    data = run_data(timeline(layout(1), [epoch(0, reads=[[4]], writes=[[1]])], DRAM_CXL), 2)
    costs = access_costs(data, system("dram-cxl"))
    assert costs[0, 0].tolist() == pytest.approx([5 * 80 * NS, 5 * 250 * NS])
    assert lower_bound_s(costs) == pytest.approx(5 * 80 * NS)
    assert score(data, costs, placed_shares(data, costs), 1e9).access_time_s == pytest.approx(5 * 80 * NS)  # on(0)


def test_a_run_with_no_epochs_scores_zero() -> None:
    record = timeline(layout(1), [], DRAM_CXL, status=RunStatus.FAILED, reason="boom")
    result = score_run(record, system("dram-cxl"), 1e9)
    assert (result.modeled_time_s, result.lower_bound_s, result.epochs) == (0.0, 0.0, 0)


@pytest.mark.parametrize(("bad", "message"), [
    (epoch(0, reads=[[1]]), "epoch 0: 'reads' of region 'r0' has 1 chunks, the start record 2"),
    (epoch(0, reads=[[1, 2], [3]]), "epoch 0: 'reads' has 2 regions, the start record 1"),
    (epoch(0, reads=[[1, 2]], residency=[[on(0), on(5)]]), "has 512 pages on node 5; the system has nodes 0-1"),
])
def test_a_record_that_contradicts_its_start_is_an_error(bad: EpochRecord, message: str) -> None:
    with pytest.raises(TimelineError, match=message):
        run_data(timeline(layout(2), [bad], DRAM_CXL), 2)


def test_capacity_is_what_the_workload_held_plus_free_memory_above_the_headroom() -> None:
    start = timeline(layout(1), [], nodes((GiB, 10 * MIB, 900 * MIB), (GiB, 500 * MIB, 0))).start
    capacity = capacities(start, 3)
    assert 64 * MIB == HEADROOM
    # node 0: less free memory than the headroom, so only what it held; node 1: 500 - 64; node 2: absent
    assert capacity.tolist() == [900 * MIB, 436 * MIB, 0]


def test_wear_counts_a_line_per_write_on_the_node_that_held_it_and_the_life_it_leaves() -> None:
    plain = system("dram-cxl")
    record = timeline(layout(2), two_chunks_three_epochs(), DRAM_CXL)
    data = run_data(record, 2)
    costs = access_costs(data, plain)
    # writes: epoch 0 chunk 0 on DRAM (20); epoch 1 chunk 1 half on each node (50)
    assert Wear.of(data, placed_shares(data, costs), plain) == Wear((45 * LINE_BYTES, 25 * LINE_BYTES), None, None)
    cxl = plain.nodes[1]
    wearing = with_fields(plain, nodes=(plain.nodes[0], with_fields(cxl, device=with_fields(cxl.device,
                                                                                           endurance_writes=100))))
    wear = Wear.of(data, placed_shares(data, costs), wearing)
    assert wear.worn_bytes == 25 * LINE_BYTES
    # 3 one-second epochs wrote 25 lines; the node takes 100 times its size
    assert wear.life_years == pytest.approx(cxl.size * 100 / (25 * LINE_BYTES) * 3 / YEAR_S)
    unwritten = run_data(timeline(layout(2), [epoch(0, reads=[[1, 1]])], DRAM_CXL), 2)
    unwritten_shares = placed_shares(unwritten, access_costs(unwritten, wearing))
    assert Wear.of(unwritten, unwritten_shares, wearing) == Wear((0.0, 0.0), 0.0, None)


def test_constraints_count_the_bytes_and_seconds_a_region_spent_where_its_data_may_not_live() -> None:
    plain = system("dram-cxl")
    cxl = plain.nodes[1]
    pooled = with_fields(plain, nodes=(plain.nodes[0], with_fields(cxl, device=with_fields(cxl.device, exposed=True))))
    data = run_data(timeline(layout(2, 1), [
        epoch(0, reads=[[1, 1], [1]], residency=[[on(0), on(1)], [on(1)]]),
        epoch(1, reads=[[1, 1], [1]], residency=[[on(0), split(n0=128, n1=384)], [on(0)]]),
    ], DRAM_CXL), 2)
    shares = placed_shares(data, access_costs(data, pooled))
    # r0 holds secrets: its second chunk (2 MiB) is on the exposed CXL pool for one epoch and three quarters of
    # the next; r1 holds a durable journal, and neither node keeps data without power: 2 MiB for both epochs.
    assert violation_byte_s(data, shares, pooled, (HeldData.SECRETS, None)) == pytest.approx(1.75 * 2 * MIB)
    assert violation_byte_s(data, shares, pooled, (None, HeldData.DURABLE)) == pytest.approx(2 * 2 * MIB)
    assert violation_byte_s(data, shares, plain, (HeldData.SECRETS, None)) == 0  # nothing is exposed there
    assert violation_byte_s(data, shares, pooled, (None, None)) is None
    with pytest.raises(TimelineError, match="what 1 regions hold, the run has 2"):
        violation_byte_s(data, shares, pooled, (HeldData.SECRETS,))
