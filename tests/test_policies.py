"""Baseline policies on synthetic observations: what they set up, and what hot-cold moves when."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from policies.damos import Damos
from policies.hot_cold import HotCold, HotColdSettings
from policies.registry import BOUNDS, embedded_model_for, known_policies, make_policy, policy_kind
from policies.tiers import demotion_targets, speed_order
from testbed.errors import UserError
from testbed.units import MIB
from testbed.values import (
    MAX_UINT,
    Action,
    MemoryPolicy,
    MemoryPolicyKind,
    Migrate,
    NodeView,
    Observation,
    PolicyContext,
    PolicyKind,
    RegionView,
    TieringSettings,
)

HEADROOM = HotColdSettings().headroom_bytes


def node(node_id: int, free: int, tier: int | None, latency: float | None, cpus: tuple[int, ...] = (),
         total: int = 1024 * MIB) -> NodeView:
    return NodeView(node_id, total, free, cpus, tier, latency, latency, None, None)


def dram_cxl(fast_free: int) -> tuple[NodeView, ...]:
    return node(0, fast_free, 4, 80, (0, 1)), node(1, 1536 * MIB, 22, 250, total=2048 * MIB)


def context(nodes: tuple[NodeView, ...], budget: int = 256 * MIB) -> PolicyContext:
    return PolicyContext("a test machine", {}, nodes, interval_s=1.0, migration_budget=budget,
                         damon_sample_s=0.005, hints=(), run_dir=Path("/nonexistent"))


def region(region_id: int, start_mib: int, size_mib: int, rate: float, node_id: int, age: int = 5) -> RegionView:
    return RegionView(region_id, start_mib * MIB, (start_mib + size_mib) * MIB, rate, age, None,
                      {node_id: size_mib * MIB})


def observe(epoch: int, nodes: tuple[NodeView, ...], regions: list[RegionView]) -> Observation:
    return Observation(epoch, float(epoch), 1.0, nodes, tuple(regions), {}, {})


def moved(actions: list[Action], regions: list[RegionView]) -> list[RegionView]:
    """The regions after the migrations: each action's bytes move with it, prorated by overlap."""
    after = []
    for view in regions:
        nodes = dict(view.nodes)
        for action in actions:
            assert isinstance(action, Migrate)
            overlap = min(view.end, action.end) - max(view.start, action.start)
            if overlap <= 0:
                continue
            for source in [source for source in nodes if source != action.node]:
                shift = nodes[source] * overlap // view.size
                nodes[source] -= shift
                nodes[action.node] = nodes.get(action.node, 0) + shift
        after.append(replace(view, nodes={key: size for key, size in nodes.items() if size}))
    return after


def cost(action: Migrate, regions: list[RegionView]) -> int:
    """What the orchestrator charges a move: the bytes off the target node, prorated to the range."""
    return sum(sum(size for key, size in view.nodes.items() if key != action.node)
               * (min(view.end, action.end) - max(view.start, action.start)) // view.size
               for view in regions if view.start < action.end and action.start < view.end)


def ready_hot_cold(nodes: tuple[NodeView, ...], budget: int = 256 * MIB) -> HotCold:
    policy = HotCold()
    policy.setup(context(nodes, budget))
    return policy


# hot-cold ---------------------------------------------------------------------------------------


def test_hot_cold_promotes_the_hot_region_and_demotes_cold_data_to_make_room() -> None:
    nodes = dram_cxl(fast_free=HEADROOM)  # the fast node is full
    regions = [region(0, 0, 64, 0.6, 1), region(1, 64, 256, 0.0, 0), region(2, 320, 64, 0.3, 0)]
    policy = ready_hot_cold(nodes)
    assert policy.decide(observe(1, nodes, regions)) == []  # hot once: not yet a trend
    actions = policy.decide(observe(2, nodes, regions))
    demote, promote = actions
    assert isinstance(demote, Migrate) and isinstance(promote, Migrate)
    assert (promote.start, promote.end, promote.node) == (0, 64 * MIB, 0)
    assert promote.reason.startswith("hot:")
    assert demote.node == 1 and demote.reason.startswith("cold:")
    assert demote.start >= 64 * MIB and demote.end <= 320 * MIB  # the cold region, not the warm one
    assert demote.size == 64 * MIB  # as much room as the newcomer needs
    after = moved(actions, regions)
    assert after[0].nodes == {0: 64 * MIB}
    assert after[2].nodes == {0: 64 * MIB}


