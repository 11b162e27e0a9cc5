"""guestd's reading of kernel files: id lists, nodes, tiers, HMAT, vmstat, tiering knobs, hello."""

from __future__ import annotations

import errno
import gzip
import os
import time
from pathlib import Path

import pytest
from guestd_fake import GIB, KDAMONDS, RELEASE, FakeGuest, build_tree
from hypothesis import given
from hypothesis import strategies as st

from guest.guestd.kernel import BUSY_PAUSES_S, Kernel, format_id_list, parse_id_list
from guest.guestd.process import PAGE_SIZE
from guest.guestd.system import describe_nodes, node_meminfo, read_vmstat, soft_dirty_supported
from testbed.units import MIB


@pytest.fixture
def kernel(tmp_path: Path) -> Kernel:
    build_tree(tmp_path)
    return Kernel(tmp_path)


@pytest.mark.parametrize(("text", "ids"), [("0-3,8", [0, 1, 2, 3, 8]), ("", []), ("\n", []), ("5", [5]),
                                           ("0,2-3\n", [0, 2, 3])])
def test_id_lists_parse_like_the_kernel_writes_them(text: str, ids: list[int]) -> None:
    assert parse_id_list(text) == ids


@pytest.mark.parametrize("text", ["3-1", "a", "0-", "-1", "99999999"])
def test_bad_id_lists_are_refused(text: str) -> None:
    with pytest.raises(ValueError, match="id"):
        parse_id_list(text)


@given(st.sets(st.integers(0, 300)))
def test_id_lists_round_trip(ids: set[int]) -> None:
    assert parse_id_list(format_id_list(ids)) == sorted(ids)


def test_meminfo_is_in_bytes_and_counts_stay_counts(kernel: Kernel) -> None:
    info = node_meminfo(kernel, 1)
    assert info["MemTotal"] == 4 * GIB
    assert info["MemFree"] == 2 * GIB
    assert info["HugePages_Total"] == 0


def test_nodes_carry_cpus_tiers_hmat_and_distances(kernel: Kernel) -> None:
    nodes = {node["id"]: node for node in describe_nodes(kernel)}
    assert sorted(nodes) == [0, 1, 2]
    assert nodes[0]["cpus"] == [0, 1]
    assert nodes[2]["cpus"] == []
    assert (nodes[0]["tier"], nodes[1]["tier"], nodes[2]["tier"]) == (4, 4, 22)
    assert nodes[2]["hmat"] == {"read_latency_ns": 250, "write_latency_ns": 270, "read_bandwidth_mbps": 6666,
                                "write_bandwidth_mbps": 3333}
    assert nodes[1]["distances"] == {"0": 20, "1": 10, "2": 26}
    assert nodes[2]["free_bytes"] == 6 * GIB


def test_a_node_without_hmat_or_tiers_reports_none(tmp_path: Path) -> None:
    build_tree(tmp_path)
    for name in ("read_latency", "write_latency", "read_bandwidth", "write_bandwidth"):
        (tmp_path / f"sys/devices/system/node/node1/access0/initiators/{name}").unlink()
    tier = tmp_path / "sys/devices/virtual/memory_tiering/memory_tier22"
    (tier / "nodelist").unlink()
    tier.rmdir()
    nodes = {node["id"]: node for node in describe_nodes(Kernel(tmp_path))}
    assert nodes[1]["hmat"] is None
    assert nodes[2]["tier"] is None


def test_vmstat_keeps_the_placement_counters_and_the_oom_kills(kernel: Kernel) -> None:
    counters = read_vmstat(kernel, everything=False)
    assert counters == {"nr_free_pages": 100, "pgfault": 12345, "pgmigrate_success": 7, "pgdemote_kswapd": 3,
                        "numa_hit": 99, "pgpromote_success": 2, "oom_kill": 1}
    assert read_vmstat(kernel, everything=True)["nr_dirty"] == 5


