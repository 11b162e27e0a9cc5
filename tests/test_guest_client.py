"""The host client: typed results, typed errors, run events, reconnecting once, timeouts."""

from __future__ import annotations

import json
import queue
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from guestd_fake import FIRST_KDAMOND_PID, TRACEFS, FakeGuest, FakeProcess, aggregated_lines, build_tree

from guest.guestd.daemon import Daemon
from guest.guestd.protocol import Output
from guest.guestd.tracefs import Region
from testbed.channel.client import GuestClient
from testbed.channel.errors import ChannelClosed, GuestdFailure, GuestError, GuestTimeout
from testbed.channel.replies import DamonView, ReplyFields, ResidencyQuery
from testbed.channel.transports import SubprocessTransport
from testbed.values import (
    AddressRange,
    MemoryPolicy,
    MemoryPolicyKind,
    Monitoring,
    Scheme,
    SchemeAction,
    TieringSettings,
)

PID = 4242
HEAP = 0x10000000


class InProcessTransport:
    """A channel to a daemon running in this process; it can lose a request in flight, or go mute."""

    def __init__(self, guest: FakeGuest) -> None:
        self.guest = guest
        self.sent: list[dict[str, object]] = []
        self.drop_next = False
        self.mute = False
        self.severed = False  # the network died: no more lines, but the daemon lives on
        self._dropped = False

    def send_line(self, line: bytes) -> None:
        if self._dropped:
            raise OSError("channel is closed")
        request = json.loads(line)
        self.sent.append(request)
        if self.drop_next:
            self._dropped = True  # the request never arrives; the daemon sees its channel close
            self.guest.daemon.close()
            self.guest.stdout.lines.put(b"")  # wake the reader to see the end
        elif not self.mute:
            self.guest.send(line)

    def recv_line(self, timeout: float) -> bytes | None:
        if self._dropped or self.severed:
            return None
        try:
            line = self.guest.stdout.lines.get(timeout=timeout)
        except queue.Empty:
            raise TimeoutError from None
        return None if self._dropped or self.severed else line

    def close(self) -> None:
        if not self._dropped:
            self._dropped = True
            self.guest.daemon.close()
        self.guest.stdout.lines.put(b"")  # wake the reader, as closing a real channel does


