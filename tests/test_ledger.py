"""The ledger on hand-made nodes and regions: room, the cost of a move, budget, and merging adjacent moves."""

from __future__ import annotations

import pytest

from testbed.ledger import HEADROOM, Ledger, MoveCost, Refusal, merged, move_cost, node_room
from testbed.units import MIB
from testbed.values import Migrate, NodeView, RegionView


def node(node_id: int, free: int, total: int = 1024 * MIB) -> NodeView:
    return NodeView(node_id, total, free, (), None, None, None, None, None)


def region(start_mib: int, size_mib: int, nodes: dict[int, int]) -> RegionView:
    return RegionView(0, start_mib * MIB, (start_mib + size_mib) * MIB, 0.5, 1, None, nodes)


def test_room_is_free_memory_above_the_headroom_on_nodes_with_memory_only() -> None:
    assert HEADROOM == 64 * MIB
    room = node_room([node(0, 100 * MIB), node(1, 10 * MIB), node(2, 0, total=0)])
    assert room == {0: 36 * MIB, 1: -54 * MIB}  # node 1 is below the headroom; node 2 has no memory


def test_a_move_costs_the_resident_bytes_it_covers_off_its_target_prorated_and_rounded_down() -> None:
    regions = [region(0, 2, {0: MIB, 1: MIB}), region(2, 2, {1: 2 * MIB})]
    cost = move_cost(Migrate(MIB, 3 * MIB, 2), regions)
    assert (cost.target, cost.moving, dict(cost.freed)) == (2, 2 * MIB, {0: MIB // 2, 1: MIB // 2 + MIB})
    # A region spanning an unmapped gap: only its resident bytes move, prorated.
    gappy = region(0, 4, {0: MIB + 1})
    assert move_cost(Migrate(0, 2 * MIB, 1), [gappy]).moving == (MIB + 1) // 2


def test_an_unsampled_region_counts_as_wholly_off_every_node() -> None:
    unsampled = region(0, 4, {})
    assert move_cost(Migrate(0, MIB, 0), [unsampled]).moving == MIB


def test_a_sub_page_move_is_a_move_not_a_no_op() -> None:
    # 100 bytes of a region on node 1, sent to node 0: the validator charges 100 bytes; only 0 is a no-op.
    ledger = Ledger.of([node(0, 512 * MIB), node(1, 512 * MIB)], budget=64 * MIB)
    regions = [region(0, 1, {0: MIB - 100, 1: 100})]
    assert ledger.admit(Migrate(0, MIB, 0), regions) is None
    assert ledger.budget == 64 * MIB - 100
    refused = ledger.admit(Migrate(0, MIB, 1), [region(0, 1, {1: MIB})])
    assert refused is not None and refused.kind is Refusal.NO_OP


def test_a_node_without_memory_takes_nothing() -> None:
    ledger = Ledger.of([node(0, 512 * MIB), node(1, 0, total=0)], budget=64 * MIB)
    refused = ledger.admit(Migrate(0, MIB, 1), [region(0, 1, {0: MIB})])
    assert refused is not None and refused.kind is Refusal.UNKNOWN_NODE
    assert refused.text == "node 1 is not a node with memory"


def test_budget_then_room_and_a_demotion_frees_room_for_a_promotion_after_it() -> None:
    ledger = Ledger.of([node(0, HEADROOM + 16 * MIB), node(1, 512 * MIB)], budget=68 * MIB)
    cold, hot = region(0, 32, {0: 32 * MIB}), region(32, 32, {1: 32 * MIB})
    promote, demote = Migrate(hot.start, hot.end, 0), Migrate(cold.start, cold.end, 1)
    refused = ledger.admit(promote, [cold, hot])
    assert refused is not None and refused.kind is Refusal.NO_ROOM
    assert refused.text == f"no room: node 0 has {16 * MIB} bytes to spare, needs {32 * MIB}"
    assert ledger.admit(demote, [cold, hot]) is None
    assert ledger.room == {0: 48 * MIB, 1: (512 - 64 - 32) * MIB} and ledger.budget == 36 * MIB
    assert ledger.admit(promote, [cold, hot]) is None
    refused = ledger.admit(demote, [cold, hot])  # the validator does not see pages move: charged again
    assert refused is not None
    assert refused.text == f"over budget: moves {32 * MIB} bytes, {4 * MIB} left this interval"


@pytest.mark.parametrize(("move", "kind"), [
    (Migrate(MIB, MIB, 0), Refusal.EMPTY_RANGE),
    (Migrate(0, 8 * MIB, 0), Refusal.UNOBSERVED),
])
def test_a_range_must_be_observed_and_not_empty(move: Migrate, kind: Refusal) -> None:
    refused = Ledger.of([node(0, 512 * MIB)], budget=64 * MIB).admit(move, [region(0, 4, {1: 4 * MIB})])
    assert refused is not None and refused.kind is kind


def test_unsampled_pages_free_no_room_anywhere() -> None:
    ledger = Ledger.of([node(0, 512 * MIB)], budget=64 * MIB)
    assert ledger.admit(Migrate(0, MIB, 0), [region(0, 1, {})]) is None
    assert set(ledger.room) == {0}


def test_a_bundle_is_tried_on_a_copy() -> None:
    ledger = Ledger({0: 10.0, 1: 0.0}, budget=20.0)
    make_room, fill = MoveCost(0, 5.0, {1: 5.0}), MoveCost(1, 5.0, {0: 5.0})
    assert not ledger.fits([fill])
    assert ledger.fits([make_room, fill])
    assert not ledger.fits([make_room, fill, make_room, fill, make_room])  # 25 bytes: over budget
    assert ledger == Ledger({0: 10.0, 1: 0.0}, budget=20.0)


def test_consecutive_adjacent_moves_to_one_node_merge_and_say_so() -> None:
    moves = [Migrate(0, MIB, 1, "cold"), Migrate(MIB, 2 * MIB, 1, "colder"), Migrate(2 * MIB, 3 * MIB, 0, "hot"),
             Migrate(4 * MIB, 5 * MIB, 0, "hot"), Migrate(3 * MIB, 4 * MIB, 0, "hot")]
    assert merged(moves) == [Migrate(0, 2 * MIB, 1, "cold (first of 2 adjacent regions)"),
                             Migrate(2 * MIB, 3 * MIB, 0, "hot"),  # adjacent to the last, but not consecutive
                             Migrate(4 * MIB, 5 * MIB, 0, "hot"), Migrate(3 * MIB, 4 * MIB, 0, "hot")]
