from testbed.catalog import default_catalog
from testbed.hmat import expected_tier, local_entry


def test_tiers_match_what_kernel_6_12_computed_in_a_guest() -> None:
    """Seen in a guest of three-tier and cxl-type3: memory_tier4, memory_tier40, memory_tier411."""
    system = default_catalog().load_system("three-tier")
    assert [expected_tier(system, node) for node in system.nodes] == [4, 40, 411]
    cxl = default_catalog().load_system("cxl-type3")
    assert expected_tier(cxl, cxl.nodes[1]) is None  # set from the device's CDAT, not from our HMAT


def test_faster_than_dram_lands_in_a_higher_tier() -> None:
    system = default_catalog().load_system("dram-rat")  # RAT: firmware reports its 600 ns worst case
    assert (expected_tier(system, system.nodes[1]) or 0) > 4


def test_remote_socket_adds_the_link() -> None:
    system = default_catalog().load_system("two-socket-cxl")
    local = local_entry(system, system.nodes[1])
    assert (local.initiator, local.read_latency_ns) == (1, 80)
    from testbed.hmat import hmat_entries

    remote = next(e for e in hmat_entries(system) if (e.initiator, e.target) == (1, 2))
    assert remote.read_latency_ns == 250 + 60
