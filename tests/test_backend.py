"""The LLaMaS backend on hand-made machines and observations: costs, capacity, budget, hysteresis."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from policies.backend import Backend, BackendSettings, Confinement
from policies.cost_model import NodeModel
from policies.llamas_backend import BackendPolicy
from policies.region_table import RegionTable
from testbed.ledger import HEADROOM
from testbed.units import MIB
from testbed.validate import validate
from testbed.values import Migrate, NodeView, Observation, PolicyContext, RegionView

SAMPLE_S = 0.005
BUDGET = 256 * MIB
DRAM = NodeModel(0, 80, 80)
READOPT = NodeModel(1, 80, 800)
RAT = NodeModel(1, 600, 600, hot_latency_ns=50, hot_access_rate=200)
PMEM = NodeModel(1, 300, 900, wears_out=True)


def rate_for(accesses_per_page_per_s: float) -> float:
    """The DAMON access rate of pages used this often (the inverse of the backend's estimate)."""
    return 1 - math.exp(-accesses_per_page_per_s * SAMPLE_S)


def region(index: int, size_mib: int, node: int, rate: float, written: float | None = 0.0) -> RegionView:
    start = (1 + index) * 2**30  # far apart: regions of a test never touch
    return RegionView(index, start, start + size_mib * MIB, rate, 5, written, {node: size_mib * MIB})


def view(node: int, free_mib: float, total_mib: int = 1024) -> NodeView:
    return NodeView(node, total_mib * MIB, round(free_mib * MIB), (), None, None, None, None, None)


def observe(regions: Sequence[RegionView], free_mib: Sequence[float], epoch: int = 0) -> Observation:
    nodes = tuple(view(node, free) for node, free in enumerate(free_mib))
    return Observation(epoch, float(epoch), 1.0, nodes, tuple(regions), {}, {})


def backend(*models: NodeModel, budget: int = BUDGET, **settings: float) -> Backend:
    return Backend(models, interval_s=1.0, migration_budget=budget, damon_sample_s=SAMPLE_S,
                   settings=BackendSettings(**settings))  # type: ignore[arg-type]


def decide(policy: Backend, observation: Observation) -> list[Migrate]:
    """The backend's moves, which the orchestrator's validator must accept as they are."""
    moves = policy.decide(observation)
    verdict = validate(list(moves), observation, policy.migration_budget)
    assert verdict.rejected == (), verdict.rejected
    return moves


def moved(moves: Sequence[Migrate], regions: Sequence[RegionView]) -> dict[int, int]:
    """Region id -> the node a move sends it to."""
    return {r.id: m.node for m in moves for r in regions if m.start <= r.start and r.end <= m.end}


FULL = HEADROOM / MIB  # a node with this much free memory takes nothing more


# --- the devices the paper is about -----------------------------------------------------------


def test_read_mostly_hot_data_goes_to_read_optimised_memory_and_write_hot_data_to_dram() -> None:
    catalog = region(0, 64, node=0, rate=0.9, written=0.0)  # read on every request, never written
    counters = region(1, 64, node=1, rate=0.9, written=1.0)  # every page written in every interval
    regions = [catalog, counters]
    moves = decide(backend(DRAM, READOPT), observe(regions, [FULL, 500]))
    assert moved(moves, regions) == {catalog.id: 1, counters.id: 0}
    assert moves[0].node == 1  # the catalog leaves first, making the room the counters need


def test_without_pressure_read_mostly_data_may_stay_on_read_optimised_memory() -> None:
    catalog = region(0, 64, node=1, rate=0.9, written=0.0)
    assert decide(backend(DRAM, READOPT), observe([catalog], [500, 500])) == []


def test_hot_data_goes_to_rat_and_rarely_used_data_to_dram() -> None:
    dense = region(0, 4, node=0, rate=rate_for(240))  # above RAT's 200 uses per page per second: 50 ns
    lukewarm = region(1, 64, node=0, rate=rate_for(15))  # ~560 ns on RAT: better in DRAM
    sparse = region(2, 128, node=1, rate=rate_for(0.5))
    regions = [dense, lukewarm, sparse]
    assert moved(decide(backend(DRAM, RAT), observe(regions, [500, 500])), regions) == {dense.id: 1, sparse.id: 0}


def test_without_the_fast_case_rat_looks_slow_and_gets_nothing() -> None:
    dense = region(0, 4, node=0, rate=rate_for(240))
    worst_case_only = NodeModel(1, 600, 600)  # what HMAT alone says
    assert decide(backend(DRAM, worst_case_only), observe([dense], [500, 500])) == []


def test_write_heavy_data_leaves_pmem_and_read_mostly_data_makes_room_for_it() -> None:
    logs = region(0, 64, node=1, rate=0.5, written=0.9)
    archive = region(1, 64, node=0, rate=0.05, written=0.0)
    regions = [logs, archive]
    assert moved(decide(backend(DRAM, PMEM), observe(regions, [FULL, 500])), regions) == {logs.id: 0, archive.id: 1}


def test_wear_makes_writes_to_pmem_dearer() -> None:
    written = region(0, 64, node=1, rate=0.5, written=1.0)
    table = RegionTable.from_regions([written], [0, 1])
    worn, spared = (policy.cost_model.costs(table.sizes, *policy.cost_model.rates(table), [1])
                    for policy in (backend(DRAM, PMEM, wear_penalty=penalty) for penalty in (1.0, 0.0)))
    assert worn[0, 0] > 1.5 * spared[0, 0]


# --- confinement (a text's constraint, as hard limits) ----------------------------------------


def confined(policy: Backend, *confinements: Confinement) -> Backend:
    policy.confinements = confinements
    return policy


def test_a_confined_region_leaves_a_node_it_may_not_use_even_when_staying_would_be_faster() -> None:
    hot = region(0, 64, node=0, rate=0.9)
    keys = region(1, 8, node=1, rate=0.001)  # seldom read: not worth a byte of DRAM on speed alone
    regions = [hot, keys]
    pool = NodeModel(1, 250, 250)
    assert decide(backend(DRAM, pool), observe(regions, [FULL, 500])) == []
    secrets = Confinement(keys.start, keys.end, frozenset({0}), "secrets: off memory others can read")
    moves = decide(confined(backend(DRAM, pool), secrets), observe(regions, [FULL, 500]))
    assert [(m.start, m.end, m.node, m.reason) for m in moves if m.node == 0] == \
        [(keys.start, keys.end, 0, "secrets: off memory others can read")]
    assert sum(m.size for m in moves if m.node == 1) >= keys.end - keys.start  # the room it needs, made


def test_a_confined_region_never_goes_where_it_may_not_even_when_that_would_be_faster() -> None:
    keys = region(0, 8, node=0, rate=0.9)
    faster = NodeModel(1, 40, 40)
    assert moved(decide(backend(DRAM, faster), observe([keys], [500, 500])), [keys]) == {keys.id: 1}
    only_dram = Confinement(keys.start, keys.end, frozenset({0}))
    assert decide(confined(backend(DRAM, faster), only_dram), observe([keys], [500, 500])) == []


def test_only_the_confined_range_of_a_larger_region_moves() -> None:
    mixed = region(0, 64, node=1, rate=0.001)  # DAMON sees one cold region; the keys are 8 MiB inside it
    keys = Confinement(mixed.start + 16 * MIB, mixed.start + 24 * MIB, frozenset({0}))
    moves = decide(confined(backend(DRAM, NodeModel(1, 250, 250)), keys), observe([mixed], [500, 500]))
    assert [(m.start, m.end, m.node) for m in moves] == [(keys.start, keys.end, 0)]


def test_a_confined_range_is_judged_by_where_its_own_pages_are() -> None:
    # DAMON sees one region over the keys and a busier neighbour; half its pages are on the pool, all of them
    # the neighbour's. Prorated, the keys would look half on the pool; their own residency says not.
    start = 2**30
    merged = RegionView(0, start, start + 64 * MIB, 0.001, 5, 0.0, {0: 32 * MIB, 1: 32 * MIB})
    policy = backend(DRAM, NodeModel(1, 250, 250))
    on_dram = Confinement(start, start + 32 * MIB, frozenset({0}), resident={0: 32 * MIB})
    assert decide(confined(policy, on_dram), observe([merged], [500, 500])) == []
    partly_pooled = Confinement(start, start + 32 * MIB, frozenset({0}), resident={0: 28 * MIB, 1: 4 * MIB})
    moves = decide(confined(policy, partly_pooled), observe([merged], [500, 500]))
    assert [(m.start, m.end, m.node) for m in moves] == [(start, start + 32 * MIB, 0)]


def test_what_a_move_of_a_confined_range_left_behind_moves_on_the_next_interval() -> None:
    keys = region(0, 8, node=1, rate=0.001)
    policy = confined(backend(DRAM, NodeModel(1, 250, 250)), Confinement(keys.start, keys.end, frozenset({0})))
    assert [m.node for m in decide(policy, observe([keys], [500, 500], epoch=0))] == [0]
    # The guest ran out of budget: a quarter stayed on the pool. The cooldown does not hold it there.
    left = RegionView(0, keys.start, keys.end, 0.001, 5, 0.0, {0: 6 * MIB, 1: 2 * MIB})
    assert [(m.start, m.node) for m in decide(policy, observe([left], [500, 500], epoch=1))] == [(keys.start, 0)]


def test_a_table_cut_at_edges_shares_each_regions_bytes_among_its_parts() -> None:
    regions = [region(0, 8, node=0, rate=0.5), region(1, 4, node=1, rate=0.5)]
    table = RegionTable.from_regions(regions, [0, 1])
    edges = np.array([regions[0].start + 2 * MIB, regions[0].start + 6 * MIB, regions[1].end])
    cut = table.cut(edges)
    assert (cut.ends - cut.starts).tolist() == [2 * MIB, 4 * MIB, 2 * MIB, 4 * MIB]
    assert cut.resident.tolist() == [[2 * MIB, 4 * MIB, 2 * MIB, 0], [0, 0, 0, 4 * MIB]]
    assert table.cut(np.array([regions[0].start])) is table  # an edge at a region's start cuts nothing


# --- capacity and budget ----------------------------------------------------------------------


def test_only_the_hottest_regions_that_fit_are_promoted() -> None:
    rates = [0.2, 0.9, 0.5, 0.8, 0.1]
    regions = [region(i, 64, node=1, rate=rate) for i, rate in enumerate(rates)]
    moves = decide(backend(DRAM, NodeModel(1, 250, 250)), observe(regions, [FULL + 130, 500]))
    assert moved(moves, regions) == {1: 0, 3: 0}


def test_the_budget_goes_to_the_best_gain_per_byte() -> None:
    regions = [region(0, 64, node=1, rate=0.3), region(1, 64, node=1, rate=0.9), region(2, 32, node=1, rate=0.9)]
    moves = decide(backend(DRAM, NodeModel(1, 250, 250), budget=100 * MIB), observe(regions, [500, 500]))
    assert moved(moves, regions) == {1: 0, 2: 0}


def test_a_displacement_counts_against_the_budget_and_a_large_region_moves_in_parts() -> None:
    catalog = region(0, 64, node=0, rate=0.9, written=0.0)
    counters = region(1, 64, node=1, rate=0.9, written=1.0)
    moves = decide(backend(DRAM, READOPT, budget=100 * MIB), observe([catalog, counters], [FULL, 500]))
    assert [(m.start, m.size, m.node) for m in moves] == [(catalog.start, 50 * MIB, 1), (counters.start, 50 * MIB, 0)]


def test_a_move_under_way_goes_on_where_it_stopped_and_never_back() -> None:
    policy = backend(DRAM, NodeModel(1, 250, 250), budget=64 * MIB)
    big = region(0, 256, node=1, rate=0.9)
    made: list[Migrate] = []
    for epoch in range(6):
        on_dram = sum(m.size for m in made)
        rate = 0.9 if epoch < 4 else 0.001  # then it turns cold: still no way back during the cooldown
        view = RegionView(0, big.start, big.end, rate, 5, 0.0,
                          {node: size for node, size in ((0, on_dram), (1, big.size - on_dram)) if size})
        made += decide(policy, observe([view], [500 - on_dram / MIB, 500], epoch))
    assert [(m.start - big.start, m.size, m.node) for m in made] == [(i * 64 * MIB, 64 * MIB, 0) for i in range(4)]


def test_a_swap_between_full_nodes_waits_for_room() -> None:
    catalog = region(0, 64, node=0, rate=0.9, written=0.0)
    counters = region(1, 64, node=1, rate=0.9, written=0.8)
    assert decide(backend(DRAM, READOPT), observe([catalog, counters], [FULL, FULL])) == []


def test_a_node_below_the_kernels_headroom_is_brought_back_to_it_first() -> None:
    # First touch left DRAM 54 MiB below the headroom the validator keeps: nothing can come in until that
    # much leaves. The deficit is paid once for everything that waits to come in, not by the first part.
    table = region(0, 840, node=0, rate=0.0, written=0.02)  # loaded first, touched now and then
    counters = region(1, 96, node=1, rate=0.1, written=1.0)  # written all the time
    policy = backend(DRAM, READOPT, budget=64 * MIB)
    moves = decide(policy, observe([table, counters], [FULL - 54, 500]))
    out = sum(m.size for m in moves if m.node == 1)
    assert out >= 54 * MIB and [m.node for m in moves][-1] == 0
    assert sum(m.size for m in moves) <= 64 * MIB


def test_room_is_counted_as_the_validator_counts_it_where_regions_span_unmapped_gaps() -> None:
    # DAMON regions span unmapped gaps: half of this one's range holds pages. Moving a part of it frees
    # half that part (the validator prorates resident bytes), not all of it.
    gappy = RegionView(0, 2**30, 2**30 + 256 * MIB, 0.0, 5, 0.0, {0: 128 * MIB})
    hot = region(1, 32, node=1, rate=0.9, written=1.0)
    moves = decide(backend(DRAM, READOPT, budget=64 * MIB), observe([gappy, hot], [FULL, 500]))
    assert moved(moves, [gappy, hot]) == {hot.id: 0}


def test_a_region_mostly_moved_at_its_end_lately_can_still_make_room() -> None:
    # DAMON merged regions after last interval's move of 63 MiB near the table's end: what is left to go on
    # towards where that move went starts at the region's start, not after the move.
    policy = backend(DRAM, READOPT, budget=80 * MIB)
    start = 2**30
    policy.remember([Migrate(start + 192 * MIB, start + 255 * MIB, 1)], epoch=0)
    table = RegionView(0, start, start + 256 * MIB, 0.0, 5, 0.0, {0: 193 * MIB, 1: 63 * MIB})
    counters = region(1, 32, node=1, rate=0.9, written=1.0)
    moves = decide(policy, observe([table, counters], [FULL, 500], epoch=1))
    assert moved(moves, [table, counters]) == {counters.id: 0}
    assert all(m.end <= start + 192 * MIB for m in moves if m.node == 1)  # not what is already there


def test_a_move_that_does_not_pay_for_the_room_it_needs_does_not_stop_better_ones() -> None:
    # One hot page gains more per byte than anything, but less than it costs to move out the least a
    # displacement moves (a huge page of the table): it is skipped, and the counters still come in.
    page = RegionView(0, 2**30, 2**30 + 4096, rate_for(200), 5, 1.0, {1: 4096})
    table = region(1, 256, node=0, rate=0.01, written=0.33)
    counters = region(2, 64, node=1, rate=rate_for(42), written=1.0)  # all 42 uses a second written
    regions = [page, table, counters]
    assert moved(decide(backend(DRAM, READOPT), observe(regions, [FULL, 500])), regions) == {counters.id: 0}


def test_crumbs_are_not_worth_a_move() -> None:
    # A few pages whose move would gain a fraction of a millisecond: not worth a request to the guest.
    crumbs = RegionView(0, 2**30, 2**30 + 3 * 4096, rate_for(20), 5, 0.5, {1: 3 * 4096})
    assert decide(backend(DRAM, READOPT), observe([crumbs], [500, 500])) == []


# --- hysteresis -------------------------------------------------------------------------------


def test_an_optimal_placement_makes_no_moves() -> None:
    regions = [region(0, 64, node=0, rate=0.9, written=0.5), region(1, 256, node=1, rate=0.01)]
    assert decide(backend(DRAM, PMEM), observe(regions, [FULL, 500])) == []


def test_a_gain_within_the_margin_moves_nothing() -> None:
    warm = region(0, 64, node=1, rate=0.9)
    nearly_dram = NodeModel(1, 84, 84)  # 5% slower, less than the 10% margin
    assert decide(backend(DRAM, nearly_dram), observe([warm], [500, 500])) == []
    assert decide(backend(DRAM, nearly_dram, margin=0.01), observe([warm], [500, 500])) != []


def test_a_gain_smaller_than_the_move_costs_moves_nothing() -> None:
    barely_used = region(0, 256, node=1, rate=rate_for(0.05))
    assert decide(backend(DRAM, NodeModel(1, 250, 250)), observe([barely_used], [500, 500])) == []


def test_a_moved_range_stays_put_during_the_cooldown_then_may_move_again() -> None:
    policy = backend(DRAM, NodeModel(1, 250, 250), cooldown_intervals=3)
    hot = region(0, 64, node=1, rate=0.9)
    assert moved(decide(policy, observe([hot], [500, 500], epoch=0)), [hot]) == {hot.id: 0}
    # The pattern flips: now it is cold, and on DRAM, which another region needs.
    cold_now = region(0, 64, node=0, rate=0.001)
    rival = region(1, 64, node=1, rate=0.9)
    for epoch in (1, 2):
        moves = decide(policy, observe([cold_now, rival], [FULL, 500], epoch=epoch))
        assert cold_now.id not in moved(moves, [cold_now, rival])
    assert moved(decide(policy, observe([cold_now, rival], [FULL, 500], epoch=3)), [cold_now, rival]) == {
        cold_now.id: 1, rival.id: 0}


def test_noisy_rates_do_not_flip_regions_back_and_forth() -> None:
    policy = backend(DRAM, NodeModel(1, 250, 250))
    where = {0: 0, 1: 1}
    moves = []
    for epoch in range(20):
        rates = (0.6, 0.5) if epoch % 2 else (0.5, 0.6)  # two equally warm regions trade places in DAMON's eyes
        regions = [region(i, 64, node=where[i], rate=rates[i]) for i in (0, 1)]
        free = [FULL + 64 - 64 * list(where.values()).count(0), 500]
        made = moved(decide(policy, observe(regions, free, epoch)), regions)
        where.update(made)
        moves += [(epoch, region_id) for region_id in made]
    assert moves == [(0, 0), (0, 1)]  # one swap on the first sample, none for the noise that follows


# --- what the backend cannot see ---------------------------------------------------------------


def test_a_node_without_a_model_is_left_alone() -> None:
    hot = region(0, 64, node=2, rate=0.9)
    cold = region(1, 64, node=0, rate=0.001)
    moves = decide(backend(DRAM, NodeModel(1, 250, 250)), observe([hot, cold], [FULL, 500, 500]))
    assert hot.id not in moved(moves, [hot, cold]) and all(move.node != 2 for move in moves)


def test_an_unsampled_region_is_not_moved() -> None:
    unsampled = RegionView(0, 2**30, 2**30 + 64 * MIB, 0.9, 5, 0.5, {})
    assert decide(backend(DRAM, NodeModel(1, 250, 250)), observe([unsampled], [500, 500])) == []


def test_a_split_region_is_gathered_when_it_pays() -> None:
    half = 32 * MIB
    split_hot = RegionView(0, 2**30, 2**30 + 2 * half, 0.9, 5, 0.5, {0: half, 1: half})
    moves = decide(backend(DRAM, NodeModel(1, 250, 250)), observe([split_hot], [500, 500]))
    assert [(m.start, m.end, m.node) for m in moves] == [(split_hot.start, split_hot.end, 0)]


def test_rates_come_from_damon_samples_and_written_pages() -> None:
    policy = backend(DRAM, READOPT)
    regions = [region(0, 4, 0, rate_for(240), 0.0), region(1, 4, 0, 0.0, 0.5), region(2, 4, 0, rate_for(100), None)]
    reads, writes = policy.cost_model.rates(RegionTable.from_regions(regions, [0, 1]))
    assert reads[0] == pytest.approx(240, rel=1e-3) and writes[0] == 0
    assert writes[1] == pytest.approx(math.log(2), rel=1e-3)  # half the pages written in 1 s, unseen by DAMON
    assert reads[2] + writes[2] == pytest.approx(100, rel=1e-3) and writes[2] == pytest.approx(50, rel=1e-3)


def test_a_written_share_of_pages_is_a_write_rate_not_a_share_of_the_accesses() -> None:
    # Half the pages written in the interval says ~0.69 writes per page per second, whatever DAMON's rate;
    # every page written says only "at least that often", so the writes are taken as all the accesses.
    policy = backend(DRAM, READOPT)
    regions = [region(0, 4, 0, rate_for(240), 0.5), region(1, 4, 0, rate_for(240), 1.0)]
    reads, writes = policy.cost_model.rates(RegionTable.from_regions(regions, [0, 1]))
    assert writes[0] == pytest.approx(math.log(2), rel=1e-3) and reads[0] == pytest.approx(240 - math.log(2), rel=1e-3)
    assert writes[1] == pytest.approx(240, rel=1e-3) and reads[1] == 0


def test_a_read_mostly_index_goes_to_a_fast_memory_that_wears_and_a_write_hot_log_does_not() -> None:
    fast_wearing = NodeModel(1, 50, 60, wears_out=True)
    index = region(0, 64, node=0, rate=0.9, written=0.6)  # read on every request; most pages updated now and then
    log = region(1, 64, node=0, rate=0.2, written=1.0)  # every page written in every interval
    regions = [index, log]
    assert moved(decide(backend(DRAM, fast_wearing), observe(regions, [500, 500])), regions) == {index.id: 1}


def test_the_region_table_sorts_by_address() -> None:
    regions = [RegionView(1, 2 * MIB, 4 * MIB, 0.5, 1, 0.0, {1: 2 * MIB}),
               RegionView(0, 0, 2 * MIB, 0.5, 1, 0.0, {0: MIB, 1: MIB})]
    table = RegionTable.from_regions(regions, [0, 1])
    assert table.starts.tolist() == [0, 2 * MIB]


# --- inputs and speed -------------------------------------------------------------------------


@pytest.mark.parametrize(("model", "message"), [
    (lambda: NodeModel(0, 0, 80), "latencies must be positive"),
    (lambda: NodeModel(0, 600, 600, hot_latency_ns=700, hot_access_rate=200), "must be faster"),
    (lambda: NodeModel(0, 600, 600, hot_latency_ns=50), "needs both"),
    (lambda: BackendSettings(margin=-1, saturation=1.0), "margin=-1, saturation=1.0"),
    (lambda: Backend([DRAM], interval_s=0, migration_budget=1, damon_sample_s=SAMPLE_S), "positive interval"),
])
def test_bad_input_gets_a_clear_error(model: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        model()  # type: ignore[operator]


def test_ten_thousand_regions_are_decided_quickly() -> None:
    rng = np.random.default_rng(1)
    size = 160 * 1024
    regions = [RegionView(i, i * size, (i + 1) * size, float(rng.random() ** 3), 5, float(rng.random() ** 2),
                          {int(rng.integers(3)): size}) for i in range(10_000)]
    policy = backend(DRAM, READOPT, NodeModel(2, 300, 900, wears_out=True), budget=64 * MIB)
    observation = observe(regions, [600, 600, 600])
    table = policy.table(observation)
    started = time.perf_counter()
    moves = policy.plan(table, observation.nodes, 0)
    assert time.perf_counter() - started < 0.1  # generous for CI; benchmarks/backend.py measures it properly
    assert 0 < sum(m.size for m in moves) <= 64 * MIB


def test_the_backend_policy_costs_nodes_from_hmat_and_notes_the_rest(tmp_path: Path) -> None:
    nodes = (NodeView(0, 2**30, 2**30, (0, 1), 4, 80, 80, 64e9, 64e9),
             NodeView(1, 2**30, 2**30, (), None, None, None, None, None))
    context = PolicyContext("", {0: "", 1: ""}, nodes, 1.0, 64 * MIB, SAMPLE_S, (), tmp_path)
    policy = BackendPolicy()
    with pytest.raises(RuntimeError, match="before setup"):
        policy.decide(observe([], [500, 500]))
    setup = policy.setup(context)
    assert setup.notes[0] == "node 1: no latency known; the backend leaves its pages where they are"
    assert setup.tiering is None  # the declared start state has NUMA balancing off already
    assert policy.decide(observe([region(0, 64, node=1, rate=0.9)], [500, 500])) == []
