"""The guestd wire protocol: envelopes, ids, errors, run events; random input never crashes the daemon."""

from __future__ import annotations

import io
import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guestd_fake import FakeGuest, FakeProcess, build_tree
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guest.guestd.__main__ import serve
from guest.guestd.protocol import MAX_LINE_BYTES, Output
from guest.guestd.runs import Placement
from testbed.channel.transports import SubprocessTransport

PID = 4242
HEAP = 0x10000000


@pytest.fixture
def guest(tmp_path: Path) -> Iterator[FakeGuest]:
    guest = FakeGuest(tmp_path)
    guest.add_process(FakeProcess(PID, [(HEAP, HEAP + 0x20000)], {0: 8}))
    yield guest
    guest.daemon.close()


def reply_to(guest: FakeGuest, line: bytes | str) -> dict[str, Any]:
    guest.send(line)
    reply = guest.next_message()
    assert guest.stdout.lines.empty(), "one line, one reply"
    return reply


def test_replies_echo_the_request_id(guest: FakeGuest) -> None:
    reply = reply_to(guest, '{"v":1,"id":41,"op":"vmstat"}')
    assert (reply["v"], reply["id"], reply["ok"]) == (1, 41, True)
    assert reply["result"]["counters"]["pgfault"] == 12345


@pytest.mark.parametrize(("line", "reply_id", "words"), [
    (b"not json", None, "not a JSON object"),
    (b"\xff\xfe", None, "not a JSON object"),
    (b"[1, 2]", None, "expected a JSON object"),
    (b'{"v":1,"op":"hello"}', None, "'id' must be"),
    (b'{"v":1,"id":"7","op":"hello"}', None, "'id' must be"),
    (b'{"v":1,"id":true,"op":"hello"}', None, "'id' must be"),
    (b'{"v":1,"id":-1,"op":"hello"}', None, "'id' must be"),
    (b'{"v":1,"id":9007199254740992,"op":"hello"}', None, "'id' must be"),
    (b'{"v":2,"id":3,"op":"hello"}', 3, "'v' must be 1"),
    (b'{"id":3,"op":"hello"}', 3, "'v' must be 1"),
    (b'{"v":1,"id":3}', 3, "'op' must be"),
    (b'{"v":1,"id":3,"op":"hello","extra":1}', 3, "unknown envelope field 'extra'"),
    (b'{"v":1,"id":3,"op":"hello","args":[]}', 3, "expected an object"),
    (b'{"v":1,"id":3,"op":"reboot"}', 3, "unknown op 'reboot'"),
    (b'{"v":1,"id":3,"op":"observe","args":{"pid":NaN}}', None, "NaN is not a number JSON allows"),
    (b'{"v":1,"id":3,"op":"observe","args":{"pid":' + b"9" * 5000 + b"}}", None, "not a JSON object"),
    (b"[" * 100_000 + b"]" * 100_000, None, "not a JSON object"),
])
def test_malformed_lines_get_well_formed_errors(guest: FakeGuest, line: bytes, reply_id: int | None,
                                                words: str) -> None:
    reply = reply_to(guest, line)
    assert reply["ok"] is False
    assert reply["id"] == reply_id
    assert reply["error"]["code"] == "BAD_REQUEST"
    assert words in reply["error"]["message"]


@pytest.mark.parametrize(("args", "words"), [
    ({}, "observe.pid: missing"),
    ({"pid": "4242"}, "observe.pid: expected a whole number, got str"),
    ({"pid": True}, "observe.pid: expected a whole number, got bool"),
    ({"pid": 10**30}, "observe.pid: expected a whole number from 1 to"),
    ({"pid": 1e999}, "observe.pid: expected a whole number, got float inf"),
    ({"pid": PID, "colour": "red"}, "observe.colour: unknown argument"),
    ({"pid": PID, "ranges": [{"start": 0}]}, "observe.ranges[0].length: missing"),
    ({"pid": PID, "ranges": {"start": 0}}, "observe.ranges: expected a list"),
])
def test_bad_arguments_name_the_field(guest: FakeGuest, args: dict[str, Any], words: str) -> None:
    # 1e999 is valid JSON that Python reads as infinity (json.dumps would write Infinity, which is not JSON).
    reply = reply_to(guest, json.dumps({"v": 1, "id": 5, "op": "observe", "args": args}).replace("Infinity", "1e999"))
    assert reply["id"] == 5
    assert reply["error"]["code"] == "EINVAL"
    assert words in reply["error"]["message"]