def test_hot_cold_keeps_within_the_budget_and_the_fast_nodes_room() -> None:
    regions = [region(0, 0, 64, 0.9, 1), region(1, 64, 64, 0.5, 1)]
    for fast_free, budget, allowed in ((HEADROOM + 32 * MIB, 256 * MIB, 32 * MIB),  # room binds
                                       (900 * MIB, 48 * MIB, 48 * MIB)):  # budget binds
        nodes = dram_cxl(fast_free)
        policy = ready_hot_cold(nodes, budget)
        policy.decide(observe(1, nodes, regions))
        actions = policy.decide(observe(2, nodes, regions))
        [promote] = actions
        assert isinstance(promote, Migrate) and promote.node == 0
        assert promote.start >= 0 and promote.end <= 64 * MIB  # the hottest region first
        assert cost(promote, regions) == allowed


def test_hot_cold_does_not_ping_pong_under_an_alternating_noisy_signal() -> None:
    nodes = dram_cxl(fast_free=HEADROOM)  # room for neither: one must make way for the other
    regions = [region(0, 0, 64, 0.0, 0), region(1, 64, 64, 0.0, 1)]
    policy = ready_hot_cold(nodes)
    moves = 0
    for epoch in range(1, 21):
        # Each is the hotter one every other interval: on average they are alike.
        high, low = (0.5, 0.2) if epoch % 2 else (0.2, 0.5)
        regions = [replace(regions[0], access_rate=high), replace(regions[1], access_rate=low)]
        actions = policy.decide(observe(epoch, nodes, regions))
        moves += len(actions)
        regions = moved(actions, regions)
    assert moves == 0


def test_hot_cold_ignores_a_single_busy_interval() -> None:
    nodes = dram_cxl(fast_free=800 * MIB)
    policy = ready_hot_cold(nodes)
    rates = [0.0, 0.9, 0.0, 0.0, 0.9, 0.0]
    actions = [policy.decide(observe(epoch, nodes, [region(0, 0, 64, rate, 1)])) for epoch, rate in enumerate(rates)]
    assert actions == [[]] * len(rates)


def test_hot_cold_follows_regions_that_split_and_merge() -> None:
    nodes = dram_cxl(fast_free=800 * MIB)
    policy = ready_hot_cold(nodes)
    policy.decide(observe(1, nodes, [region(0, 0, 64, 0.4, 1)]))
    # DAMON split the region: both halves inherit its heat and streak.
    halves = [region(0, 0, 32, 0.4, 1), region(1, 32, 32, 0.4, 1)]
    actions = policy.decide(observe(2, nodes, halves))
    assert actions == [Migrate(0, 64 * MIB, 0, actions[0].reason)]
    assert "2 adjacent regions" in actions[0].reason


def test_hot_cold_does_nothing_when_everything_is_placed_well() -> None:
    nodes = dram_cxl(fast_free=600 * MIB)
    regions = [region(0, 0, 64, 0.7, 0), region(1, 64, 512, 0.0, 1), region(2, 576, 32, 0.2, 0)]
    policy = ready_hot_cold(nodes)
    assert [policy.decide(observe(epoch, nodes, regions)) for epoch in range(1, 6)] == [[]] * 5


def test_hot_cold_on_one_node_has_nothing_to_do() -> None:
    nodes = (node(0, 800 * MIB, 4, 80, (0, 1)),)
    policy = ready_hot_cold(nodes)
    assert policy.decide(observe(1, nodes, [region(0, 0, 64, 0.9, 0)])) == []


