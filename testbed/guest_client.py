"""The host side of the guest daemon's protocol (``guest/PROTOCOL.md``): typed calls over one channel.

A :class:`GuestClient` owns one channel made by a ``connect`` factory (an SSH
exec channel running ``python3 -m guestd`` in a VM, or :class:`SubprocessTransport`
for a local daemon).  A reader thread matches replies to requests by id and
routes ``run`` events to each run's queue.  When the channel drops, the client
reconnects once; it then re-sends the failed request only if the operation is
idempotent (reads, and settings that are the same when applied twice), and
restores the watches and tiering settings that the old daemon undid on exit.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
import queue
import select
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol, TypeVar

from guest.guestd import PROTOCOL_VERSION
from testbed.values import AddressRange, MemoryPolicy, MemoryPolicyKind, Monitoring, Scheme, TieringSettings

T = TypeVar("T")
JsonObject = dict[str, Any]

DEFAULT_TIMEOUT_S = 30.0
READER_POLL_S = 0.5  # how often the reader looks up from a quiet channel to see if it should stop
# Safe to send again after a reconnect: reads, and settings that end the same when applied twice.
IDEMPOTENT_OPS = frozenset({"hello", "nodes", "vmstat", "observe", "watch", "unwatch", "place", "tiering",
                            "damos_stats"})
CONTEXT_ARGS = ("pid", "node", "run", "id")  # named in error messages

log = logging.getLogger(__name__)


class Transport(Protocol):
    """One bidirectional line channel to a guest daemon."""

    def send_line(self, line: bytes) -> None:
        """Send one line (a trailing newline is added if missing); raises when the channel is gone."""

    def recv_line(self, timeout: float) -> bytes | None:
        """The next line; None at end of stream; raises TimeoutError when none came within ``timeout``."""

    def close(self) -> None: ...


class GuestdFailure(Exception):
    """Anything that kept a guest daemon call from returning a result."""


class GuestError(GuestdFailure):
    """The daemon answered with an error: ``code`` is an errno name (ESRCH, EINVAL, ...) or a protocol code."""

    def __init__(self, code: str, message: str, op: str) -> None:
        super().__init__(f"{op}: {code}: {message}")
        self.code = code
        self.message = message
        self.op = op


class ChannelClosed(GuestdFailure):
    """The channel to the daemon ended (and a reconnect did not make up for it)."""


class GuestTimeout(GuestdFailure):
    """No reply within the call's timeout; the request may still complete in the guest."""


# Replies ------------------------------------------------------------------------------------------


class ReplyFields:
    """One object of a reply, read with type checks so a malformed reply fails loudly, naming the field."""

    def __init__(self, data: Any, op: str, where: str) -> None:
        if not isinstance(data, dict):
            raise _bad_reply(op, where, "an object", data)
        self._data = data
        self._op = op
        self._where = where

    def get(self, key: str, kind: type[T]) -> T:
        value = self.optional(key, kind)
        if value is None:
            raise _bad_reply(self._op, f"{self._where}.{key}", kind.__name__, None)
        return value

    def optional(self, key: str, kind: type[T]) -> T | None:
        value = self._data.get(key)
        if value is None:
            return None
        return _checked(value, kind, self._op, f"{self._where}.{key}")

    def items(self, key: str, kind: type[T]) -> tuple[T, ...]:
        return tuple(_checked(item, kind, self._op, f"{self._where}.{key}[]") for item in self.get(key, list))

    def mapping(self, key: str, kind: type[T]) -> dict[str, T]:
        return {name: _checked(value, kind, self._op, f"{self._where}.{key}.{name}")
                for name, value in self.get(key, dict).items()}

    def per_node(self, key: str) -> dict[int, int]:
        """An object keyed by node id (JSON keys are text) with whole-number values."""
        return {int(node): value for node, value in self.mapping(key, int).items()}

    def sub(self, key: str) -> ReplyFields:
        return ReplyFields(self._data.get(key), self._op, f"{self._where}.{key}")

    def has(self, key: str) -> bool:
        return self._data.get(key) is not None

    def subs(self, key: str) -> list[ReplyFields]:
        return [ReplyFields(item, self._op, f"{self._where}.{key}[{index}]")
                for index, item in enumerate(self.get(key, list))]


