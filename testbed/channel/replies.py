"""The guest daemon's replies as typed values, parsed with checks, and the request arguments built from values.

Every reply type the protocol (``guest/PROTOCOL.md``) defines, each with the code that reads it from
a reply's ``result`` object, and the few functions that turn :mod:`testbed.values` types into
request arguments.  Nothing here talks to a channel.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from testbed.channel.errors import GuestError
from testbed.values import MemoryPolicy, MemoryPolicyKind, TieringSettings

T = TypeVar("T")
JsonObject = dict[str, Any]


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
    nr_accesses: float  # samples that found the region accessed; a mean when averaged over aggregations
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
    time: float | None  # guest CLOCK_MONOTONIC when the (newest) aggregation ended; None before the first
    total_regions: int
    regions: tuple[DamonRegion, ...]
    aggregations: int = 1  # how many aggregations ``nr_accesses`` is the mean of

    @classmethod
    def parse(cls, damon: ReplyFields) -> DamonView:
        columns = damon.items("columns", str)
        where = "result.damon.regions[]"
        rows: list[tuple[dict[str, int], float]] = []  # each row's whole-number columns, and its access count
        for row in damon.items("regions", list):
            if len(row) != len(columns):
                raise _bad_reply("observe", where, f"{len(columns)} values", row)
            values = dict(zip(columns, row, strict=True))
            # A mean (a fraction) when averaged over aggregations; every other column is a whole number.
            count = _checked(values.pop("nr_accesses", None), float, "observe", where)
            rows.append(({column: _checked(value, int, "observe", where) for column, value in values.items()}, count))
        placements = _region_placements(damon) if damon.has("region_nodes") else [None] * len(rows)
        if len(placements) != len(rows):
            raise _bad_reply("observe", "result.damon.region_nodes", f"{len(rows)} objects", placements)
        regions = tuple(
            DamonRegion(row["id"], row["start"], row["end"], count, row["age"],
                        row.get("resident_pages"), row.get("written_pages"), row.get("sampled_pages"), nodes)
            for (row, count), nodes in zip(rows, placements, strict=True)
        )
        return cls(damon.get("observation", int), damon.get("source", str), damon.get("running", bool),
                   damon.optional("time", float), damon.get("total_regions", int), regions,
                   damon.optional("aggregations", int) or 1)


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
class ObserveReply:
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
    def parse(cls, reply: ReplyFields) -> ObserveReply:
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
    return TieringSettings(values.optional("numa_balancing", int), values.optional("demotion_enabled", bool),
                           values.optional("transparent_hugepage", str), values.optional("zone_reclaim_mode", int))


def tiering_args(settings: TieringSettings) -> JsonObject:
    return {key: value for key, value in asdict(settings).items() if value is not None}


@dataclass(frozen=True)
class TieringChange:
    previous: TieringSettings
    current: TieringSettings


@dataclass(frozen=True)
class Settled:
    """After ``settle``: each node's free bytes, and what the daemon holds on the nodes given a target."""

    free_after: dict[int, int]
    held: dict[int, int]


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