def test_hello_reports_kernel_and_capabilities(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    hello = guest.result("hello")
    assert hello["protocol"] == 1
    assert hello["kernel"] == "6.12.48-amd64"
    capabilities = hello["capabilities"]
    assert capabilities["damon_sysfs"] is True
    assert capabilities["damon_tracepoint"] is True
    assert capabilities["tracefs"] == "/sys/kernel/tracing"
    assert capabilities["soft_dirty"] is True
    assert "observe" in hello["ops"]


def test_tiering_reports_previous_values_and_exit_restores_them(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    change = guest.result("tiering", numa_balancing=2, demotion_enabled=True, transparent_hugepage="never")
    assert change["previous"] == {"numa_balancing": 0, "demotion_enabled": False, "transparent_hugepage": "madvise",
                                  "zone_reclaim_mode": 0}
    assert change["current"] == {"numa_balancing": 2, "demotion_enabled": True, "transparent_hugepage": "never",
                                 "zone_reclaim_mode": 0}
    assert (tmp_path / "sys/kernel/mm/numa/demotion_enabled").read_text() == "true"
    assert (tmp_path / "sys/kernel/mm/transparent_hugepage/enabled").read_text() == "never"
    guest.result("tiering", numa_balancing=3)
    guest.daemon.close()
    assert (tmp_path / "proc/sys/kernel/numa_balancing").read_text() == "0"
    assert (tmp_path / "sys/kernel/mm/numa/demotion_enabled").read_text() == "false"
    assert (tmp_path / "sys/kernel/mm/transparent_hugepage/enabled").read_text() == "madvise"


def test_settle_drops_the_page_cache_and_compacts(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    (tmp_path / "proc/sys/vm/compact_memory").write_text("")
    settled = guest.result("settle")
    assert set(settled["free_after"]) == set(settled["free_before"]) == {"0", "1", "2"}
    assert (tmp_path / "proc/sys/vm/drop_caches").read_text() == "3"
    assert (tmp_path / "proc/sys/vm/compact_memory").read_text() == "1"


def test_tiering_refuses_modes_the_kernel_does_not_have(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    for wrong, field in (({"numa_balancing": 4}, "numa_balancing"), ({"transparent_hugepage": "often"},
                                                                     "transparent_hugepage"),
                         ({"zone_reclaim_mode": 8}, "zone_reclaim_mode")):
        code, message = guest.error("tiering", **wrong)
        assert code == "EINVAL"
        assert f"tiering.{field}" in message


def test_soft_dirty_support_is_read_from_proc_config_when_boot_has_none(tmp_path: Path) -> None:
    build_tree(tmp_path)
    (tmp_path / f"boot/config-{RELEASE}").unlink()
    kernel = Kernel(tmp_path)
    assert soft_dirty_supported(kernel, RELEASE) is None
    (tmp_path / "proc/config.gz").write_bytes(gzip.compress(b"CONFIG_NUMA=y\n# CONFIG_MEM_SOFT_DIRTY is not set\n"))
    assert soft_dirty_supported(kernel, RELEASE) is False


def test_settle_holds_each_node_down_to_its_target_free_memory_and_releases_it(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    free = {node: int(f) for node, f in guest.result("settle")["free_after"].items()}
    targets = {"0": free["0"] - 40 * MIB - 3 * PAGE_SIZE, "1": free["1"] + MIB, "2": free["2"] - GIB}
    settled = guest.result("settle", free=[{"node": int(node), "bytes": size} for node, size in targets.items()])
    after = {node: int(f) for node, f in settled["free_after"].items()}
    # Node 0 also pays for the page tables of everything held (2 MiB of them here), and ends on its target
    # but for the page tables of the last pass's holds: a page for each.
    for node in ("0", "2"):
        assert targets[node] - 4 * PAGE_SIZE <= after[node] <= targets[node], node
    assert settled["held"]["1"] == 0 and after["1"] == free["1"]  # below its target already: nothing held
    assert settled["held"]["2"] == GIB
    again = guest.result("settle")  # the next settle lets go of what the last one held
    assert {node: int(f) for node, f in again["free_after"].items()} == free
    guest.result("settle", free=[{"node": 2, "bytes": 0}])
    guest.daemon.close()  # and so does exit
    assert int(guest.result("settle")["free_after"]["2"]) == free["2"]


def test_settle_refuses_a_target_on_a_node_without_memory(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    code, message = guest.error("settle", free=[{"node": 7, "bytes": 0}])
    assert "node 7" in message
    code, message = guest.error("settle", free=[{"node": 0}])
    assert code == "EINVAL" and "free[0].bytes" in message


class Busy:
    """os.write that answers EBUSY ``times`` times, as DAMON's sysfs does while its lock is held elsewhere."""

    def __init__(self, times: int) -> None:
        self.times = times
        self.real = os.write

    def __call__(self, fd: int, data: bytes) -> int:
        if self.times > 0:
            self.times -= 1
            raise OSError(errno.EBUSY, os.strerror(errno.EBUSY))
        return self.real(fd, data)


def test_a_busy_damon_file_is_written_again_and_other_files_are_not(kernel: Kernel,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(time, "sleep", pauses.append)
    damon_state = f"{KDAMONDS}/nr_kdamonds"
    monkeypatch.setattr(os, "write", Busy(3))
    kernel.write(damon_state, "1")
    assert kernel.value(damon_state) == "1" and pauses == list(BUSY_PAUSES_S[:3])
    monkeypatch.setattr(os, "write", Busy(1))
    with pytest.raises(OSError, match="busy"):
        kernel.write("proc/sys/kernel/numa_balancing", "0")  # EBUSY elsewhere means something else
    monkeypatch.setattr(os, "write", Busy(len(BUSY_PAUSES_S) + 1))
    pauses.clear()
    with pytest.raises(OSError, match="busy"):
        kernel.write(damon_state, "2")  # busy all along: the error stands after about a second
    assert pauses == list(BUSY_PAUSES_S) and 0.5 < sum(BUSY_PAUSES_S) < 2