def _checked(value: Any, kind: type[T], op: str, where: str) -> T:
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)  # type: ignore[return-value]
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise _bad_reply(op, where, kind.__name__, value)
    return value


def _bad_reply(op: str, where: str, expected: str, value: Any) -> GuestError:
    return GuestError("BAD_REPLY", f"{where}: expected {expected}, got {value!r:.80}", op)


@dataclass(frozen=True)
class Capabilities:
    damon_sysfs: bool
    damon_tracepoint: bool
    tracefs: str | None
    soft_dirty: bool | None  # None: the guest has no kernel config to tell
    numactl: bool
    memory_tiers: bool


@dataclass(frozen=True)
class Hello:
    protocol: int
    daemon_pid: int
    kernel: str
    time: float  # guest CLOCK_MONOTONIC seconds
    page_size: int
    capabilities: Capabilities
    ops: tuple[str, ...]

    @classmethod
    def parse(cls, reply: ReplyFields) -> Hello:
        caps = reply.sub("capabilities")
        return cls(
            reply.get("protocol", int), reply.get("daemon_pid", int), reply.get("kernel", str),
            reply.get("time", float), reply.get("page_size", int),
            Capabilities(caps.get("damon_sysfs", bool), caps.get("damon_tracepoint", bool),
                         caps.optional("tracefs", str), caps.optional("soft_dirty", bool),
                         caps.get("numactl", bool), caps.get("memory_tiers", bool)),
            reply.items("ops", str),
        )


@dataclass(frozen=True)
class Hmat:
    """What firmware says about reaching a node from its nearest CPUs (ns, MB/s); None where unsaid."""

    read_latency_ns: int | None
    write_latency_ns: int | None
    read_bandwidth_mbps: int | None
    write_bandwidth_mbps: int | None


@dataclass(frozen=True)
class NodeInfo:
    id: int
    total_bytes: int
    free_bytes: int
    cpus: tuple[int, ...]
    tier: int | None
    hmat: Hmat | None
    distances: dict[int, int]

    @classmethod
    def parse(cls, node: ReplyFields) -> NodeInfo:
        hmat = None
        if node.has("hmat"):
            values = node.sub("hmat")
            hmat = Hmat(*(values.optional(name, int) for name in
                          ("read_latency_ns", "write_latency_ns", "read_bandwidth_mbps", "write_bandwidth_mbps")))
        return cls(node.get("id", int), node.get("total_bytes", int), node.get("free_bytes", int),
                   node.items("cpus", int), node.optional("tier", int), hmat, node.per_node("distances"))


@dataclass(frozen=True)
class Vmstat:
    time: float
    counters: dict[str, int]


@dataclass(frozen=True)
class WatchInfo:
    pid: int
    kdamond: int
    kdamond_pid: int
    source: str  # "tracefs" (fast) or "sysfs"
    sample_us: int
    aggr_us: int
    min_regions: int
    max_regions: int

    @classmethod
    def parse(cls, reply: ReplyFields) -> WatchInfo:
        return cls(reply.get("pid", int), reply.get("kdamond", int), reply.get("kdamond_pid", int),
                   reply.get("source", str), reply.get("sample_us", int), reply.get("aggr_us", int),
                   reply.get("min_regions", int), reply.get("max_regions", int))


@dataclass(frozen=True)
class DamonRegion:
    id: int  # valid for migrate(regions=...) until the next observe of the same pid
    start: int
    end: int
    nr_accesses: int
    age: int
    resident_pages: int | None  # estimated from pagemap; None when soft_dirty was off
    written_pages: int | None  # soft-dirty since the previous observe
    sampled_pages: int | None  # pages whose node was asked; None unless observed with region_nodes
    nodes: dict[int, int] | None  # bytes on each node, estimated from the sampled pages


