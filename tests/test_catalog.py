from pathlib import Path

import pytest

from testbed.catalog import DEFAULT_CATALOG, MEMORY_BANDWIDTH, MEMORY_LATENCY, Catalog, default_catalog
from testbed.cli import main
from testbed.errors import ConfigError
from testbed.model import DeviceKind, Emulation

NEW_DEVICE = """\
name: slow-flash-memory
kind: other
read_latency: 2us
write_latency: 20us
read_bandwidth: 4GB/s
write_bandwidth: 1GB/s
emulation: numa-node
description: >
  A byte-addressable flash module. Reads take about two microseconds, writes
  ten times that. Only for cold data.
"""
NEW_SYSTEM = """\
name: dram-flash
description: A one-socket box with DDR5 and a slow flash memory node.
sockets:
  - cpus: 2
nodes:
  - {device: ddr5-local, size: 1GiB}
  - {device: slow-flash-memory, size: 512MiB}
"""


def test_the_held_out_devices_load_apart_from_the_catalog() -> None:
    # benchmarks/frontend.py --set held-out scores the frontend on these: texts no prompt or check was tuned on.
    held_out = Catalog(Path(__file__).parent / "data" / "held-out-devices").devices()
    catalog = default_catalog().devices()
    assert len(held_out) >= 12 and not set(held_out) & set(catalog)
    assert not {device.description for device in held_out.values()} & {d.description for d in catalog.values()}
    assert sum(device.endurance_writes is not None for device in held_out.values()) >= 3
    assert any(device.latency_model is not None for device in held_out.values())


def test_every_catalog_file_loads() -> None:
    catalog = default_catalog()
    devices = catalog.devices()
    assert {"ddr5-local", "ddr5-remote", "cxl-expander", "optane-pmem", "hbm", "readopt-mem", "rat"} <= set(devices)
    names = {system.name for system in catalog.systems()}
    assert {"dram-only", "dram-cxl", "dram-pmem", "dram-rat", "two-socket-cxl", "three-tier", "cxl-type3"} <= names
    assert any(d.emulation is Emulation.CXL_TYPE3 for d in devices.values())
    assert devices["rat"].latency_model is not None
    assert devices["optane-pmem"].kind is DeviceKind.PMEM


def test_the_first_node_of_each_socket_holds_its_cpus() -> None:
    system = default_catalog().load_system("two-socket-cxl")
    assert [node.cpus for node in system.nodes] == [(0,), (1,), ()]
    assert [node.id for node in system.initiators] == [0, 1]


def test_distances_are_derived_symmetric_and_above_local() -> None:
    system = default_catalog().load_system("three-tier")
    matrix = system.distances
    for a, row in enumerate(matrix):
        assert row[a] == 10
        for b, value in enumerate(row):
            assert value == matrix[b][a]
            assert a == b or value > 10
    assert matrix[0][1] == round(10 * 250 / 80)  # CXL seen from the socket, against its DRAM


def test_rat_latency_falls_with_access_frequency() -> None:
    rat = default_catalog().devices()["rat"]
    cold = rat.access_latency_ns(write=False, accesses_per_page_per_s=0)
    hot = rat.access_latency_ns(write=False, accesses_per_page_per_s=10_000)
    assert (cold, hot) == (600, 50)
    assert hot < rat.access_latency_ns(write=False, accesses_per_page_per_s=100) < cold


def test_a_new_device_and_system_need_no_code(catalog_copy: Catalog, capsys: pytest.CaptureFixture[str]) -> None:
    (catalog_copy.root / "slow-flash-memory.yaml").write_text(NEW_DEVICE)
    (catalog_copy.systems_dir / "dram-flash.yaml").write_text(NEW_SYSTEM)
    assert main(["devices"]) == 0
    assert "slow-flash-memory" in capsys.readouterr().out
    assert main(["render", "dram-flash"]) == 0
    argv = capsys.readouterr().out
    assert "data-type=write-latency,latency=20000" in argv
    assert "node,nodeid=1,memdev=mem1,initiator=0" in argv


