"""What one policy run needs of its VM and of the guest daemon, as protocols.

The orchestrator is handed a factory that makes a :class:`RunVm`; a real run
gets one from :func:`testbed.vms.up` (its guest is a
:class:`testbed.channel.client.GuestClient`), the loop's unit test a fake guest
that runs the workload on the host. Only the calls the loop makes are listed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Protocol

from testbed.channel.replies import (
    DamosInfo,
    MigrationResult,
    NodeInfo,
    ObserveReply,
    PlaceResult,
    ResidencyQuery,
    RunExit,
    RunOutput,
    Settled,
    TieringChange,
    Vmstat,
    WatchInfo,
)
from testbed.values import AddressRange, MemoryPolicy, Monitoring, Scheme, TieringSettings


class WorkloadRun(Protocol):
    """A program started in the guest."""

    pid: int
    exit: RunExit | None  # set once it has exited

    def output(self, timeout: float | None = ...) -> Iterator[RunOutput]: ...

    def kill(self, signal: str = ...) -> bool: ...


class Guest(Protocol):
    """The guest daemon's calls a run makes."""

    def nodes(self) -> list[NodeInfo]: ...

    def vmstat(self, everything: bool = ...) -> Vmstat: ...

    def tiering(self, settings: TieringSettings | None = ...) -> TieringChange: ...

    def settle(self, free_targets: dict[int, int] | None = ...) -> Settled: ...

    def damos(self, schemes: Sequence[Scheme], nodes: Sequence[int] | None = ...,
              monitoring: Monitoring | None = ...) -> DamosInfo: ...

    def run(self, argv: Sequence[str], *, stdin: str | None = ..., memory: MemoryPolicy | None = ...,
            cpus: Sequence[int] | None = ...) -> WorkloadRun: ...

    def watch(self, pid: int, monitoring: Monitoring | None = ...) -> WatchInfo: ...

    def observe(self, pid: int, *, ranges: Sequence[ResidencyQuery] = ..., soft_dirty: bool = ...,
                region_nodes: bool = ..., pagemap_budget_pages: int | None = ...,
                damon_until_us: int | None = ..., damon_since_us: int | None = ...) -> ObserveReply: ...

    def migrate(self, pid: int, node: int, budget_bytes: int, *, ranges: Sequence[AddressRange] = ...,
                timeout: float | None = ...) -> MigrationResult: ...

    def place(self, pid: int, *, cpus: Sequence[int] | None = ...) -> PlaceResult: ...


class RunVm(Protocol):
    """A VM a run uses and takes down."""

    def guest(self) -> AbstractContextManager[Guest]:
        """A channel to the guest daemon, closed when the block ends."""

    def alive(self) -> bool: ...

    def console_tail(self, lines: int = ...) -> str: ...

    def down(self) -> None: ...


VmFactory = Callable[[str], RunVm]  # the VM's name -> a VM booted and ready