@dataclass(frozen=True)
class DamonView:
    observation: int
    source: str
    running: bool
    time: float | None  # guest CLOCK_MONOTONIC when the aggregation ended; None before the first
    total_regions: int
    regions: tuple[DamonRegion, ...]

    @classmethod
    def parse(cls, damon: ReplyFields) -> DamonView:
        columns = damon.items("columns", str)
        rows = [dict(zip(columns, (_checked(value, int, "observe", "result.damon.regions[]") for value in row),
                         strict=True))
                for row in damon.items("regions", list)]
        placements = _region_placements(damon) if damon.has("region_nodes") else [None] * len(rows)
        if len(placements) != len(rows):
            raise _bad_reply("observe", "result.damon.region_nodes", f"{len(rows)} objects", placements)
        regions = tuple(
            DamonRegion(row["id"], row["start"], row["end"], row["nr_accesses"], row["age"],
                        row.get("resident_pages"), row.get("written_pages"), row.get("sampled_pages"), nodes)
            for row, nodes in zip(rows, placements, strict=True)
        )
        return cls(damon.get("observation", int), damon.get("source", str), damon.get("running", bool),
                   damon.optional("time", float), damon.get("total_regions", int), regions)


def _region_placements(damon: ReplyFields) -> list[dict[int, int] | None]:
    where = "result.damon.region_nodes[]"
    return [{int(node): _checked(size, int, "observe", where) for node, size in placement.items()}
            for placement in damon.items("region_nodes", dict)]


@dataclass(frozen=True)
class ChunkPages:
    offset: int
    nodes: dict[int, int]  # node -> sampled pages there
    absent: dict[str, int]  # errno name -> sampled pages not present (ENOENT: never touched or swapped)
    written_pages: int | None


@dataclass(frozen=True)
class RangePages:
    start: int
    length: int
    chunk: int
    stride: int
    chunks: tuple[ChunkPages, ...]

    @classmethod
    def parse(cls, area: ReplyFields) -> RangePages:
        chunks = tuple(ChunkPages(chunk.get("offset", int), chunk.per_node("nodes"), chunk.mapping("absent", int),
                                  chunk.optional("written_pages", int)) for chunk in area.subs("chunks"))
        return cls(area.get("start", int), area.get("length", int), area.get("chunk", int), area.get("stride", int),
                   chunks)


@dataclass(frozen=True)
class ResidencyQuery:
    """Ask where the pages of [start, start+length) are, per ``chunk`` bytes, every ``stride``-th page."""

    start: int
    length: int
    chunk: int | None = None
    stride: int = 1

    def to_args(self) -> JsonObject:
        return {"start": self.start, "length": self.length, "chunk": self.chunk, "stride": self.stride}


@dataclass(frozen=True)
class Observation:
    pid: int
    time: float
    user_s: float
    system_s: float
    affinity: tuple[int, ...]
    threads: int
    resident_bytes: dict[int, int]
    damon: DamonView | None
    ranges: tuple[RangePages, ...]
    soft_dirty_since: float | None
    cost_s: float  # daemon time spent on this observation

    @classmethod
    def parse(cls, reply: ReplyFields) -> Observation:
        cpu = reply.sub("cpu")
        return cls(
            reply.get("pid", int), reply.get("time", float), cpu.get("user_s", float), cpu.get("system_s", float),
            reply.items("affinity", int), reply.get("threads", int), reply.per_node("resident_bytes"),
            DamonView.parse(reply.sub("damon")) if reply.has("damon") else None,
            tuple(RangePages.parse(area) for area in reply.subs("ranges")),
            reply.optional("soft_dirty_since", float), reply.get("cost_s", float),
        )