def test_a_system_file_may_name_a_device_file_next_to_it(tmp_path: Path) -> None:
    (tmp_path / "flash.yaml").write_text(NEW_DEVICE)
    (tmp_path / "box.yaml").write_text(NEW_SYSTEM.replace("slow-flash-memory", "flash.yaml"))
    system = default_catalog().load_system(str(tmp_path / "box.yaml"))
    assert system.nodes[1].device.read_latency_ns == 2000


# (file, field, value written, problem): quantities that parse but no memory has.
IMPLAUSIBLE = [
    ("ddr5-local.yaml", "read_latency", "80 ms", "80 ms is 80000000 ns; a memory latency is between 1ns and 100us"),
    ("ddr5-local.yaml", "write_latency", "0.5ns", "0.5ns is 0.5 ns; a memory latency is between 1ns and 100us"),
    ("rat.yaml", "latency_model.hot_latency", "50ps", "a memory latency is between 1ns and 100us"),
    ("ddr5-local.yaml", "read_bandwidth", "64KB/s", "64KB/s is 64000 B/s; a memory bandwidth is between 1MB/s and"),
    ("hbm.yaml", "write_bandwidth", "400TB/s", "a memory bandwidth is between 1MB/s and 10TB/s"),
    ("systems/two-socket-cxl.yaml", "cross_socket.latency", "60ms", "60000000 ns; a cross-socket latency is between"),
]


def implausible(file: str, field: str, written: str, problem: str) -> tuple[str, tuple[str, str], str, str]:
    """A case of the test below: ``field``'s line in the catalog file, with ``written`` as its value."""
    key = field.rsplit(".", 1)[-1]
    line = next(line for line in (DEFAULT_CATALOG / file).read_text().splitlines()
                if line.lstrip().startswith(f"{key}: "))
    return file, (line, f"{line.split(':')[0]}: {written}"), field, problem