def test_an_overlong_line_is_answered_and_skipped(guest: FakeGuest) -> None:
    requests = io.BytesIO(b'{"v":1,"id":1,"op":"' + b"x" * MAX_LINE_BYTES + b'"}\n{"v":1,"id":2,"op":"hello"}\n')
    serve(guest.daemon, requests)
    first, second = guest.next_message(), guest.next_message()
    assert (first["id"], first["error"]["code"]) == (None, "BAD_REQUEST")
    assert "longer than" in first["error"]["message"]
    assert (second["id"], second["ok"]) == (2, True)


OPS = ["hello", "nodes", "vmstat", "watch", "unwatch", "observe", "migrate", "place", "tiering", "damos",
       "damos_stats", "damos_stop"]  # run and kill start and signal real processes: tested on their own
ARG_NAMES = ["pid", "node", "budget_bytes", "ranges", "regions", "observation", "cpus", "start", "length", "chunk",
             "stride", "soft_dirty", "max_regions", "schemes", "action", "target_node", "nodes", "numa_balancing",
             "demotion_enabled", "all", "id", "sample_us", "aggr_us", "min_regions", "age", "size",
             "pagemap_budget_pages"]
scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False)
           | st.text(max_size=8) | st.sampled_from([PID, HEAP, 0, 1, 2, 3, 4096, "all", "stat", "migrate_cold"]))
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.sampled_from(ARG_NAMES) | st.text(max_size=4),
                                                                inner, max_size=4),
    max_leaves=12,
)
# Plausible arguments reach the handlers' own checks, not just the envelope's.
plausible = (st.sampled_from([PID, HEAP, 0, 1, 2, 4096, 1 << 20]) | st.integers(-3, 2**65) | st.booleans()
             | st.lists(st.integers(0, 4), max_size=3)
             | st.lists(st.fixed_dictionaries({"start": st.sampled_from([HEAP, HEAP + 4096, 0]),
                                               "length": st.sampled_from([4096, 0x20000, 0, 2**64])},
                                              optional={"chunk": st.integers(0, 1 << 20)}), max_size=2)
             | st.lists(st.fixed_dictionaries({"action": st.sampled_from(["stat", "migrate_hot", "pageout"])},
                                              optional={"target_node": st.integers(0, 3),
                                                        "age": st.lists(st.integers(0, 9), max_size=3)}),
                        max_size=2)
             | json_values)
well_formed = st.fixed_dictionaries({
    "v": st.just(1), "id": st.integers(0, 1000), "op": st.sampled_from(OPS),
    "args": st.dictionaries(st.sampled_from(ARG_NAMES), plausible, max_size=5),
})
requests = st.fixed_dictionaries(
    {"v": st.sampled_from([1, 1, 1, 2, "1"]), "id": st.integers(-5, 2**60) | json_values,
     "op": st.sampled_from(OPS) | st.text(max_size=6)},
    optional={"args": st.dictionaries(st.sampled_from(ARG_NAMES), json_values, max_size=5) | json_values},
)
lines = (st.binary(max_size=60) | st.text(max_size=60).map(str.encode)
         | (requests | well_formed | well_formed).map(lambda request: json.dumps(request).encode()))

def test_random_requests_always_get_one_well_formed_reply(tmp_path: Path) -> None:
    guest = FakeGuest(tmp_path)
    guest.add_process(FakeProcess(PID, [(HEAP, HEAP + 0x20000)], {0: 8}))
    guest.syscalls.pages[PID] = {HEAP: 0}

    @settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(lines)
    def check(line: bytes) -> None:
        reply = reply_to(guest, line.replace(b"\n", b" "))
        assert set(reply) == {"v", "id", "ok", "result" if reply["ok"] else "error"}
        assert reply["v"] == 1
        sent = _json_object(line)
        expected_id = sent.get("id") if isinstance(sent.get("id"), int) and not isinstance(sent.get("id"), bool) \
            and 0 <= sent["id"] < 2**53 else None
        assert reply["id"] == expected_id
        if not reply["ok"]:
            assert isinstance(reply["error"]["code"], str) and reply["error"]["code"] != "INTERNAL", reply
            assert isinstance(reply["error"]["message"], str) and reply["error"]["message"]

    check()
    guest.daemon.close()
    assert guest.kernel.running_kdamonds() == []


def _json_object(line: bytes) -> dict[str, Any]:
    """The line as strict JSON (no NaN or Infinity), or {} when it is not: then no id can be read."""
    try:
        value = json.loads(line.replace(b"\n", b" "), parse_constant=_not_json)
    except (ValueError, RecursionError):
        return {}
    return value if isinstance(value, dict) else {}


def _not_json(name: str) -> Any:
    raise ValueError(name)


