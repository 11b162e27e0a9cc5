"""The connection to a guest daemon and the typed calls over it (:class:`GuestClient`).

A :class:`GuestClient` owns one channel made by a ``connect`` factory (an SSH
exec channel running ``python3 -m guestd`` in a VM, or a
:class:`~testbed.channel.transports.SubprocessTransport` for a local daemon).
A reader thread matches replies to requests by id and
routes ``run`` events to each run's queue.  When the channel drops, the client
reconnects once; it then re-sends the failed request only if the operation is
idempotent (reads, and settings that are the same when applied twice), and
restores the watches and tiering settings that the old daemon undid on exit.
"""

from __future__ import annotations

import itertools
import json
import logging
import queue
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field

from guest.guestd import PROTOCOL_VERSION
from testbed.channel.errors import ChannelClosed, GuestdFailure, GuestError, GuestTimeout
from testbed.channel.replies import (
    DamosInfo,
    DamosReport,
    Hello,
    JsonObject,
    MigrationResult,
    NodeInfo,
    ObserveReply,
    PlaceResult,
    ReplyFields,
    ResidencyQuery,
    RunEvent,
    RunExit,
    RunOutput,
    RunResult,
    Settled,
    TieringChange,
    Vmstat,
    WatchInfo,
    memory_args,
    tiering_args,
    tiering_settings,
)
from testbed.channel.transports import Transport
from testbed.values import AddressRange, MemoryPolicy, Monitoring, Scheme, TieringSettings

DEFAULT_TIMEOUT_S = 30.0
READER_POLL_S = 0.5  # how often the reader looks up from a quiet channel to see if it should stop
# Safe to send again after a reconnect: reads, and settings that end the same when applied twice.
IDEMPOTENT_OPS = frozenset({"hello", "nodes", "vmstat", "observe", "watch", "unwatch", "place", "tiering",
                            "damos_stats"})
CONTEXT_ARGS = ("pid", "node", "run", "id")  # named in error messages

log = logging.getLogger(__name__)


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
        return _result(self._request(op, args, timeout or self.timeout, context), op, context)

    def _request(self, op: str, args: JsonObject, timeout: float, context: str) -> JsonObject:
        """One request's reply, reconnecting once if the channel dropped (and re-sending only an idempotent op)."""
        connection = self._connection
        try:
            return connection.request(op, args, timeout, context)
        except ChannelClosed as dropped:
            if self._closed:
                raise
            self._reconnect(connection, dropped, context)
            if op not in IDEMPOTENT_OPS:
                raise ChannelClosed(f"{context}: the channel dropped before the reply ({dropped}); reconnected, "
                                    f"but not re-sent as {op} is not idempotent: check the guest's state") from None
            return self._connection.request(op, args, timeout, context)

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

    def settle(self, free_targets: dict[int, int] | None = None) -> Settled:
        """Drop the page cache and compact memory before a workload starts, and hold each node of
        ``free_targets`` down to that many free bytes."""
        reply = self.call("settle", {"free": [{"node": node, "bytes": size}
                                              for node, size in (free_targets or {}).items()]})
        return Settled(reply.per_node("free_after"), reply.per_node("held"))

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
                damon_until_us: int | None = None, damon_since_us: int | None = None,
                timeout: float | None = None) -> ObserveReply:
        """One observation of ``pid``: CPU time, residency per node, DAMON regions, and the asked ``ranges``.

        With ``soft_dirty`` each region and chunk reports pages written since the previous observe
        (the daemon then clears the bits, so two observers of one pid would share the count).
        With ``region_nodes`` each DAMON region reports its bytes on each node, from sampled pages.
        With ``damon_until_us`` (the guest's CLOCK_MONOTONIC) the DAMON view is the last aggregation
        that ended by then; with ``damon_since_us`` too, its regions with each one's mean ``nr_accesses``
        over the aggregations that ended in between.
        """
        args = {"pid": pid, "ranges": [query.to_args() for query in ranges], "soft_dirty": soft_dirty,
                "region_nodes": region_nodes, "max_regions": max_regions,
                "pagemap_budget_pages": pagemap_budget_pages, "damon_until_us": damon_until_us,
                "damon_since_us": damon_since_us}
        return ObserveReply.parse(self.call("observe", args, timeout))

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