@dataclass(frozen=True)
class MigrationResult:
    pid: int
    node: int
    moved_pages: int
    moved_bytes: int
    already_on_node: int
    not_present: int
    unmapped_bytes: int  # parts of the given ranges with no mapping (DAMON regions span gaps)
    failed: dict[str, int]  # errno name (or UNMOVED) -> pages
    budget_exhausted: bool
    budget_clipped_to_free: bool
    process_exited: bool  # the process ended part way; what moved before is counted
    seconds: float

    @classmethod
    def parse(cls, reply: ReplyFields) -> MigrationResult:
        return cls(
            reply.get("pid", int), reply.get("node", int), reply.get("moved_pages", int),
            reply.get("moved_bytes", int), reply.get("already_on_node", int), reply.get("not_present", int),
            reply.get("unmapped_bytes", int), reply.mapping("failed", int), reply.get("budget_exhausted", bool),
            reply.get("budget_clipped_to_free", bool), reply.get("process_exited", bool), reply.get("seconds", float),
        )


@dataclass(frozen=True)
class PlaceResult:
    pid: int
    cpus: tuple[int, ...]
    threads: int
    previous: tuple[int, ...]


def tiering_settings(values: ReplyFields) -> TieringSettings:
    return TieringSettings(values.optional("numa_balancing", int), values.optional("demotion_enabled", bool))


def tiering_args(settings: TieringSettings) -> JsonObject:
    return {key: value for key, value in
            (("numa_balancing", settings.numa_balancing), ("demotion_enabled", settings.demotion_enabled))
            if value is not None}


@dataclass(frozen=True)
class TieringChange:
    previous: TieringSettings
    current: TieringSettings


@dataclass(frozen=True)
class SchemeReport:
    action: str
    target_node: int | None
    stats: dict[str, int]  # nr_tried, sz_tried, nr_applied, sz_applied, qt_exceeds, ...


@dataclass(frozen=True)
class DamosReport:
    id: int
    running: bool
    schemes: tuple[SchemeReport, ...]

    @classmethod
    def parse(cls, reply: ReplyFields) -> DamosReport:
        return cls(reply.get("id", int), reply.get("running", bool), tuple(
            SchemeReport(scheme.get("action", str), scheme.optional("target_node", int), scheme.mapping("stats", int))
            for scheme in reply.subs("schemes")))


@dataclass(frozen=True)
class DamosInfo:
    id: int
    kdamond_pid: int
    nodes: tuple[int, ...]


def memory_args(memory: MemoryPolicy) -> JsonObject:
    if memory.kind == MemoryPolicyKind.PREFERRED:
        assert isinstance(memory.nodes, tuple)  # MemoryPolicy checks this
        return {"preferred": memory.nodes[0]}
    return {str(memory.kind): memory.nodes if isinstance(memory.nodes, str) else list(memory.nodes)}


@dataclass(frozen=True)
class RunOutput:
    stream: str  # "stdout" or "stderr"
    line: str


@dataclass(frozen=True)
class RunExit:
    code: int | None  # None when a signal ended the run
    signal: str | None  # e.g. "SIGKILL"


@dataclass(frozen=True)
class RunResult:
    exit: RunExit
    stdout: tuple[str, ...]
    stderr: tuple[str, ...]


RunEvent = RunOutput | RunExit


