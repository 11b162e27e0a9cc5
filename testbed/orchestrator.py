"""One policy run: boot the machine, start the workload, then each interval
observe, decide, validate, act and record.

Every policy runs under the same rules: the guest starts from one declared
kernel state (START_STATE; a policy changes only what its setup declares, and
every setting is read back into the start record; the page cache is dropped
before the workload starts), a policy is told only what
an OS could know (the administrator's texts, HMAT, what guestd observes, and
the program's notes on its buffers when the experiment enables them; never the
experiment's or the workload's narrative; a text-blind twin not even the
texts), and every move, the initial placement included, is held to the same
per-interval budget. The workload waits at every epoch boundary until the loop
has observed and acted (memtouch's barrier), so each epoch's accesses meet one
known placement however fast the host is.

The run is written to its timeline as it goes. Whatever ends it — the workload
finishing, the VM dying, the channel dropping, the policy raising, Ctrl-C — the
timeline gets an ``end`` record saying so, and the VM is taken down.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from policies.base import Policy
from testbed.channel.errors import GuestdFailure, GuestError
from testbed.channel.replies import NodeInfo, ObserveReply, ResidencyQuery, RunExit, Settled
from testbed.errors import ResultsUnwritable, UserError
from testbed.experiment import Experiment
from testbed.memtouch import (
    BARRIER_FLAG,
    RELEASE_SIGNAL,
    EpochCounts,
    GroundTruth,
    OutputReader,
    RegionLayout,
    memtouch_input,
)
from testbed.model import PAGE_SIZE
from testbed.run_vm import Guest, RunVm, VmFactory, WorkloadRun
from testbed.timeline import (
    ActionRecord,
    ActionType,
    Applied,
    Decision,
    EpochRecord,
    NodeState,
    Outcome,
    Rejected,
    RunEnd,
    RunStart,
    RunStatus,
    TimelineWriter,
)
from testbed.units import MIB
from testbed.validate import validate
from testbed.values import (
    Action,
    AddressRange,
    BufferRange,
    Migrate,
    NodeView,
    Observation,
    Place,
    PolicyContext,
    RegionHint,
    RegionView,
    Setup,
    TieringSettings,
)

MEMTOUCH = "/opt/llamas/bin/memtouch"
# Slack on top of the interval before a silent workload counts as stuck.
EPOCH_SLACK_S = 60.0
# Seconds memtouch may take to map and first-touch its regions under TCG (~100 MiB/s).
SETUP_TIMEOUT_S = 600.0
# Residency is sampled: asking where every page of a GiB is costs ~3 s under TCG,
# more than an interval; 32 pages per chunk give each chunk's split to ~3%.
SAMPLES_PER_CHUNK = 32
PAGEMAP_BUDGET_PAGES = 65536  # soft-dirty bits read per observation (larger regions are sampled)
Progress = Callable[[str], None]
# Every run starts from this guest state. The kernel places no pages of its own accord unless a policy's setup
# says so (kernel-tiering turns NUMA balancing and demotion on): a fresh guest boots with numa_balancing=1, which
# would pull pages toward the CPU that touches them under every policy that does not switch it off. No
# transparent huge pages: pages are counted, sampled and moved 4 KiB at a time for every policy. No zone reclaim:
# an allocation that does not fit on its node goes to the next one, as first touch assumes.
START_STATE = TieringSettings(numa_balancing=0, demotion_enabled=False, transparent_hugepage="never",
                              zone_reclaim_mode=0)
# And with the same free memory: each memory node starts with its total less this much free, the guest daemon
# holding the rest. Before a workload the kernel and the guest's daemons use 56-67 MiB of node 0 and 60-71 MiB
# of a CXL node on these machines, varying from run to run, which moved first-touch placements, and scores, by
# several percent.
START_RESERVE = 96 * MIB
# A node this much short of its start free memory gets a note in the run's start record. Between the settle and
# the workload's start the kernel's own use still moves by a few MiB (2-7 MiB seen), which every run has alike.
START_SHORT_NOTE = 16 * MIB


class RunFailed(UserError):
    pass


@dataclass
class _RunState:
    """What the loop carries from one interval to the next."""

    pid: int
    layout: tuple[RegionLayout, ...]
    vmstat: dict[str, int]
    buffers: tuple[BufferRange, ...]  # where the hinted buffers lie, for every observation
    pending: concurrent.futures.Future[list[Action]] | None = None  # a late decision still running


@dataclass(frozen=True)
class _Proposal:
    actions: list[Action]
    seconds: float
    late: bool


def run_policy(experiment: Experiment, policy: Policy, repeat: int, out: Path, progress: Progress,
               boot: VmFactory, barrier: bool = True) -> RunEnd:
    """Run ``policy`` once in a VM made by ``boot`` and record it in ``out/timeline.jsonl``;
    returns how it ended. The VM is taken down whatever happens. ``barrier=False`` lets the workload run
    free of the loop, as it did before the barrier (only benchmarks/spread.py does, to measure the difference)."""
    with contextlib.ExitStack() as cleanup:  # whatever happens: the VM down, then the timeline closed
        writer = TimelineWriter(out / "timeline.jsonl")
        cleanup.callback(writer.close)
        epochs = 0
        end: RunEnd | None = RunEnd(RunStatus.FAILED, "interrupted", 0)
        vm: RunVm | None = None
        try:
            vm = boot(_vm_name(experiment, policy, repeat))
            cleanup.callback(vm.down)
            with vm.guest() as guest, concurrent.futures.ThreadPoolExecutor(1) as decider:
                run = _Run(experiment, policy, guest, decider, writer, progress, barrier)
                for record in run.intervals(repeat, out):
                    epochs = record.epoch + 1
            end = RunEnd(RunStatus.OK, None, epochs, policy.usage())
        except KeyboardInterrupt:
            end = RunEnd(RunStatus.FAILED, "interrupted (Ctrl-C)", epochs, policy.usage())
            raise
        except ResultsUnwritable:  # a full disk: nothing more can be recorded, so the experiment stops
            end = None
            raise
        except (GuestdFailure, UserError, OSError) as error:
            end = RunEnd(RunStatus.FAILED, _reason(error, vm), epochs, policy.usage())
        except Exception as error:  # a policy's own bug ends its run, not the experiment
            end = RunEnd(RunStatus.FAILED, f"{type(error).__name__}: {error}", epochs, policy.usage())
        finally:
            if end is not None:
                writer.write(end)
        return end


def _vm_name(experiment: Experiment, policy: Policy, repeat: int) -> str:
    return f"{experiment.name}-{policy.name}-r{repeat}"


def _reason(error: BaseException, vm: RunVm | None) -> str:
    """The error, and when the VM itself died, the end of its console."""
    if vm is not None and not vm.alive():
        return f"the VM stopped ({error}); console tail:\n{vm.console_tail(10)}"
    return str(error)


class _Run:
    """The loop of one policy run, with what it needs close at hand."""

    def __init__(self, experiment: Experiment, policy: Policy, guest: Guest,
                 decider: concurrent.futures.ThreadPoolExecutor, writer: TimelineWriter, progress: Progress,
                 barrier: bool) -> None:
        self.experiment = experiment
        self.policy = policy
        self.guest = guest
        self.decider = decider
        self.writer = writer
        self.progress = progress
        self.barrier = barrier

    def intervals(self, repeat: int, out: Path) -> Iterator[EpochRecord]:
        experiment, guest = self.experiment, self.guest
        nodes = guest.nodes()
        guest.tiering(START_STATE)
        setup = self.policy.setup(_context(experiment, nodes, out, text_blind=self.policy.text_blind))
        if setup.tiering is not None:
            guest.tiering(setup.tiering)
        kernel = _settings(guest.tiering().current)
        if setup.damos:
            guest.damos(setup.damos)
        # The workload first-touches free memory, not memory the kernel must reclaim as it goes, and as much of it
        # in every run.
        targets = {node.id: node.total_bytes - START_RESERVE for node in nodes if node.total_bytes > START_RESERVE}
        settled = guest.settle(targets)
        notes = tuple(f"node {node} started {(target - settled.free_after[node]) / MIB:.0f} MiB short of its "
                      f"start free memory ({target / MIB:.0f} MiB)" for node, target in targets.items()
                      if target - settled.free_after.get(node, target) >= START_SHORT_NOTE)
        # --linger: the workload's memory stays mapped after its last interval, for the last observation.
        # --barrier: it waits before epoch 0 and after each epoch but the last until released.
        started = guest.vmstat().counters
        run = guest.run([MEMTOUCH, "--linger", *([BARRIER_FLAG] if self.barrier else []), "-"],
                        stdin=memtouch_input(experiment.workload),
                        memory=setup.memory, cpus=nodes[0].cpus)  # the score prices accesses from socket 0
        reader = OutputReader()

        def why_it_ended() -> str:
            return _exit_text(run, guest, started)
        truth = _first_touch(run, reader, why_it_ended)
        touched = {node.id: node.free_bytes for node in guest.nodes()}  # before anything else moves a page
        guest.watch(run.pid, experiment.damon)
        hinted = {hint.name for hint in _hints(experiment)}
        state = _RunState(run.pid, truth.regions, guest.vmstat().counters,
                          tuple(BufferRange(r.name, r.address, r.address + r.size) for r in truth.regions
                                if r.name in hinted))
        self.writer.write(self._start(repeat, state, setup, kernel, settled, touched, notes))
        if setup.placement:  # an initial placement is held to the per-interval budget like every move
            _, observation = self._observe(state, 0, {})
            self._act(state, _placement_moves(setup.placement, state.layout), observation)
        self._release(run)  # epoch 0 begins
        timeout = experiment.interval_s + EPOCH_SLACK_S
        while (epoch := _next_epoch(run, reader, timeout, why_it_ended)) is not None:
            record = self._interval(state, epoch)
            self.writer.write(record)
            self.progress(_progress_line(self.policy, experiment, record))
            if epoch.epoch + 1 < experiment.workload.epochs:  # memtouch passes the last boundary unheld
                self._release(run)
            yield record
        run.kill()

    def _release(self, run: WorkloadRun) -> None:
        if self.barrier:
            run.kill(RELEASE_SIGNAL)

    def _start(self, repeat: int, state: _RunState, setup: Setup, kernel: dict[str, str], settled: Settled,
               touched: dict[int, int], notes: tuple[str, ...]) -> RunStart:
        resident = self.guest.observe(state.pid, soft_dirty=False).resident_bytes
        nodes = tuple(NodeState(n.id, n.total_bytes, n.free_bytes, resident.get(n.id, 0), settled.held.get(n.id, 0),
                                settled.free_after.get(n.id), touched.get(n.id))
                      for n in self.guest.nodes())
        return RunStart(policy=self.policy.name, kind=str(self.policy.kind), repeat=repeat,
                        interval_s=self.experiment.interval_s, page_size=PAGE_SIZE, regions=state.layout,
                        nodes=nodes, notes=(*setup.notes, *notes), kernel=kernel, barrier=self.barrier)

    def _interval(self, state: _RunState, epoch: EpochCounts) -> EpochRecord:
        vmstat = self.guest.vmstat().counters
        delta = {name: value - state.vmstat.get(name, 0) for name, value in vmstat.items()}
        state.vmstat = vmstat
        raw, observation = self._observe(state, epoch.epoch, delta, window_us=(epoch.start_us, epoch.end_us))
        proposal = self._decide(state, observation)
        applied, rejected = self._act(state, proposal.actions, observation) if proposal.actions else ((), ())
        return EpochRecord(
            epoch=epoch.epoch, phase=epoch.phase, late=epoch.late,
            reads=tuple(tuple(int(v) for v in counts) for counts in epoch.reads),
            writes=tuple(tuple(int(v) for v in counts) for counts in epoch.writes),
            residency=tuple(tuple(dict(chunk.nodes) for chunk in area.chunks) for area in raw.ranges),
            migrated_bytes=delta.get("pgmigrate_success", 0) * PAGE_SIZE, observe_seconds=raw.cost_s,
            regions_seen=len(observation.regions),
            decision=Decision(applied, rejected, proposal.seconds, proposal.late),
            observation=observation_summary(observation), wait_s=epoch.wait_us / 1e6,
        )

    def _observe(self, state: _RunState, epoch: int, vmstat_delta: dict[str, int],
                 window_us: tuple[int, int] | None = None) -> tuple[ObserveReply, Observation]:
        """What the policy sees; DAMON's view is the mean of the aggregations that ended within ``window_us``
        (the epoch), not one of memory left idle while the workload waits for the loop, nor one 20-sample
        draw of each region's accesses."""
        since_us, until_us = window_us or (None, None)
        ranges = [ResidencyQuery(region.address, region.size, region.chunk, _stride(region.chunk))
                  for region in state.layout]
        raw = self.guest.observe(state.pid, ranges=ranges, region_nodes=True,
                                 pagemap_budget_pages=PAGEMAP_BUDGET_PAGES, damon_until_us=until_us,
                                 damon_since_us=since_us)
        monitoring = self.experiment.damon
        samples = max(1, monitoring.aggr_us // monitoring.sample_us)
        regions = tuple(RegionView(
            id=region.id, start=region.start, end=region.end, access_rate=min(1.0, region.nr_accesses / samples),
            age=region.age, written_fraction=(region.written_pages / region.resident_pages
                                              if region.written_pages is not None and region.resident_pages else None),
            nodes=dict(region.nodes or {})) for region in (raw.damon.regions if raw.damon else ()))
        observation = Observation(epoch=epoch, time=raw.time, interval_s=self.experiment.interval_s,
                                  nodes=tuple(_node_view(node) for node in self.guest.nodes()), regions=regions,
                                  resident=dict(raw.resident_bytes), vmstat_delta=vmstat_delta,
                                  buffers=_buffer_residency(state, raw))
        return raw, observation

    def _decide(self, state: _RunState, observation: Observation) -> _Proposal:
        """The policy's actions if it answers within the deadline; a late policy is skipped until it answers."""
        if state.pending is not None and not state.pending.done():
            return _Proposal([], 0.0, late=True)
        started = time.monotonic()
        state.pending = self.decider.submit(self.policy.decide, observation)
        try:
            actions = state.pending.result(timeout=self.experiment.decision_deadline_s)
        except concurrent.futures.TimeoutError:
            return _Proposal([], time.monotonic() - started, late=True)
        state.pending = None
        return _Proposal(list(actions), time.monotonic() - started, late=False)

    def _act(self, state: _RunState, actions: list[Action], observation: Observation
             ) -> tuple[tuple[Applied, ...], tuple[Rejected, ...]]:
        """Validate, then apply in order; the guest gets the budget actually left, since the validator's
        estimate comes from sampled residency."""
        budget = self.experiment.migration_budget
        verdict = validate(actions, observation, budget)
        applied: list[Applied] = []
        rejected = [Rejected(_record(action), reason) for action, reason in verdict.rejected]
        for action in verdict.accepted:
            if isinstance(action, Migrate) and budget < PAGE_SIZE:
                rejected.append(Rejected(_record(action), "over budget: earlier moves used it up"))
                continue
            try:
                outcome = self._apply(state, action, budget)
            except GuestError as error:  # the guest refused (nothing mapped, node full): recorded, not fatal
                rejected.append(Rejected(_record(action), f"guest: {error}"))
                continue
            budget -= outcome.moved_bytes
            applied.append(Applied(_record(action), outcome))
        return tuple(applied), tuple(rejected)

    def _apply(self, state: _RunState, action: Action, budget: int) -> Outcome:
        if isinstance(action, Place):
            placed = self.guest.place(state.pid, cpus=action.cpus)
            return Outcome(threads=placed.threads)
        # Migration under TCG runs at ~60 MiB/s, far slower onto emulated CXL devices.
        result = self.guest.migrate(state.pid, action.node, min(action.size, budget),
                                    ranges=[AddressRange(action.start, action.size)],
                                    timeout=max(60.0, action.size / MIB))
        return Outcome(moved_bytes=result.moved_bytes, moved_pages=result.moved_pages,
                       already_on_node=result.already_on_node, failed=result.failed, seconds=result.seconds)


def observation_summary(observation: Observation) -> dict[str, Any]:
    """What a policy saw, compactly: free bytes per node, and per DAMON region
    [start, end, access rate, age, written fraction, {node: resident bytes}]."""
    return {"free": {str(node.id): node.free_bytes for node in observation.nodes},
            "regions": [[r.start, r.end, round(r.access_rate, 4), r.age,
                         None if r.written_fraction is None else round(r.written_fraction, 4),
                         {str(node): size for node, size in r.nodes.items()}] for r in observation.regions]}


def _buffer_residency(state: _RunState, raw: ObserveReply) -> tuple[BufferRange, ...]:
    """The hinted buffers with their sampled residency (the observation's range queries are the layout's)."""
    areas = {region.name: area for region, area in zip(state.layout, raw.ranges, strict=True)}
    buffers = []
    for buffer in state.buffers:
        pages: dict[int, int] = {}
        for chunk in areas[buffer.name].chunks:
            for node, count in chunk.nodes.items():
                pages[node] = pages.get(node, 0) + count
        sampled = sum(pages.values())
        size = buffer.end - buffer.start
        # A buffer none of whose pages were sampled says nothing of where it is (the score lists such chunks).
        buffers.append(replace(buffer, nodes={node: size * count // sampled for node, count in pages.items()}
                               if sampled else {}))
    return tuple(buffers)


def _hints(experiment: Experiment) -> tuple[RegionHint, ...]:
    """The program's notes on its buffers, when the experiment gives them (to every policy)."""
    return tuple(RegionHint(region.name, region.size, region.description)
                 for region in experiment.workload.regions if region.description) if experiment.hints else ()


def _context(experiment: Experiment, nodes: list[NodeInfo], out: Path, text_blind: bool) -> PolicyContext:
    """What the policy may know; a text-blind twin gets no device or system text (HMAT is in ``nodes``)."""
    system = experiment.system
    return PolicyContext(
        system_description="" if text_blind else system.description,
        device_descriptions={} if text_blind else {node.id: node.device.description for node in system.nodes},
        nodes=tuple(_node_view(node) for node in nodes),
        interval_s=experiment.interval_s,
        migration_budget=experiment.migration_budget,
        damon_sample_s=experiment.damon.sample_us / 1e6,
        hints=_hints(experiment),
        run_dir=out,
        decision_deadline_s=experiment.decision_deadline_s,
    )


def _settings(current: TieringSettings) -> dict[str, str]:
    """The kernel settings as read back, as the start record keeps them (a setting the kernel lacks is left out)."""
    return {name: (str(value).lower() if isinstance(value, bool) else str(value))
            for name, value in asdict(current).items() if value is not None}


def _node_view(node: NodeInfo) -> NodeView:
    hmat = node.hmat

    def bandwidth(mbps: int | None) -> float | None:
        return None if mbps is None else mbps * float(MIB)  # the guest's "MB/s" are MiB/s (see testbed/hmat.py)

    return NodeView(id=node.id, total_bytes=node.total_bytes, free_bytes=node.free_bytes, cpus=node.cpus,
                    tier=node.tier,
                    read_latency_ns=hmat.read_latency_ns if hmat else None,
                    write_latency_ns=hmat.write_latency_ns if hmat else None,
                    read_bandwidth=bandwidth(hmat.read_bandwidth_mbps) if hmat else None,
                    write_bandwidth=bandwidth(hmat.write_bandwidth_mbps) if hmat else None)


def _placement_moves(placement: dict[str, int], layout: tuple[RegionLayout, ...]) -> list[Action]:
    by_name = {region.name: region for region in layout}
    return [Migrate(by_name[name].address, by_name[name].address + by_name[name].size, node, "initial placement")
            for name, node in placement.items() if name in by_name]


def _first_touch(run: WorkloadRun, reader: OutputReader, why_it_ended: Callable[[], str]) -> GroundTruth:
    """Wait for memtouch's regions line: it prints it once every page has been touched."""
    for event in run.output(timeout=SETUP_TIMEOUT_S):
        if event.stream == "stdout":
            reader.feed(event.line)
            return reader.result()
    raise RunFailed(f"the workload exited before mapping its memory: {why_it_ended()}")


def _next_epoch(run: WorkloadRun, reader: OutputReader, timeout: float, why_it_ended: Callable[[], str]
                ) -> EpochCounts | None:
    """The workload's next interval of ground truth; None once it has reported them all."""
    for event in run.output(timeout=timeout):
        if event.stream == "stderr":
            continue
        epoch = reader.feed(event.line)
        if epoch is not None:
            return epoch
        if reader.finished:
            return None
    raise RunFailed(f"the workload ended before reporting all its intervals: {why_it_ended()}")


def _exit_text(run: WorkloadRun, guest: Guest, counters_at_start: dict[str, int]) -> str:
    """How the workload ended; a SIGKILL the guest kernel's OOM killer sent (its vmstat count rose) says so."""
    exit_event: RunExit | None = run.exit
    if exit_event is None:
        return "no exit status"
    if not exit_event.signal:
        return f"exit code {exit_event.code}"
    if exit_event.signal == "SIGKILL":
        kills = guest.vmstat().counters.get("oom_kill", 0) - counters_at_start.get("oom_kill", 0)
        if kills > 0:
            return f"killed by the guest kernel's OOM killer (SIGKILL; oom_kill in /proc/vmstat rose by {kills})"
    return f"signal {exit_event.signal}"


def _stride(chunk: int) -> int:
    return max(1, chunk // PAGE_SIZE // SAMPLES_PER_CHUNK)


def _record(action: Action) -> ActionRecord:
    if isinstance(action, Place):
        return ActionRecord(ActionType.PLACE, action.reason, cpus=action.cpus)
    return ActionRecord(ActionType.MIGRATE, action.reason, start=action.start, end=action.end, node=action.node)


def _progress_line(policy: Policy, experiment: Experiment, record: EpochRecord) -> str:
    decision = record.decision
    moved = sum(a.outcome.moved_bytes for a in decision.actions) if decision else 0
    rejected = len(decision.rejected) if decision else 0
    late = " late" if decision and decision.late else ""
    return (f"[{policy.name}] interval {record.epoch + 1}/{experiment.workload.epochs}: moved {moved / MIB:.0f} MiB, "
            f"{rejected} rejected{late}")