# damos, interleave, kernel tiering ---------------------------------------------------------------


def test_damos_on_two_nodes_promotes_to_dram_and_demotes_to_cxl() -> None:
    nodes = dram_cxl(fast_free=800 * MIB)
    hot, cold = Damos().setup(context(nodes, budget=64 * MIB)).damos
    assert (hot.action, hot.target_node, hot.nodes) == ("migrate_hot", 0, (1,))
    assert (cold.action, cold.target_node, cold.nodes) == ("migrate_cold", 1, (0,))
    for scheme in (hot, cold):
        assert scheme.size[1] > 0 and scheme.age[1] > 0  # the kernel's default maxima of 0 would match nothing
        assert (scheme.quota_bytes, scheme.quota_reset_ms) == (32 * MIB, 1000)  # half the budget each way
    assert hot.nr_accesses == (2, MAX_UINT)  # 10% of 20 samples
    assert cold.nr_accesses == (0, 0)
    assert (hot.young, cold.young) == (True, False)  # page-level: move accessed pages up, spare them down
    assert hot.quota_weights[1] > 0 and cold.quota_weights == (0, 0, 0)
    assert cold.age[0] == 20  # two 1 s intervals of 100 ms aggregations


def test_damos_on_three_nodes_demotes_to_the_next_tier_by_the_guests_tiers() -> None:
    # Node 1 is the slowest (a lower tier), node 2 the middle one: ids do not give the order.
    nodes = (node(0, 800 * MIB, 4, 80, (0, 1)), node(1, 900 * MIB, 30, 400), node(2, 900 * MIB, 22, 250))
    hot, cold = Damos().setup(context(nodes)).damos
    assert (hot.target_node, hot.nodes) == (0, (2, 1))
    assert (cold.target_node, cold.nodes) == (2, (0,))


def test_damos_without_tiers_uses_hmat_latency() -> None:
    nodes = (node(0, 800 * MIB, None, 80, (0, 1)), node(1, 900 * MIB, None, 300), node(2, 900 * MIB, None, 150))
    hot, cold = Damos().setup(context(nodes)).damos
    assert (hot.target_node, cold.target_node) == (0, 2)


def test_interleave_and_kernel_tiering_set_up_the_kernel_and_then_do_nothing() -> None:
    nodes = dram_cxl(fast_free=800 * MIB)
    interleave, tiering = make_policy("interleave"), make_policy("kernel-tiering")
    assert interleave.setup(context(nodes)).memory == MemoryPolicy(MemoryPolicyKind.INTERLEAVE, "all")
    assert tiering.setup(context(nodes)).tiering == TieringSettings(numa_balancing=2, demotion_enabled=True)
    assert make_policy("first-touch").setup(context(nodes)).memory is None
    for policy in (interleave, tiering, make_policy("first-touch"), make_policy("damos")):
        assert policy.decide(observe(1, nodes, [region(0, 0, 64, 0.9, 1)])) == []


# tiers and registry --------------------------------------------------------------------------------


def test_speed_order_puts_unknown_cpuless_nodes_last_and_skips_empty_ones() -> None:
    nodes = (node(2, 900 * MIB, None, None), node(1, 900 * MIB, None, None, (2, 3)),
             node(3, 0, None, None, total=0), node(0, 900 * MIB, None, None, (0, 1)))
    assert [n.id for n in speed_order(nodes)] == [0, 1, 2]
    assert [n.id for n in demotion_targets(nodes)] == [1, 2]  # one tier: the rest in speed order


def test_the_registry_knows_every_baseline_and_the_oracle_bound() -> None:
    assert {"first-touch", "interleave", "kernel-tiering", "damos", "hot-cold", "oracle"} <= set(known_policies())
    assert "oracle" in BOUNDS
    assert policy_kind("oracle") is PolicyKind.BOUND
    assert policy_kind("hot-cold") is PolicyKind.BASELINE
    assert make_policy("hot-cold").name == "hot-cold"