class Guests:
    """A connect factory: each connection is a new daemon on the same fake machine."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.transports: list[InProcessTransport] = []
        self.fail_connect = False

    def connect(self) -> InProcessTransport:
        if self.fail_connect:
            raise ConnectionRefusedError("guest unreachable")
        first = self.transports[0].guest if self.transports else None
        guest = FakeGuest(self.root, build=first is None)
        if first is not None:
            guest.syscalls = first.syscalls  # the same machine's pages
            guest.daemon = Daemon(guest.kernel, guest.syscalls, Output(guest.stdout), kdamonds=4)
        transport = InProcessTransport(guest)
        self.transports.append(transport)
        return transport

    @property
    def current(self) -> InProcessTransport:
        return self.transports[-1]


@pytest.fixture
def guests(tmp_path: Path) -> Guests:
    return Guests(tmp_path)


@pytest.fixture
def client(guests: Guests) -> Iterator[GuestClient]:
    with GuestClient(guests.connect, timeout=10) as client:
        FakeProcess(PID, [(HEAP, HEAP + 0x20000)], {0: 8, 2: 4}).create(guests.root)
        guests.current.guest.syscalls.pages[PID] = {HEAP + page * 4096: 0 for page in range(32)}
        yield client


def test_results_are_typed(client: GuestClient) -> None:
    hello = client.hello()
    assert hello.kernel == "6.12.48-amd64"
    assert hello.capabilities.damon_tracepoint is True
    nodes = {node.id: node for node in client.nodes()}
    assert nodes[2].cpus == ()
    assert nodes[2].tier == 22
    assert nodes[2].hmat is not None and nodes[2].hmat.read_latency_ns == 250
    assert nodes[0].distances == {0: 10, 1: 20, 2: 26}
    assert client.vmstat().counters["pgmigrate_success"] == 7
    observation = client.observe(PID, ranges=[ResidencyQuery(HEAP, 0x20000, chunk=0x10000)])
    assert observation.resident_bytes == {0: 10 * 4096, 2: 4 * 4096}
    assert observation.damon is None
    assert [chunk.nodes for chunk in observation.ranges[0].chunks] == [{0: 16}, {0: 16}]
    moved = client.migrate(PID, 2, 8 * 4096, ranges=[AddressRange(HEAP, 0x20000)])
    assert (moved.moved_pages, moved.budget_exhausted) == (8, True)
    change = client.tiering(TieringSettings(numa_balancing=2, demotion_enabled=None))
    assert (change.previous.numa_balancing, change.current.numa_balancing) == (0, 2)
    assert client.place(PID, node=1).cpus == (2, 3)


def test_damon_regions_and_damos_through_the_client(client: GuestClient, guests: Guests) -> None:
    watch = client.watch(PID, Monitoring(aggr_us=200_000))
    assert (watch.source, watch.aggr_us) == ("tracefs", 200_000)
    [instance] = (guests.root / f"{TRACEFS}/instances").iterdir()
    regions = [Region(HEAP, HEAP + 0x8000, 3, 1), Region(HEAP + 0x8000, HEAP + 0x20000, 0, 7)]
    (instance / "trace_pipe").write_text(aggregated_lines(regions, FIRST_KDAMOND_PID, 8.5))
    damon = client.observe(PID).damon
    assert damon is not None
    assert [(region.id, region.nr_accesses, region.written_pages) for region in damon.regions] == [
        (0, 3, 0), (1, 0, 0)]
    assert damon.regions[0].nodes is None and damon.regions[0].sampled_pages is None
    moved = client.migrate(PID, 2, 1 << 20, regions=[1], observation=damon.observation)
    assert moved.moved_pages == 24
    placed = client.observe(PID, region_nodes=True).damon
    assert placed is not None
    assert [(region.sampled_pages, region.nodes) for region in placed.regions] == [
        (8, {0: 8 * 4096}), (24, {2: 24 * 4096})]
    info = client.damos([Scheme(SchemeAction.MIGRATE_HOT, target_node=0, nr_accesses=(5, 100), nodes=(2,)),
                         Scheme(SchemeAction.MIGRATE_COLD, target_node=2, nodes=(0,))])
    assert info.nodes == (0, 2)
    report = client.damos_stop(info.id)
    assert [scheme.action for scheme in report.schemes] == ["migrate_hot", "migrate_cold"]
    assert report.schemes[0].stats["nr_applied"] == 12


def test_error_replies_are_guest_errors_naming_op_and_pid(client: GuestClient) -> None:
    with pytest.raises(GuestError) as raised:
        client.observe(31337)
    assert raised.value.code == "ESRCH"
    assert raised.value.op == "observe"
    assert str(raised.value) == "observe: ESRCH: observe pid 31337: pid 31337: no such process"
    with pytest.raises(GuestError, match="migrate pid 4242 node 9") as raised:
        client.migrate(PID, 9, 4096, ranges=[AddressRange(HEAP, 4096)])
    assert raised.value.code == "ENODEV"
    assert isinstance(raised.value, GuestdFailure)


def test_runs_stream_output_and_exit(client: GuestClient) -> None:
    handle = client.run([sys.executable, "-c", "import sys; print('a'); print('b'); print('c', file=sys.stderr)"])
    result = handle.wait()
    assert result.stdout == ("a", "b")
    assert result.stderr == ("c",)
    assert (result.exit.code, result.exit.signal) == (0, None)


def test_runs_can_be_killed(client: GuestClient) -> None:
    handle = client.run([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(60)"])
    assert next(handle.output()).line == "up"
    assert handle.kill("KILL") is True
    assert handle.wait().exit.signal == "SIGKILL"


def test_run_arguments_are_sent_as_the_protocol_says(client: GuestClient, guests: Guests) -> None:
    with pytest.raises(GuestError):
        client.run(["/no/such/program"], memory=MemoryPolicy(MemoryPolicyKind.INTERLEAVE), cpus=[0, 1])
    args = guests.current.sent[-1]["args"]
    assert args == {"argv": ["/no/such/program"], "stdin": None, "cwd": None, "env": None,
                    "memory": {"interleave": "all"}, "cpus": [0, 1]}


def test_a_dropped_channel_reconnects_and_resends_a_read(client: GuestClient, guests: Guests) -> None:
    first = guests.current
    first.drop_next = True
    assert client.vmstat().counters["pgfault"] == 12345
    assert client.reconnects == 1
    assert guests.current is not first
    assert [request["op"] for request in guests.current.sent] == ["vmstat"]


def test_a_dropped_migrate_is_reported_not_resent(client: GuestClient, guests: Guests) -> None:
    guests.current.drop_next = True
    with pytest.raises(ChannelClosed, match="not re-sent as migrate is not idempotent"):
        client.migrate(PID, 2, 4096, ranges=[AddressRange(HEAP, 4096)])
    assert client.reconnects == 1
    assert guests.current.sent == []
    assert client.hello().protocol == 1  # the new channel works


def test_watches_and_tiering_are_restored_after_a_reconnect(client: GuestClient, guests: Guests) -> None:
    client.watch(PID)
    client.tiering(TieringSettings(numa_balancing=2, demotion_enabled=True))
    guests.current.drop_next = True
    observation = client.observe(PID, soft_dirty=False)
    assert observation.damon is not None  # the new daemon watches the pid again
    assert [request["op"] for request in guests.current.sent] == ["tiering", "watch", "observe"]
    assert (guests.root / "proc/sys/kernel/numa_balancing").read_text() == "2"


def test_a_failed_reconnect_is_channel_closed(client: GuestClient, guests: Guests) -> None:
    guests.current.drop_next = True
    guests.fail_connect = True
    with pytest.raises(ChannelClosed, match="reconnecting failed: guest unreachable"):
        client.nodes()


def test_a_run_learns_that_its_channel_died(client: GuestClient, guests: Guests) -> None:
    handle = client.run([sys.executable, "-c", "import time; time.sleep(60)"])
    guests.current.severed = True
    with pytest.raises(ChannelClosed):
        handle.wait()


def test_no_reply_is_a_timeout_naming_the_call(client: GuestClient, guests: Guests) -> None:
    guests.current.mute = True
    with pytest.raises(GuestTimeout, match=r"observe pid 4242: no reply within 0\.2 s"):
        client.observe(PID, timeout=0.2)


def test_a_closed_client_does_not_reconnect(guests: Guests) -> None:
    client = GuestClient(guests.connect)
    client.close()
    with pytest.raises(ChannelClosed, match="client closed"):
        client.hello()
    assert len(guests.transports) == 1


def test_a_malformed_reply_is_a_bad_reply_error(guests: Guests) -> None:
    class Scripted(InProcessTransport):
        def send_line(self, line: bytes) -> None:
            request_id = json.loads(line)["id"]
            self.guest.stdout.lines.put(json.dumps({"v": 1, "id": request_id, "ok": True,
                                                    "result": {"time": "soon", "counters": {}}}).encode())

    make: Callable[[], InProcessTransport] = lambda: Scripted(FakeGuest(guests.root, build=False))  # noqa: E731
    with GuestClient(make) as client, pytest.raises(GuestError, match=r"result\.time: expected float") as raised:
        client.vmstat()
    assert raised.value.code == "BAD_REPLY"


def test_a_local_daemon_process_serves_the_client(tmp_path: Path) -> None:
    build_tree(tmp_path)
    with GuestClient(lambda: SubprocessTransport.guestd(tmp_path)) as client:
        assert client.hello().capabilities.soft_dirty is True
        assert [node.id for node in client.nodes()] == [0, 1, 2]
        with pytest.raises(GuestError) as raised:
            client.observe(1)
        assert raised.value.code == "ESRCH"


def test_a_damon_view_takes_a_mean_access_count_and_refuses_a_fractional_address() -> None:
    def view(*row: object) -> DamonView:
        return DamonView.parse(ReplyFields({"observation": 1, "source": "tracefs", "running": True, "time": 1.0,
                                            "total_regions": 1, "aggregations": 10,
                                            "columns": ["id", "start", "end", "nr_accesses", "age"],
                                            "regions": [list(row)]}, "observe", "result.damon"))

    parsed = view(0, 4096, 8192, 2.5, 3)
    assert parsed.aggregations == 10 and parsed.regions[0].nr_accesses == 2.5
    for bad in ((0, 4096.5, 8192, 2, 3), (0, 4096, 8192, "2", 3), (0, 4096, 8192, 2)):
        with pytest.raises(GuestError, match="regions"):
            view(*bad)