def collect_run(guest: FakeGuest, run: int) -> tuple[list[tuple[str, str]], dict[str, Any]]:
    output: list[tuple[str, str]] = []
    while True:
        event = guest.next_message(timeout=20)
        assert event["run"] == run
        if event["event"] == "exit":
            return output, event
        output.append((event["stream"], event["line"]))


def test_run_streams_output_then_exit_after_the_reply(guest: FakeGuest) -> None:
    script = "import sys; print('one'); print(sys.stdin.read().upper()); print('oops', file=sys.stderr); sys.exit(3)"
    reply = reply_to(guest, json.dumps({"v": 1, "id": 9, "op": "run",
                                        "args": {"argv": [sys.executable, "-c", script], "stdin": "hi"}}))
    assert reply["id"] == 9
    run = reply["result"]["run"]
    assert reply["result"]["pid"] > 0
    output, exit_event = collect_run(guest, run)
    assert [line for stream, line in output if stream == "stdout"] == ["one", "HI"]
    assert [line for stream, line in output if stream == "stderr"] == ["oops"]
    assert (exit_event["code"], exit_event["signal"]) == (3, None)


def test_kill_signals_a_run_and_exit_reports_the_signal(guest: FakeGuest) -> None:
    script = "import time; print('ready', flush=True); time.sleep(60)"
    run = guest.result("run", argv=[sys.executable, "-c", script])["run"]
    assert guest.next_message(timeout=20)["line"] == "ready"
    assert guest.result("kill", run=run, signal="KILL")["delivered"] is True
    _, exit_event = collect_run(guest, run)
    assert (exit_event["code"], exit_event["signal"]) == (None, "SIGKILL")
    code, message = guest.error("kill", run=run)
    assert (code, f"run {run} is not running" in message) == ("ESRCH", True)


def test_exit_terminates_runs_still_going(guest: FakeGuest) -> None:
    run = guest.result("run", argv=[sys.executable, "-c", "import time; time.sleep(60)"])["run"]
    guest.daemon.close()
    _, exit_event = collect_run(guest, run)
    assert exit_event["signal"] == "SIGTERM"


def test_run_errors_are_clear(guest: FakeGuest) -> None:
    assert guest.error("run", argv=["/no/such/program"]) == (
        "ENOENT", "run: cannot start '/no/such/program': No such file or directory (/no/such/program)")
    assert guest.error("run", argv=["true"], memory={"interleave": "all", "membind": [0]})[0] == "EINVAL"
    assert guest.error("kill", run=1, signal="NOPE")[1].startswith("kill.signal: 'NOPE' is not a signal name")


@pytest.mark.parametrize(("placement", "prefix"), [
    (Placement(), []),
    (Placement("--interleave=all"), ["numactl", "--interleave=all", "--"]),
    (Placement("--membind=0,2", (0, 1, 3)), ["numactl", "--physcpubind=0-1,3", "--membind=0,2", "--"]),
])
def test_placement_becomes_a_numactl_prefix(placement: Placement, prefix: list[str]) -> None:
    assert placement.prefix() == prefix


def test_the_real_process_restores_settings_when_its_channel_closes(tmp_path: Path) -> None:
    build_tree(tmp_path)
    transport = SubprocessTransport.guestd(tmp_path)
    transport.send_line(b'{"v":1,"id":1,"op":"tiering","args":{"numa_balancing":2}}')
    reply = json.loads(transport.recv_line(20) or b"null")
    assert reply["result"]["current"]["numa_balancing"] == 2
    assert (tmp_path / "proc/sys/kernel/numa_balancing").read_text() == "2"
    transport.close()  # EOF on stdin: the daemon cleans up and exits
    assert (tmp_path / "proc/sys/kernel/numa_balancing").read_text() == "0"


def test_sigterm_cleans_up_like_eof(tmp_path: Path) -> None:
    build_tree(tmp_path)
    transport = SubprocessTransport.guestd(tmp_path)
    transport.send_line(b'{"v":1,"id":1,"op":"tiering","args":{"demotion_enabled":true}}')
    assert json.loads(transport.recv_line(20) or b"null")["ok"] is True
    os.kill(transport.pid, signal.SIGTERM)
    assert transport.recv_line(20) is None  # the daemon exits
    transport.close()
    assert (tmp_path / "sys/kernel/mm/numa/demotion_enabled").read_text() == "false"


def test_a_vanished_client_does_not_break_the_daemon() -> None:
    class Gone(io.RawIOBase):
        def writable(self) -> bool:
            return True

        def write(self, data: Any) -> int:
            raise BrokenPipeError

    output = Output(Gone())
    output.send({"v": 1})
    assert output.closed
    output.send({"v": 1})  # later events are dropped quietly