def test_every_llm_policy_has_a_text_blind_twin_of_the_same_code() -> None:
    for name in ("llamas", "llamas-direct"):
        policy, twin = make_policy(name), make_policy(f"{name}-blind")
        assert type(twin) is type(policy) and policy_kind(name) is PolicyKind.LLM
        assert (twin.name, twin.kind, twin.text_blind, policy.text_blind) == (f"{name}-blind", PolicyKind.TWIN,
                                                                             True, False)
    assert "hot-cold-blind" not in known_policies()  # a baseline reads no text: it has no twin


@pytest.mark.parametrize(("name", "options", "words"), [
    ("tpp", None, "known: " + ", ".join(known_policies())),
    ("oracle", None, "bound"),
    ("first-touch", {"x": 1}, "takes no options"),
    ("hot-cold", {"hot_ratee": 0.1}, "unknown options ['hot_ratee']"),
    ("hot-cold", {"hot_rate": "high"}, "must be numbers"),
    ("damos", {"hot_share": 2.0}, "hot_share must be in (0, 1]"),
    ("hot-cold", {"headroom_bytes": 1.5}, "headroom_bytes must be a whole number"),
])
def test_registry_errors_name_the_policy_and_the_problem(name: str, options: dict[str, object] | None,
                                                        words: str) -> None:
    with pytest.raises(UserError) as error:
        make_policy(name, options)
    assert words in str(error.value)
    assert repr(name) in str(error.value)


def test_options_reach_the_policy() -> None:
    policy = make_policy("hot-cold", {"hot_observations": 3, "colder_ratio": 0.25})
    assert isinstance(policy, HotCold)
    assert (policy.settings.hot_observations, policy.settings.colder_ratio) == (3, 0.25)


def test_a_nearly_promoted_region_does_not_use_up_the_demotion_queue() -> None:
    """A region whose pages are all on the fast node but for sampling noise comes first in heat;
    the next hot region must still get room made for it (this once stalled promotion for good)."""
    nodes = dram_cxl(fast_free=HEADROOM)
    almost = replace(region(1, 200, 8, 0.5, 0), nodes={0: 8 * MIB - 8192, 1: 8192})
    regions = [region(0, 0, 64, 0.0, 0), almost, region(2, 300, 8, 0.4, 1)]
    policy = HotCold()
    policy.setup(context(nodes, budget=64 * MIB))
    policy.decide(observe(0, nodes, regions))
    actions = policy.decide(observe(1, nodes, regions))
    targets = {(action.start // MIB, action.node) for action in actions if isinstance(action, Migrate)}
    assert (300, 0) in targets  # the hot region on the slow node is promoted ...
    assert any(node == 1 for _, node in targets)  # ... after cold data makes room for it
    assert all(start != 200 for start, _ in targets)  # and the noise is left alone


@pytest.mark.parametrize(("policies", "llm", "expected"), [
    (("first-touch", "hot-cold", "oracle"), "local", None),  # nothing asks an LLM: no server
    (("first-touch", "llamas", "llamas-blind"), "local", "qwen1.5b"),
    (("llamas-blind",), "local:smollm2", "smollm2"),  # a twin runs its LLM policy's code
    (("llamas",), "http://127.0.0.1:9/v1", None),  # another endpoint answers
    (("llamas",), "replay:/nonexistent/llm-transcript.jsonl", None),  # a recorded transcript answers
])
def test_the_embedded_llm_server_runs_only_for_llm_policies_and_only_when_no_other_endpoint_is_set(
        monkeypatch: pytest.MonkeyPatch, policies: tuple[str, ...], llm: str, expected: str | None) -> None:
    monkeypatch.setenv("LLAMAS_LLM", llm)
    monkeypatch.setenv("LLAMAS_LLM_MODEL", "served-model")
    assert embedded_model_for(policies) == expected
