"""The request loop and one handler per operation; ``guest/PROTOCOL.md`` documents each."""

from __future__ import annotations

import logging
import os
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

from . import PROTOCOL_VERSION, arguments
from .arguments import (
    DEFAULT_PAGEMAP_BUDGET,
    MAX_CPU,
    MAX_MONOTONIC_US,
    MAX_NODE,
    MAX_OBSERVED_REGIONS,
    MAX_PID,
    NodeSampling,
)
from .damon import MAX_UINT, MAX_ULONG, Damon, DamosRun, Watch
from .kernel import Kernel, format_id_list, parse_id_list
from .pages import AddressRange, RangeQuery, migrate, query_chunks, region_node_bytes
from .process import PAGE_SIZE, Process, mapped_parts, page_counts
from .protocol import (
    Args,
    GuestdError,
    JsonObject,
    Output,
    Request,
    RequestError,
    from_os_error,
    invalid,
    parse_request,
    reply_error,
    reply_ok,
)
from .runs import Placement, Runs
from .syscalls import Syscalls
from .system import (
    THP_MODES,
    Ballast,
    Tiering,
    capabilities,
    describe_nodes,
    memory_nodes,
    node_cpus,
    node_free_bytes,
    online_nodes,
    read_vmstat,
    require_memory_node,
    settle_memory,
)
from .tracefs import Region

REGION_COLUMNS = ("id", "start", "end", "nr_accesses", "age")
PAGE_COLUMNS = ("resident_pages", "written_pages")
NODE_COLUMNS = ("sampled_pages",)

log = logging.getLogger(__name__)
Handler = Callable[[Args], JsonObject]


@dataclass(frozen=True)
class Observation:
    """The regions an observation reported, so ``migrate`` can name them by id."""

    number: int
    regions: tuple[Region, ...]