@pytest.mark.parametrize(("file", "change", "field", "problem"), [
    ("cxl-expander.yaml", ("read_latency: 250ns", "read_latency: 250"), "read_latency", "with a unit"),
    ("cxl-expander.yaml", ("read_latency: 250ns", "read_latency: -250ns"), "read_latency", "non-negative"),
    ("cxl-expander.yaml", ("kind: cxl", "kind: cxl\nspeed: fast"), "speed", "unknown field"),
    ("cxl-expander.yaml", ("kind: cxl\n", ""), "kind", "missing"),
    ("cxl-expander.yaml", ("kind: cxl", "kind: floppy"), "kind", "expected one of dram, cxl"),
    ("cxl-expander.yaml", ("emulation: numa-node", "emulation: tape"), "emulation", "cxl-type3"),
    ("rat.yaml", ("hot_rate: 200/s", "hot_rate: 200"), "latency_model.hot_rate", "with a unit"),
    ("optane-pmem.yaml", ("endurance: 2300000", "endurance: lots"), "endurance", "expected a number"),
    ("optane-pmem.yaml", ("endurance: 2300000", "endurance: 0"), "endurance", "above zero"),
    ("optane-pmem.yaml", ("persistent: true", "persistent: yes please"), "persistent", "expected true or false"),
    ("systems/dram-cxl.yaml", ("device: cxl-expander", "device: cxl-expandr"), "nodes[1].device",
     "unknown device 'cxl-expandr'"),
    ("systems/dram-cxl.yaml", ("size: 2GiB", "size: 2GB"), "nodes[1].size", "multiple of 128MiB"),
    ("systems/dram-cxl.yaml", ("size: 1GiB", "size: 256MiB"), "nodes[0].size", "at least 512MiB"),
    ("systems/dram-cxl.yaml", ("{device: cxl-expander, size: 2GiB}",
                               "{device: cxl-expander, size: 2GiB, socket: 3}"), "nodes[1].socket",
     "socket 3 does not exist"),
    ("systems/cxl-type3.yaml", ("  - {device: ddr5-local, size: 1GiB}\n  - {device: cxl-type3-card, size: 512MiB}",
                                "  - {device: ddr5-local, size: 1GiB}\n  - {device: cxl-type3-card, size: 512MiB}"
                                "\n  - {device: cxl-expander, size: 1GiB}"), "nodes[2]", "must come after"),
    ("systems/dram-cxl.yaml", ("nodes:", "distances: [[10, 20], [20]]\nnodes:"), "distances[1]",
     "list of 2 distances"),
    ("systems/dram-cxl.yaml", ("nodes:", "distances: [[10, 9], [9, 10]]\nnodes:"), "distances[0][1]",
     "from 11 to 254"),
    ("systems/dram-cxl.yaml", ("sockets:\n  - cpus: 2", "sockets:\n  - cpus: 0"), "sockets[0].cpus", ">= 1"),
    ("systems/dram-cxl.yaml", ("sockets:\n  - cpus: 2", "sockets:\n  - cpus: 2\n  - cpus: 1"), "sockets",
     "same number of cpus"),
    *(implausible(*case) for case in IMPLAUSIBLE),
])
def test_broken_yaml_is_one_line_naming_file_and_field(catalog_copy: Catalog, file: str, change: tuple[str, str],
                                                       field: str, problem: str,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    path = catalog_copy.root / file
    text = path.read_text()
    assert change[0] in text
    path.write_text(text.replace(change[0], change[1], 1))
    command = ["show", "dram-cxl"] if file.startswith("systems/dram-cxl") else ["systems"]
    assert main(command) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith(f"llamas: {path}: {field}: ")
    assert problem in err


def test_the_plausible_ranges_include_their_bounds() -> None:
    assert (MEMORY_LATENCY.parse("1ns"), MEMORY_LATENCY.parse("100us")) == (1.0, 100e3)
    assert (MEMORY_BANDWIDTH.parse("1MB/s"), MEMORY_BANDWIDTH.parse("10TB/s")) == (1e6, 10e12)
    with pytest.raises(ValueError, match="between 1ns and 100us"):
        MEMORY_LATENCY.parse("100.1us")


@pytest.mark.parametrize(("file", "content", "problem"), [
    ("cxl-expander.yaml", b"\xff\xfe\x00bad", "not UTF-8 text (byte 0xff at offset 0)"),
    ("systems/dram-cxl.yaml", b"name: dram-cxl\ndescription: caf\xe9\n", "not UTF-8 text (byte 0xe9 at offset 31)"),
    ("hbm.yaml", b"name: hbm\nkind: \x00\n", "line 2: not valid YAML: unacceptable character #x0000"),
])
def test_a_file_that_is_not_text_is_one_line(catalog_copy: Catalog, file: str, content: bytes, problem: str,
                                             capsys: pytest.CaptureFixture[str]) -> None:
    path = catalog_copy.root / file
    path.write_bytes(content)
    assert main(["show", "dram-cxl"]) == 2
    err = capsys.readouterr().err
    assert len(err.splitlines()) == 1
    assert err.startswith(f"llamas: {path}: {problem}")


def test_a_utf8_byte_order_mark_is_text(catalog_copy: Catalog) -> None:
    path = catalog_copy.root / "hbm.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    assert catalog_copy.devices()["hbm"].read_bandwidth == 400e9


def test_two_files_defining_one_device_name_is_an_error(catalog_copy: Catalog) -> None:
    (catalog_copy.root / "hbm-copy.yaml").write_text((catalog_copy.root / "hbm.yaml").read_text())
    with pytest.raises(ConfigError, match=r"hbm(-copy)?.yaml: name: device 'hbm' is also defined in"):
        catalog_copy.devices()


def test_invalid_yaml_syntax_names_the_line(catalog_copy: Catalog) -> None:
    path = catalog_copy.root / "hbm.yaml"
    path.write_text("name: hbm\nkind: [unclosed\n")
    with pytest.raises(ConfigError, match=r"hbm.yaml: line \d+: not valid YAML"):
        catalog_copy.devices()


def test_unknown_system_lists_the_known_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["show", "no-such-machine"]) == 2
    assert "known: cxl-type3, dram-cxl" in capsys.readouterr().err


def test_system_yaml_reads_back_as_the_same_machine(tmp_path: Path) -> None:
    from testbed.catalog import parse_system, system_yaml
    from testbed.yamlfields import load_yaml

    catalog = default_catalog()
    for system in catalog.systems():
        path = tmp_path / f"{system.name}.yaml"
        path.write_text(system_yaml(system))
        again = parse_system(load_yaml(path), path, catalog)
        assert (again.nodes, again.distances, again.cross_socket) == (system.nodes, system.distances,
                                                                       system.cross_socket)