class RunHandle:
    """A process started in the guest: its output and exit arrive as events, in order."""

    def __init__(self, client: GuestClient, run_id: int, pid: int, argv: tuple[str, ...],
                 events: queue.Queue[RunEvent | GuestdFailure]) -> None:
        self._client = client
        self.run_id = run_id
        self.pid = pid
        self.argv = argv
        self._events = events
        self.exit: RunExit | None = None

    def next_event(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> RunEvent:
        """The next output line or the exit; raises GuestTimeout, or ChannelClosed if the channel died."""
        if self.exit is not None:
            return self.exit
        try:
            item = self._events.get(timeout=timeout)
        except queue.Empty:
            raise GuestTimeout(f"run {self.run_id} (pid {self.pid}): no event within {timeout} s") from None
        if isinstance(item, GuestdFailure):
            raise item
        if isinstance(item, RunExit):
            self.exit = item
        return item

    def wait(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> RunResult:
        """Collect output until the run exits; ``timeout`` bounds the wait for each event."""
        streams: dict[str, list[str]] = {"stdout": [], "stderr": []}
        while True:
            event = self.next_event(timeout)
            if isinstance(event, RunExit):
                return RunResult(event, tuple(streams["stdout"]), tuple(streams["stderr"]))
            streams[event.stream].append(event.line)

    def output(self, timeout: float | None = DEFAULT_TIMEOUT_S) -> Iterator[RunOutput]:
        """Output lines as they come, ending when the run exits (then see :attr:`exit`)."""
        while not isinstance(event := self.next_event(timeout), RunExit):
            yield event

    def kill(self, signal: str = "TERM") -> bool:
        """Signal the run's process group; False if it had already exited."""
        reply = self._client.call("kill", {"run": self.run_id, "signal": signal})
        return reply.get("delivered", bool)


# The channel --------------------------------------------------------------------------------------


@dataclass
class _Pending:
    done: threading.Event = field(default_factory=threading.Event)
    reply: JsonObject | None = None
    failure: GuestdFailure | None = None


class _Connection:
    """One channel: sends requests, and a reader thread that delivers replies and run events."""

    def __init__(self, transport: Transport) -> None:
        self._transport = transport
        self._ids = itertools.count(1)
        self._lock = threading.Lock()
        self._send_lock = threading.Lock()
        self._pending: dict[int, _Pending] = {}
        self._runs: dict[int, queue.Queue[RunEvent | GuestdFailure]] = {}
        self.closed: ChannelClosed | None = None
        self._stopping = threading.Event()
        self._reader = threading.Thread(target=self._read_loop, name="guestd-reader", daemon=True)
        self._reader.start()

    def request(self, op: str, args: JsonObject, timeout: float, context: str) -> JsonObject:
        pending = _Pending()
        with self._lock:
            if self.closed is not None:
                raise self.closed
            request_id = next(self._ids)
            self._pending[request_id] = pending
        line = json.dumps({"v": PROTOCOL_VERSION, "id": request_id, "op": op, "args": args},
                          separators=(",", ":")).encode()
        try:
            with self._send_lock:
                self._transport.send_line(line)
        except Exception as error:  # transports raise their own kinds (OSError, SSH errors) for a dead channel
            self._fail_all(ChannelClosed(f"channel closed while sending {context}: {error}"))
        if not pending.done.wait(timeout):
            with self._lock:
                self._pending.pop(request_id, None)
            raise GuestTimeout(f"{context}: no reply within {timeout:.1f} s")
        if pending.failure is not None:
            raise pending.failure
        assert pending.reply is not None
        return pending.reply

    def run_events(self, run_id: int) -> queue.Queue[RunEvent | GuestdFailure]:
        """The event queue of a run, made on first use by whichever side gets there first."""
        with self._lock:
            events = self._runs.get(run_id)
            if events is None:
                events = self._runs[run_id] = queue.Queue()
                if self.closed is not None:
                    events.put(self.closed)
            return events

    def _read_loop(self) -> None:
        reason = "the daemon closed the channel"
        while not self._stopping.is_set():
            try:
                line = self._transport.recv_line(READER_POLL_S)
            except TimeoutError:
                continue
            except Exception as error:  # any transport failure ends this channel
                reason = f"reading from the channel failed: {error}"
                break
            if line is None:
                break
            self._dispatch(line)
        self._fail_all(ChannelClosed(reason))

    def _dispatch(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            log.warning("guestd sent a line that is not JSON: %r", line[:200])
            return
        if not isinstance(message, dict):
            log.warning("guestd sent a line that is not an object: %r", line[:200])
        elif "event" in message:
            self._deliver_event(message)
        else:
            request_id = message.get("id")
            with self._lock:
                pending = self._pending.pop(request_id, None) if isinstance(request_id, int) else None
            if pending is None:
                log.warning("guestd reply for no waiting request (timed out, or id null): %r", line[:300])
                return
            pending.reply = message
            pending.done.set()

    def _deliver_event(self, message: JsonObject) -> None:
        run_id = message.get("run")
        if not isinstance(run_id, int):
            log.warning("guestd event without a run id: %r", message)
            return
        kind = message.get("event")
        if kind == "output":
            event: RunEvent = RunOutput(str(message.get("stream")), str(message.get("line")))
        elif kind == "exit":
            code, signal = message.get("code"), message.get("signal")
            event = RunExit(code if isinstance(code, int) else None, signal if isinstance(signal, str) else None)
        else:
            log.warning("guestd sent an unknown event kind: %r", message)
            return
        self.run_events(run_id).put(event)

    def _fail_all(self, reason: ChannelClosed) -> None:
        with self._lock:
            if self.closed is None:
                self.closed = reason
            pending, self._pending = self._pending, {}
            runs = list(self._runs.values())
        for waiting in pending.values():
            waiting.failure = self.closed
            waiting.done.set()
        for events in runs:
            events.put(self.closed)

    def close(self) -> None:
        self._stopping.set()
        self._fail_all(ChannelClosed("the client closed the channel"))
        self._transport.close()
        if self._reader is not threading.current_thread():
            self._reader.join(READER_POLL_S * 4)


class GuestClient:
    """Typed calls to one guest daemon; a context manager that closes the channel."""

    def __init__(self, connect: Callable[[], Transport], timeout: float = DEFAULT_TIMEOUT_S) -> None:
        self._connect = connect
        self.timeout = timeout
        self._lock = threading.Lock()
        self._connection = _Connection(connect())
        self.reconnects = 0
        self._closed = False
        self._watches: dict[int, JsonObject] = {}
        self._tiering: JsonObject = {}
        self._damos: set[int] = set()

    def __enter__(self) -> GuestClient:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._closed = True
        self._connection.close()

    def call(self, op: str, args: JsonObject, timeout: float | None = None) -> ReplyFields:
        """Send one request and return its result; the typed methods below are built on this."""
        context = _context(op, args)
        connection = self._connection
        try:
            reply = connection.request(op, args, timeout or self.timeout, context)
        except ChannelClosed as dropped:
            if self._closed:
                raise
            self._reconnect(connection, dropped, context)
            if op not in IDEMPOTENT_OPS:
                raise ChannelClosed(f"{context}: the channel dropped before the reply ({dropped}); reconnected, "
                                    f"but not re-sent as {op} is not idempotent: check the guest's state") from None
            reply = self._connection.request(op, args, timeout or self.timeout, context)
        return _result(reply, op, context)

    def _reconnect(self, broken: _Connection, reason: ChannelClosed, context: str) -> None:
        with self._lock:
            if self._connection is not broken:
                return  # another thread already reconnected
            broken.close()
            try:
                self._connection = _Connection(self._connect())
            except Exception as error:  # whatever the factory raises, the channel stays down
                raise ChannelClosed(f"{context}: channel dropped ({reason}) and reconnecting failed: {error}") \
                    from error
            self.reconnects += 1
            log.warning("guestd channel dropped (%s); reconnected", reason)
        self._restore_session()

    def _restore_session(self) -> None:
        """Redo what the old daemon undid when its channel closed: watches and tiering settings."""
        if self._damos:
            log.warning("damos kdamonds %s stopped with the old channel; start them again if needed",
                        sorted(self._damos))
            self._damos.clear()
        restorations = [("tiering", self._tiering)] if self._tiering else []
        restorations += [("watch", args) for args in self._watches.values()]
        for op, args in restorations:
            try:
                _result(self._connection.request(op, args, self.timeout, _context(op, args)), op, op)
            except GuestdFailure as error:
                log.warning("after reconnecting, could not restore %s: %s", _context(op, args), error)

    # Machine --------------------------------------------------------------------------------

    def hello(self) -> Hello:
        return Hello.parse(self.call("hello", {}))

    def nodes(self) -> list[NodeInfo]:
        return [NodeInfo.parse(node) for node in self.call("nodes", {}).subs("nodes")]

    def vmstat(self, everything: bool = False) -> Vmstat:
        reply = self.call("vmstat", {"all": everything})
        return Vmstat(reply.get("time", float), reply.mapping("counters", int))

    def tiering(self, settings: TieringSettings | None = None) -> TieringChange:
        """Read (``None``) or set the kernel's NUMA balancing mode and demotion; the daemon restores them on exit."""
        args = tiering_args(settings) if settings else {}
        reply = self.call("tiering", args)
        self._tiering.update(args)
        return TieringChange(tiering_settings(reply.sub("previous")), tiering_settings(reply.sub("current")))

    # Observing ------------------------------------------------------------------------------

    def watch(self, pid: int, monitoring: Monitoring | None = None) -> WatchInfo:
        """Start DAMON monitoring of ``pid``'s virtual address space (the same settings again are a no-op)."""
        args = {"pid": pid, **asdict(monitoring or Monitoring())}
        info = WatchInfo.parse(self.call("watch", args))
        self._watches[pid] = args
        return info

    def unwatch(self, pid: int) -> bool:
        """Stop monitoring ``pid``; False if it was not watched."""
        self._watches.pop(pid, None)
        return self.call("unwatch", {"pid": pid}).get("was_watched", bool)

    def observe(self, pid: int, *, ranges: Sequence[ResidencyQuery] = (), soft_dirty: bool = True,
                region_nodes: bool = False, max_regions: int | None = None, pagemap_budget_pages: int | None = None,
                timeout: float | None = None) -> Observation:
        """One observation of ``pid``: CPU time, residency per node, DAMON regions, and the asked ``ranges``.

        With ``soft_dirty`` each region and chunk reports pages written since the previous observe
        (the daemon then clears the bits, so two observers of one pid would share the count).
        With ``region_nodes`` each DAMON region reports its bytes on each node, from sampled pages.
        """
        args = {"pid": pid, "ranges": [query.to_args() for query in ranges], "soft_dirty": soft_dirty,
                "region_nodes": region_nodes, "max_regions": max_regions,
                "pagemap_budget_pages": pagemap_budget_pages}
        return Observation.parse(self.call("observe", args, timeout))

    # Acting ---------------------------------------------------------------------------------

    def migrate(self, pid: int, node: int, budget_bytes: int, *, ranges: Sequence[AddressRange] = (),
                regions: Sequence[int] = (), observation: int | None = None,
                timeout: float | None = None) -> MigrationResult:
        """Move up to ``budget_bytes`` of ``pid``'s pages in ``ranges`` and/or observed ``regions`` to ``node``.

        ``observation`` (from :attr:`DamonView.observation`) makes the daemon refuse stale region ids.
        Not re-sent after a dropped channel: that raises ChannelClosed and the caller decides.
        """
        args = {"pid": pid, "node": node, "budget_bytes": budget_bytes,
                "ranges": [{"start": area.start, "length": area.length} for area in ranges],
                "regions": list(regions), "observation": observation}
        return MigrationResult.parse(self.call("migrate", args, timeout))

    def place(self, pid: int, *, cpus: Sequence[int] | None = None, node: int | None = None) -> PlaceResult:
        """Pin every thread of ``pid`` to ``cpus``, or to the CPUs of ``node``."""
        reply = self.call("place", {"pid": pid, "cpus": list(cpus) if cpus is not None else None, "node": node})
        return PlaceResult(reply.get("pid", int), reply.items("cpus", int), reply.get("threads", int),
                           reply.items("previous", int))

    def damos(self, schemes: Sequence[Scheme], nodes: Sequence[int] | None = None,
              monitoring: Monitoring | None = None) -> DamosInfo:
        """Start DAMOS ``schemes`` on the physical memory of ``nodes`` (default: all memory nodes).

        A :class:`Scheme`'s access pattern defaults to "any region" and its quotas to none.
        """
        args = {"schemes": [asdict(scheme) for scheme in schemes],
                "nodes": list(nodes) if nodes is not None else None, **asdict(monitoring or Monitoring())}
        reply = self.call("damos", args)
        info = DamosInfo(reply.get("id", int), reply.get("kdamond_pid", int), reply.items("nodes", int))
        self._damos.add(info.id)
        return info

    def damos_stats(self, damos_id: int) -> DamosReport:
        return DamosReport.parse(self.call("damos_stats", {"id": damos_id}))

    def damos_stop(self, damos_id: int) -> DamosReport:
        self._damos.discard(damos_id)
        return DamosReport.parse(self.call("damos_stop", {"id": damos_id}))

    def run(self, argv: Sequence[str], *, stdin: str | None = None, cwd: str | None = None,
            env: dict[str, str] | None = None, memory: MemoryPolicy | None = None,
            cpus: Sequence[int] | None = None) -> RunHandle:
        """Start ``argv`` in the guest (under numactl when ``memory`` or ``cpus`` is given)."""
        args = {"argv": list(argv), "stdin": stdin, "cwd": cwd, "env": env,
                "memory": memory_args(memory) if memory else None, "cpus": list(cpus) if cpus else None}
        connection = self._connection
        reply = self.call("run", args)
        run_id = reply.get("run", int)
        return RunHandle(self, run_id, reply.get("pid", int), reply.items("argv", str), connection.run_events(run_id))


def _context(op: str, args: JsonObject) -> str:
    """``observe pid 123`` / ``migrate pid 123 node 2``: what a message is about."""
    named = [f"{key} {args[key]}" for key in CONTEXT_ARGS if args.get(key) is not None]
    return " ".join([op, *named])


def _result(reply: JsonObject, op: str, context: str) -> ReplyFields:
    if reply.get("ok") is True:
        return ReplyFields(reply.get("result"), op, "result")
    error = reply.get("error")
    if not isinstance(error, dict):
        raise GuestError("BAD_REPLY", f"{context}: error reply without an error object", op)
    raise GuestError(str(error.get("code")), f"{context}: {error.get('message')}", op)


class LineBuffer:
    """Bytes from a stream handed out a line at a time: the common part of line transports."""

    def __init__(self) -> None:
        self._data = b""

    def next_line(self, receive: Callable[[float], bytes], timeout: float) -> bytes | None:
        """The next line without its newline, None at end of stream, TimeoutError after ``timeout``.

        ``receive(seconds)`` returns what arrived (b"" at end of stream) or raises TimeoutError.
        """
        deadline = time.monotonic() + timeout
        while b"\n" not in self._data:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"no line from the guest daemon within {timeout:.1f} s")
            with contextlib.suppress(TimeoutError):
                chunk = receive(remaining)
                if not chunk:
                    return None
                self._data += chunk
        line, _, self._data = self._data.partition(b"\n")
        return line


class SubprocessTransport:
    """A guest daemon as a local child process: for tests, and for running guestd on the host itself."""

    def __init__(self, argv: Sequence[str], stderr: IO[bytes] | int | None = None) -> None:
        self._process = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr)
        assert self._process.stdin is not None and self._process.stdout is not None
        self._stdin = self._process.stdin
        self._stdout_fd = self._process.stdout.fileno()
        self._lines = LineBuffer()

    @classmethod
    def guestd(cls, root: Path | None = None, stderr: IO[bytes] | int | None = None) -> SubprocessTransport:
        """``python -m guest.guestd`` from this checkout, on ``root`` (a fake tree) or the real machine."""
        argv = [sys.executable, "-m", "guest.guestd", *(["--root", str(root)] if root else [])]
        return cls(argv, stderr)

    @property
    def pid(self) -> int:
        return self._process.pid

    def send_line(self, line: bytes) -> None:
        try:
            self._stdin.write(line.rstrip(b"\n") + b"\n")
            self._stdin.flush()
        except (BrokenPipeError, ValueError) as error:
            raise ChannelClosed(f"guestd (pid {self._process.pid}) is gone: {error}") from None

    def recv_line(self, timeout: float) -> bytes | None:
        return self._lines.next_line(self._receive, timeout)

    def _receive(self, timeout: float) -> bytes:
        ready, _, _ = select.select([self._stdout_fd], [], [], timeout)
        if not ready:
            raise TimeoutError
        return os.read(self._stdout_fd, 1 << 16)

    def close(self) -> None:
        """Close stdin (the daemon cleans up on EOF), then wait for it, killing it if it hangs."""
        with contextlib.suppress(BrokenPipeError):
            self._stdin.close()
        try:
            self._process.wait(5)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()
