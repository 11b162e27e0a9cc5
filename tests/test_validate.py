from testbed.ledger import HEADROOM
from testbed.units import MIB
from testbed.validate import validate
from testbed.values import Action, Migrate, NodeView, Observation, Place, RegionView


def node(node_id: int, free: int, cpus: tuple[int, ...] = ()) -> NodeView:
    return NodeView(node_id, 1024 * MIB, free, cpus, 4 + 36 * node_id, None, None, None, None)


def observation(free0: int = 512 * MIB) -> Observation:
    """Region 0 [0, 64M) hot on node 1, region 1 [64M, 192M) cold on node 0."""
    regions = (RegionView(0, 0, 64 * MIB, 1.0, 5, 0.1, {1: 64 * MIB}),
               RegionView(1, 64 * MIB, 192 * MIB, 0.0, 9, 0.0, {0: 128 * MIB}))
    return Observation(3, 10.0, 1.0, (node(0, free0, (0, 1)), node(1, 900 * MIB)), regions, {}, {})


def reasons(verdict: object) -> list[str]:
    return [reason for _, reason in verdict.rejected]  # type: ignore[attr-defined]


def test_a_move_within_budget_and_room_is_accepted() -> None:
    verdict = validate([Migrate(0, 64 * MIB, 0)], observation(), budget=64 * MIB)
    assert verdict.accepted == (Migrate(0, 64 * MIB, 0),)
    assert not verdict.rejected


def test_no_op_over_budget_unknown_node_and_unobserved_range_are_refused() -> None:
    actions: list[Action] = [Migrate(64 * MIB, 128 * MIB, 0),  # already there
               Migrate(0, 64 * MIB, 0),  # 64 MiB, but only 32 MiB of budget
               Migrate(0, MIB, 7),
               Migrate(200 * MIB, 210 * MIB, 1),
               Place((0, 5))]
    verdict = validate(actions, observation(), budget=32 * MIB)
    assert not verdict.accepted
    problems = reasons(verdict)
    assert problems[0].startswith("no-op")
    assert problems[1].startswith("over budget")
    assert "node 7 is not a node with memory" in problems[2]
    assert "not all inside" in problems[3]
    assert "CPUs [0, 5]" in problems[4]


def test_a_demotion_makes_room_for_the_promotion_after_it() -> None:
    full = observation(free0=HEADROOM + 16 * MIB)
    promote = Migrate(0, 64 * MIB, 0)
    assert reasons(validate([promote], full, budget=256 * MIB))[0].startswith("no room")
    demote = Migrate(64 * MIB, 128 * MIB, 1)
    verdict = validate([demote, promote], full, budget=256 * MIB)
    assert verdict.accepted == (demote, promote)


def test_budget_is_shared_by_the_actions_of_one_interval() -> None:
    first, second = Migrate(0, 32 * MIB, 0), Migrate(32 * MIB, 64 * MIB, 0)
    verdict = validate([first, second], observation(), budget=48 * MIB)
    assert verdict.accepted == (first,)
    assert reasons(verdict)[0].startswith("over budget")
