"""Constraints the texts state: the LLM's reading of what buffers hold, checked, and the backend's confinement."""

from __future__ import annotations

import json
from pathlib import Path

from fake_openai import FakeOpenAi
from test_llamas_policy import DDR5, context_for, machine, placements, profile_answer

from policies.constraints import Holdings, read_holdings, settle_holdings
from policies.device_profile import EXPOSED_KEY, PERSISTENT_KEY, DeviceProfile
from policies.frontend import ProfileCache
from policies.llamas import LlamasPolicy
from testbed.ledger import HEADROOM
from testbed.model import HeldData
from testbed.units import MIB
from testbed.values import BufferRange, NodeView, Observation, RegionHint, RegionView

KEYS = RegionHint("keys", 32 * MIB, "Per-tenant session keys and API credentials, read when a client reconnects.")
FEED = RegionHint("feed", 160 * MIB, "The live event feed, read and appended to on every request.")
JOURNAL = RegionHint("journal", 64 * MIB, "The write-ahead journal; every commit must survive a crash or power cut.")
POOL_TEXT = "what sits in this memory can be read by the other hosts"
POOL = profile_answer(350, 350, 20, 18, **{EXPOSED_KEY: {"quote": POOL_TEXT, "answer": True}})


def holdings(*items: tuple[str, str, str]) -> str:
    """An answer saying (buffer, quote, holds)."""
    return json.dumps({"buffers": [{"buffer": b, "quote": q, "holds": h} for b, q, h in items]})


def test_a_buffer_holds_what_its_own_note_says_in_words_about_it() -> None:
    answer = json.loads(holdings(("keys", "session keys and API credentials", "secrets"),
                                 ("feed", "The live event feed", "secrets"),  # not about secrets
                                 ("journal", "must survive a power cut", "durable"),  # not in its note
                                 ("cache", "keys", "secrets")))
    held, problems = read_holdings(answer, (KEYS, FEED, JOURNAL), lambda quote, claim: "feed" not in quote)
    assert held == {"keys": HeldData.SECRETS}
    reasons = [problem.reason for problem in problems]
    assert reasons[0].startswith("the quote does not say feed holds secrets")
    assert reasons[1].startswith("the quote is not in journal's note")
    assert reasons[2] == "no buffer is named 'cache'"


def test_each_buffer_is_confined_to_the_nodes_the_device_texts_leave_it() -> None:
    dram, pool = DeviceProfile("ddr5"), DeviceProfile("pool", readable_by_others=True)
    settled = settle_holdings({"keys": HeldData.SECRETS, "journal": HeldData.DURABLE}, {0: dram, 1: pool})
    assert settled.confined == {"keys": (frozenset({0}), "secrets: kept off memory others can read")}
    assert "journal holds durable, but no node may hold it by the texts: not confined" in settled.notes
    pmem = DeviceProfile("pmem", keeps_data_without_power=True)
    assert settle_holdings({"journal": HeldData.DURABLE}, {0: dram, 1: pmem}).confined["journal"][0] == {1}
    assert settle_holdings({"keys": HeldData.SECRETS}, {0: dram, 1: dram}).confined == {}  # nothing limits it


def test_a_confined_buffer_is_placed_only_where_it_may_live_and_takes_no_room_elsewhere(tmp_path: Path) -> None:
    cache = RegionHint("cache", 768 * MIB, "Cached table pages, read by queries.")
    pmem = profile_answer(300, 900, 8, 2.5, **{PERSISTENT_KEY: {"quote": "Persistent memory", "answer": True}})
    context = context_for(machine("dram-pmem"), tmp_path, (cache, JOURNAL), free=[HEADROOM + 800 * MIB, 1024 * MIB])
    with FakeOpenAi(DDR5, pmem, holdings(("journal", "must survive a crash or power cut", "durable")),
                    placements(("cache", "read by queries", "hot_read_mostly", 0),
                               ("journal", "every commit", "hot_write_heavy", 0))) as fake:
        setup = LlamasPolicy(lambda run_dir: fake.client(), ProfileCache(tmp_path / "cache")).setup(context)
    # DRAM would be cheaper for the journal, and has room for one of the two: the journal may not use it.
    assert setup.placement == {"journal": 1, "cache": 0}
    assert "journal holds durable: confined to node 1" in setup.notes


def test_a_confined_buffer_gets_the_room_it_needs_before_busier_ones(tmp_path: Path) -> None:
    both_on_dram = placements(("feed", "read and appended to on every request", "hot_write_heavy", 0),
                              ("keys", "read when a client reconnects", "cold", 0))
    free = [HEADROOM + 170 * MIB, 1024 * MIB]  # room for the feed or the keys in DRAM, not both
    context = context_for(machine("dram-cxlpool"), tmp_path, (FEED, KEYS), free=free)
    with FakeOpenAi(DDR5, POOL, holdings(("keys", "session keys and API credentials", "secrets")),
                    both_on_dram) as fake:
        setup = LlamasPolicy(lambda run_dir: fake.client(), ProfileCache(tmp_path / "cache")).setup(context)
    assert setup.placement == {"keys": 0, "feed": 1}
    assert list(setup.placement) == ["keys", "feed"]  # applied in this order, the keys first within the budget


def test_llamas_keeps_a_buffer_of_secrets_off_a_pool_others_can_read(tmp_path: Path) -> None:
    context = context_for(machine("dram-cxlpool"), tmp_path, (FEED, KEYS))
    with FakeOpenAi(DDR5, POOL, holdings(("keys", "session keys and API credentials", "secrets")),
                    placements(("keys", "read when a client reconnects", "cold", 1))) as fake:
        policy = LlamasPolicy(lambda run_dir: fake.client(), ProfileCache(tmp_path / "cache"))
        setup = policy.setup(context)
        assert len(fake.requests) == 4
    assert setup.placement == {"keys": 0}  # the LLM said the pool; the numbers said DRAM for a cold buffer
    assert "keys holds secrets: confined to node 0" in setup.notes
    keys = BufferRange("keys", 2**30, 2**30 + 32 * MIB)
    region = RegionView(0, keys.start, keys.end, 0.001, 5, 0.0, {1: 32 * MIB})  # seldom read, on the pool
    nodes = (NodeView(0, 1024 * MIB, 500 * MIB, (0, 1), None, None, None, None, None),
             NodeView(1, 1024 * MIB, 500 * MIB, (), None, None, None, None, None))
    moves = policy.decide(Observation(0, 0.0, 1.0, nodes, (region,), {}, {}, buffers=(keys,)))
    assert [(m.start, m.end, m.node, m.reason) for m in moves] == [  # type: ignore[union-attr]
        (keys.start, keys.end, 0, "secrets: kept off memory others can read")]
    blind = LlamasPolicy(lambda run_dir: fake.client(), ProfileCache(tmp_path / "cache"))
    assert blind.holdings == Holdings({}, (), ())  # the twin, and llamas before setup, confine nothing
