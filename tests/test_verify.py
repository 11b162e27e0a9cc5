from dataclasses import replace

from testbed.catalog import default_catalog
from testbed.channel.replies import Hmat, NodeInfo
from testbed.hmat import expected_tier, local_entry
from testbed.model import System
from testbed.verify import GuestFacts, dax_backing, verify


def guest_as_described(system: System) -> dict[int, NodeInfo]:
    """What a correct guest reports for ``system``."""
    nodes = {}
    for node in system.nodes:
        entry = local_entry(system, node)
        hmat = Hmat(entry.read_latency_ns, entry.write_latency_ns, entry.read_bandwidth_mib,
                    entry.write_bandwidth_mib)
        nodes[node.id] = NodeInfo(id=node.id, total_bytes=int(node.size * 0.95), free_bytes=node.size // 2,
                                  cpus=node.cpus, tier=expected_tier(system, node), hmat=hmat,
                                  distances={other.id: system.distances[node.id][other.id] for other in system.nodes})
    return nodes


def test_a_guest_that_matches_passes_every_line() -> None:
    system = default_catalog().load_system("three-tier")
    report = verify(system, GuestFacts(guest_as_described(system), {2: "nvdimm"}))
    assert report.ok, report.table()
    assert len(report.checks) == 3 * (1 + 2 + 1 + 3 + 4) + 1  # online, size, cpus, tier, distances, HMAT; DAX


def test_each_kind_of_mismatch_is_a_failing_line() -> None:
    system = default_catalog().load_system("three-tier")
    nodes = guest_as_described(system)
    nodes[1] = replace(nodes[1], total_bytes=nodes[1].total_bytes // 2, tier=4)
    hmat = nodes[0].hmat
    assert hmat is not None
    nodes[0] = replace(nodes[0], hmat=replace(hmat, write_latency_ns=81))
    del nodes[2]
    report = verify(system, GuestFacts(nodes, {}))
    failed = {(c.node, c.what) for c in report.checks if not c.ok}
    assert failed == {(1, "size"), (1, "memory tier"), (0, "HMAT write latency"), (2, "online")}
    assert "FAIL" in report.table()


def test_dax_backing_tells_cxl_from_nvdimm() -> None:
    daxctl = [{"chardev": "dax0.0", "target_node": 1, "mode": "system-ram", "online_memblocks": 4},
              {"chardev": "dax1.0", "target_node": 2, "mode": "system-ram", "online_memblocks": 8},
              {"chardev": "dax2.0", "target_node": 3, "mode": "devdax"}]
    regions = [{"region": "region0", "daxregion": {"devices": [{"chardev": "dax0.0"}]}}]
    assert dax_backing(daxctl, regions) == {1: "cxl", 2: "nvdimm"}