class Daemon:
    def __init__(self, kernel: Kernel, syscalls: Syscalls, output: Output, kdamonds: int = 8) -> None:
        self._kernel = kernel
        self._syscalls = syscalls
        self._output = output
        self._damon = Damon(kernel, kdamonds, instance_prefix=f"guestd-{os.getpid()}")
        self._tiering = Tiering(kernel)
        self._ballast = Ballast(kernel, syscalls)
        self._runs = Runs(output, syscalls)
        self._watches: dict[int, Watch] = {}
        self._damos: dict[int, DamosRun] = {}
        self._observations: dict[int, Observation] = {}
        self._soft_dirty_since: dict[int, float] = {}
        self._observation_count = 0
        self._after_reply: list[Callable[[], None]] = []
        self._handlers: dict[str, Handler] = {
            "hello": self.hello, "nodes": self.nodes, "vmstat": self.vmstat,
            "watch": self.watch, "unwatch": self.unwatch, "observe": self.observe,
            "migrate": self.migrate, "place": self.place, "tiering": self.tiering,
            "settle": self.settle,
            "damos": self.damos, "damos_stats": self.damos_stats, "damos_stop": self.damos_stop,
            "run": self.run, "kill": self.kill,
        }

    # The loop --------------------------------------------------------------------------------

    def handle_line(self, line: bytes) -> None:
        """Answer one request line; nothing a client sends escapes as an exception."""
        try:
            request = parse_request(line)
        except RequestError as error:
            self._output.send(reply_error(error.request_id, error))
            return
        self._output.send(self._answer(request))
        actions, self._after_reply = self._after_reply, []
        for action in actions:
            action()

    def reject(self, message: str) -> None:
        """Answer a line that could not even be read as a request."""
        self._output.send(reply_error(None, RequestError(None, message)))

    def _answer(self, request: Request) -> JsonObject:
        handler = self._handlers.get(request.op)
        if handler is None:
            known = ", ".join(sorted(self._handlers))
            return reply_error(request.id, GuestdError("BAD_REQUEST", f"unknown op {request.op!r} (known: {known})"))
        try:
            return reply_ok(request.id, handler(request.args))
        except GuestdError as error:
            return reply_error(request.id, error)
        except OSError as error:
            return reply_error(request.id, from_os_error(error, request.op))
        except Exception as error:  # the boundary: a bug must cost one request, not the daemon
            log.exception("op %s failed", request.op)
            return reply_error(request.id, GuestdError("INTERNAL", f"{request.op}: {type(error).__name__}: {error}"))

    def close(self) -> None:
        """Undo what this daemon started: kdamonds, trace instances, tiering changes, runs."""
        cleanups: list[tuple[str, Callable[[], None]]] = [
            *((f"unwatch pid {pid}", partial(self._damon.unwatch, watch)) for pid, watch in self._watches.items()),
            *((f"stop damos kdamond {kdamond.slot}", partial(self._damon.slots.stop, kdamond.slot))
              for run in self._damos.values() for kdamond in run.kdamonds),
            ("restore tiering", self._tiering.restore),
            ("stop runs", self._runs.stop_all),
            ("release held memory", self._ballast.release),
        ]
        self._watches.clear()
        self._damos.clear()
        for what, cleanup in cleanups:
            try:
                cleanup()
            except (OSError, GuestdError) as error:
                log.warning("on exit, could not %s: %s", what, error)

    # Machine ---------------------------------------------------------------------------------

    def hello(self, args: Args) -> JsonObject:
        args.done()
        release = self._kernel.value("proc/sys/kernel/osrelease")
        return {"protocol": PROTOCOL_VERSION, "daemon_pid": os.getpid(), "kernel": release,
                "time": time.monotonic(), "page_size": PAGE_SIZE,
                "capabilities": capabilities(self._kernel, release), "ops": sorted(self._handlers)}

    def nodes(self, args: Args) -> JsonObject:
        args.done()
        return {"time": time.monotonic(), "nodes": describe_nodes(self._kernel)}

    def vmstat(self, args: Args) -> JsonObject:
        everything = args.boolean("all", default=False)
        args.done()
        return {"time": time.monotonic(), "counters": read_vmstat(self._kernel, everything)}

    def tiering(self, args: Args) -> JsonObject:
        thp = args.text("transparent_hugepage", default=None)
        if thp is not None and thp not in THP_MODES:
            raise invalid(f"tiering.transparent_hugepage: expected one of {', '.join(THP_MODES)}, got {thp!r}")
        wanted = {"numa_balancing": args.integer("numa_balancing", 0, 3, default=None),
                  "demotion_enabled": args.boolean("demotion_enabled", default=None),
                  "transparent_hugepage": thp,
                  "zone_reclaim_mode": args.integer("zone_reclaim_mode", 0, 7, default=None)}
        args.done()
        return self._tiering.apply({name: value for name, value in wanted.items() if value is not None})

    def settle(self, args: Args) -> JsonObject:
        targets: dict[int, int] = {}
        for target in args.subs("free"):
            node = target.integer("node", 0, MAX_NODE)
            require_memory_node(self._kernel, node, "settle")
            targets[node] = target.integer("bytes", 0, MAX_ULONG)
            target.done()
        args.done()
        return settle_memory(self._kernel, self._ballast, targets)

    # DAMON -----------------------------------------------------------------------------------

    def watch(self, args: Args) -> JsonObject:
        pid = args.integer("pid", 1, MAX_PID)
        monitoring = arguments.monitoring(args)
        args.done()
        Process(self._kernel, pid)
        self._forget_exited()
        current = self._watches.get(pid)
        if current is not None:
            if current.monitoring == monitoring and self._damon.slots.running(current.slot):
                return current.describe()
            self._damon.unwatch(self._watches.pop(pid))
        watch = self._damon.watch(pid, monitoring)
        self._watches[pid] = watch
        return watch.describe()

    def _forget_exited(self) -> None:
        """Drop what belongs to processes that are gone, so their kdamond slots can be reused."""
        for pid in [pid for pid in self._watches if not self._kernel.exists(f"proc/{pid}")]:
            self._damon.unwatch(self._watches.pop(pid))
        for table in (self._observations, self._soft_dirty_since):
            for pid in [pid for pid in table if pid not in self._watches and not self._kernel.exists(f"proc/{pid}")]:
                del table[pid]

    def unwatch(self, args: Args) -> JsonObject:
        pid = args.integer("pid", 1, MAX_PID)
        args.done()
        watch = self._watches.pop(pid, None)
        if watch is not None:
            self._damon.unwatch(watch)
        return {"pid": pid, "was_watched": watch is not None}

    def damos(self, args: Args) -> JsonObject:
        nodes = args.integers("nodes", 0, MAX_NODE, default=None)
        if nodes is None:
            nodes = memory_nodes(self._kernel)
        schemes = [arguments.scheme(sub, self._kernel, nodes) for sub in args.subs("schemes")]
        monitoring = arguments.monitoring(args)
        args.done()
        if not schemes:
            raise invalid("damos.schemes: give at least one scheme")
        self._forget_exited()
        run = self._damon.start_scheme_run(schemes, monitoring)
        self._damos[run.id] = run
        return {"id": run.id, "kdamond_pid": run.kdamonds[0].pid,
                "nodes": sorted({node for kdamond in run.kdamonds for node in kdamond.nodes}),
                "kdamonds": [{"kdamond": kdamond.slot, "kdamond_pid": kdamond.pid, "nodes": list(kdamond.nodes)}
                             for kdamond in run.kdamonds],
                "schemes": [scheme.describe() for scheme in schemes]}

    def damos_stats(self, args: Args) -> JsonObject:
        damos = self._damos_run(args)
        return self._damos_report(damos)

    def damos_stop(self, args: Args) -> JsonObject:
        damos = self._damos_run(args)
        report = self._damos_report(damos)
        for kdamond in damos.kdamonds:
            self._damon.slots.stop(kdamond.slot)
        del self._damos[damos.id]
        return {**report, "running": False}

    def _damos_run(self, args: Args) -> DamosRun:
        slot = args.integer("id", 0, MAX_UINT)
        args.done()
        if slot not in self._damos:
            started = ", ".join(map(str, self._damos)) or "none"
            raise GuestdError("ENOENT", f"no damos with id {slot} was started by this daemon (started: {started})")
        return self._damos[slot]

    def _damos_report(self, damos: DamosRun) -> JsonObject:
        stats: dict[int, dict[str, int]] = {}
        for kdamond in damos.kdamonds:
            stats.update(zip(kdamond.indexes, self._damon.scheme_stats(kdamond.slot, len(kdamond.indexes)),
                             strict=True))
        running = all(self._damon.slots.running(kdamond.slot) for kdamond in damos.kdamonds)
        return {"id": damos.id, "running": running,
                "schemes": [{**scheme.describe(), "stats": stats[index]} for index, scheme in enumerate(damos.schemes)]}

    # Observing -------------------------------------------------------------------------------

    def observe(self, args: Args) -> JsonObject:
        pid = args.integer("pid", 1, MAX_PID)
        max_regions = args.integer("max_regions", 0, MAX_OBSERVED_REGIONS, default=MAX_OBSERVED_REGIONS)
        soft_dirty = args.boolean("soft_dirty", default=True)
        budget = args.integer("pagemap_budget_pages", 512, 1 << 24, default=DEFAULT_PAGEMAP_BUDGET)
        node_sampling = arguments.node_sampling(args)
        until_us = args.integer("damon_until_us", 0, MAX_MONOTONIC_US, default=None)
        since_us = args.integer("damon_since_us", 0, MAX_MONOTONIC_US, default=None)
        if since_us is not None and (until_us is None or since_us >= until_us):
            raise args.error("damon_since_us", "needs damon_until_us, and to be before it")
        ranges = [arguments.query_range(sub) for sub in args.subs("ranges")]
        args.done()
        began = time.perf_counter()
        process = Process(self._kernel, pid)
        user_s, system_s = process.cpu_seconds()
        result: JsonObject = {
            "pid": pid, "time": time.monotonic(), "cpu": {"user_s": user_s, "system_s": system_s},
            "affinity": process.affinity(), "threads": len(process.threads()),
            "resident_bytes": {str(node): size for node, size in sorted(process.resident_bytes().items())},
        }
        watch = self._watches.get(pid)
        result["damon"] = None if watch is None else self._damon_regions(
            process, watch, max_regions, soft_dirty, budget, node_sampling,
            None if until_us is None else until_us / 1e6, None if since_us is None else since_us / 1e6)
        result["ranges"] = [self._range_pages(process, query, soft_dirty, budget) for query in ranges]
        if soft_dirty:
            result["soft_dirty_since"] = self._soft_dirty_since.get(pid)
            process.clear_soft_dirty()
            self._soft_dirty_since[pid] = time.monotonic()
        result["cost_s"] = round(time.perf_counter() - began, 6)
        return result

    def _damon_regions(self, process: Process, watch: Watch, limit: int, soft_dirty: bool,
                       budget: int, node_sampling: NodeSampling | None, until: float | None,
                       since: float | None) -> JsonObject:
        snapshot = self._damon.snapshot(watch, until, since)
        regions = snapshot.regions[:limit] if snapshot else ()
        self._observation_count += 1
        self._observations[process.pid] = Observation(self._observation_count, regions)
        spans = [(region.start, region.end) for region in regions]
        rows = [[index, region.start, region.end, region.nr_accesses, region.age]
                for index, region in enumerate(regions)]
        columns = list(REGION_COLUMNS)
        if soft_dirty:
            columns += PAGE_COLUMNS
            for row, count in zip(rows, page_counts(process, spans, budget), strict=True):
                row += [count.resident, count.written]
        placements = None
        if node_sampling is not None:
            columns += NODE_COLUMNS
            sampled, placements = region_node_bytes(self._syscalls, process.pid, spans,
                                                    node_sampling.pages_per_region, node_sampling.budget_pages)
            for row, pages in zip(rows, sampled, strict=True):
                row.append(pages)
        return {
            "observation": self._observation_count, "source": watch.source,
            "running": self._damon.slots.running(watch.slot), "time": snapshot.time if snapshot else None,
            "total_regions": len(snapshot.regions) if snapshot else 0, "columns": columns, "regions": rows,
            "aggregations": snapshot.aggregations if snapshot else 0,
            "region_nodes": placements,
        }

    def _range_pages(self, process: Process, query: RangeQuery, soft_dirty: bool, budget: int) -> JsonObject:
        chunks = query_chunks(self._syscalls, process.pid, query)
        if soft_dirty:
            for piece, count in zip(chunks, page_counts(process, query.chunk_spans(), budget), strict=True):
                piece["written_pages"] = count.written
        area = query.area
        return {"start": area.start, "length": area.length, "chunk": query.chunk, "stride": query.stride,
                "chunks": chunks}

    # Acting ----------------------------------------------------------------------------------

    def migrate(self, args: Args) -> JsonObject:
        pid = args.integer("pid", 1, MAX_PID)
        node = args.integer("node", 0, MAX_NODE)
        budget = args.integer("budget_bytes", 1, MAX_ULONG)
        ranges = [arguments.address_range(sub) for sub in args.subs("ranges")]
        region_ids = args.integers("regions", 0, MAX_OBSERVED_REGIONS, default=[])
        observation = args.integer("observation", 1, MAX_ULONG, default=None)
        args.done()
        what = f"migrate pid {pid} to node {node}"
        if not ranges and not region_ids:
            raise invalid(f"{what}: give 'ranges' or 'regions' (ids from the last observe)")
        process = Process(self._kernel, pid)
        require_memory_node(self._kernel, node, what)
        # DAMON regions span the gaps between mappings, so a range is moved where it is
        # mapped; only a range with nothing mapped at all is an error.
        mappings = process.mappings()
        mapped: list[AddressRange] = []
        for index, area in enumerate(ranges):
            parts = mapped_parts(mappings, area.start, area.end)
            if not parts:
                raise GuestdError("EFAULT", f"{what}: ranges[{index}] {area.describe()} is not mapped at all")
            mapped += [AddressRange(low, high - low) for low, high in parts]
        unmapped = sum(area.length for area in ranges) - sum(area.length for area in mapped)
        areas = mapped + self._observed_regions(pid, region_ids, observation, what)
        free = node_free_bytes(self._kernel, node)
        if free < PAGE_SIZE:
            raise GuestdError("ENOSPC", f"{what}: node {node} has {free} bytes free")
        result = migrate(self._syscalls, pid, areas, node, min(budget, free) // PAGE_SIZE)
        return {**result, "unmapped_bytes": unmapped, "budget_clipped_to_free": free < budget}

    def _observed_regions(self, pid: int, ids: list[int], observation: int | None, what: str) -> list[AddressRange]:
        if not ids:
            return []
        last = self._observations.get(pid)
        if last is None:
            raise GuestdError("ENOENT", f"{what}: no observation of pid {pid} with DAMON regions yet; observe first")
        if observation is not None and observation != last.number:
            raise GuestdError("ESTALE", f"{what}: regions are from observation {observation}, "
                                        f"but the last observation of pid {pid} is {last.number}")
        unknown = [region for region in ids if region >= len(last.regions)]
        if unknown:
            raise invalid(f"{what}: region ids {unknown} not in observation {last.number} "
                          f"(it has {len(last.regions)} regions)")
        return [AddressRange(last.regions[i].start, last.regions[i].end - last.regions[i].start) for i in ids]

    def place(self, args: Args) -> JsonObject:
        pid = args.integer("pid", 1, MAX_PID)
        cpus = args.integers("cpus", 0, MAX_CPU, default=None)
        node = args.integer("node", 0, MAX_NODE, default=None)
        args.done()
        what = f"place pid {pid}"
        if (cpus is None) == (node is None):
            raise invalid(f"{what}: give exactly one of 'cpus' or 'node'")
        if node is not None:
            if node not in online_nodes(self._kernel):
                raise GuestdError("ENODEV", f"{what}: node {node} is not online")
            cpus = node_cpus(self._kernel, node)
        wanted = sorted(set(cpus or []))
        if not wanted:
            raise invalid(f"{what}: node {node} has no CPUs" if node is not None else f"{what}: 'cpus' is empty")
        online = set(parse_id_list(self._kernel.value("sys/devices/system/cpu/online")))
        if not set(wanted) <= online:
            raise invalid(f"{what}: cpus {wanted} are not all online (online: {format_id_list(online)})")
        process = Process(self._kernel, pid)
        previous = process.affinity()
        placed = 0
        for tid in process.threads():
            try:
                self._syscalls.set_affinity(tid, wanted)
                placed += 1
            except ProcessLookupError:
                continue  # a thread that exited meanwhile
        if not placed:
            raise process.gone()
        return {"pid": pid, "cpus": wanted, "threads": placed, "previous": previous}

    def run(self, args: Args) -> JsonObject:
        argv = args.texts("argv")
        stdin = args.text("stdin", default=None, allow_empty=True)
        cwd = args.text("cwd", default=None)
        env = args.text_map("env", default={})
        memory = args.sub("memory")
        cpus = tuple(args.integers("cpus", 0, MAX_CPU, default=[]))
        args.done()
        if not argv:
            raise invalid("run.argv: give the program and its arguments")
        placement = Placement(arguments.memory_option(memory) if memory else None, cpus)
        run, start_streaming = self._runs.start(argv, stdin, cwd, env, placement)
        self._after_reply.append(start_streaming)  # events must follow the reply that names the run
        return {"run": run.id, "pid": run.process.pid, "argv": run.argv}

    def kill(self, args: Args) -> JsonObject:
        run_id = args.integer("run", 1, MAX_UINT)
        name = args.text("signal", default="TERM")
        args.done()
        try:
            signum = signal.Signals[f"SIG{name.upper().removeprefix('SIG')}"]
        except KeyError:
            raise invalid(f"kill.signal: {name!r} is not a signal name (such as TERM, KILL, INT)") from None
        return self._runs.kill(run_id, signum)
