"""Where pages are and moving them: move_pages(2) in query mode and in move mode, in batches."""

from __future__ import annotations

import errno
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .process import PAGE_SIZE
from .protocol import GuestdError, JsonObject, from_os_error
from .syscalls import Syscalls

BATCH_PAGES = 1024  # one move_pages call: short enough to notice a process that exits mid-way


@dataclass(frozen=True)
class AddressRange:
    start: int
    length: int

    @property
    def end(self) -> int:
        return self.start + self.length

    def describe(self) -> str:
        return f"{self.start:#x}+{self.length:#x}"


def status_name(status: int) -> str:
    return errno.errorcode.get(-status, f"E{-status}")


def page_addresses(start: int, end: int, stride: int = 1) -> array[int]:
    """Page-aligned addresses covering [start, end), every ``stride``-th page."""
    first = start - start % PAGE_SIZE
    return array("Q", range(first, end, PAGE_SIZE * stride))


@dataclass(frozen=True)
class RangeQuery:
    """Where the pages of ``area`` are, per ``chunk`` bytes, sampling every ``stride``-th page."""

    area: AddressRange
    chunk: int
    stride: int

    def chunk_spans(self) -> list[tuple[int, int]]:
        start, end = self.area.start, self.area.end
        return [(start + offset, min(end, start + offset + self.chunk)) for offset in range(0, end - start, self.chunk)]


def query_chunks(syscalls: Syscalls, pid: int, query: RangeQuery) -> list[JsonObject]:
    """Per chunk: sampled pages on each node, and those not present by reason.

    A page is counted in the chunk its sampled address falls in; all chunks go in one call.
    """
    spans = query.chunk_spans()
    per_chunk = [page_addresses(start, end, query.stride) for start, end in spans]
    addresses = array("Q")
    for chunk_addresses in per_chunk:
        addresses += chunk_addresses
    statuses = _query(syscalls, pid, addresses)
    chunks = []
    position = 0
    for (start, _), chunk_addresses in zip(spans, per_chunk, strict=True):
        counts = Counter(statuses[position:position + len(chunk_addresses)])
        position += len(chunk_addresses)
        chunks.append({
            "offset": start - query.area.start,
            "nodes": {str(status): count for status, count in sorted(counts.items()) if status >= 0},
            "absent": {status_name(status): count for status, count in sorted(counts.items()) if status < 0},
        })
    return chunks


def _query(syscalls: Syscalls, pid: int, addresses: array[int]) -> Sequence[int]:
    try:
        return syscalls.move_pages(pid, addresses, None)
    except ProcessLookupError:
        raise GuestdError("ESRCH", f"pid {pid}: no such process") from None
    except OSError as error:
        raise from_os_error(error, f"move_pages query of pid {pid}") from None


@dataclass
class MigrationTally:
    """What a migration did, page by page."""

    moved: int = 0
    already_on_node: int = 0
    not_present: int = 0
    process_exited: bool = False
    failed: Counter[str] = field(default_factory=Counter)


def _batches(areas: Sequence[AddressRange]) -> Iterator[array[int]]:
    for area in areas:
        addresses = range(area.start - area.start % PAGE_SIZE, area.end, PAGE_SIZE)
        for index in range(0, len(addresses), BATCH_PAGES):
            yield array("Q", addresses[index:index + BATCH_PAGES])


def migrate(syscalls: Syscalls, pid: int, areas: Sequence[AddressRange], node: int, budget_pages: int) -> JsonObject:
    """Move pages of ``areas`` to ``node``, in order, until ``budget_pages`` have been asked to move.

    Each batch is queried first so pages already on ``node`` or not present
    cost no budget; a process that exits part way ends the migration early.
    """
    tally = MigrationTally()
    began = time.monotonic()
    remaining = budget_pages
    for batch in _batches(areas):
        if remaining <= 0:
            break
        try:
            statuses = syscalls.move_pages(pid, batch, None)
            movable = array("Q", (address for address, status in zip(batch, statuses, strict=True)
                                  if status >= 0 and status != node))
            tally.already_on_node += sum(1 for status in statuses if status == node)
            tally.not_present += sum(1 for status in statuses if status < 0)
            movable = movable[:remaining]
            if movable:
                remaining -= len(movable)
                _tally_moves(tally, syscalls.move_pages(pid, movable, node), node)
        except ProcessLookupError:
            tally.process_exited = True
            break
        except OSError as error:
            raise from_os_error(error, f"migrate pid {pid} to node {node}") from None
    return {
        "pid": pid,
        "node": node,
        "moved_pages": tally.moved,
        "moved_bytes": tally.moved * PAGE_SIZE,
        "already_on_node": tally.already_on_node,
        "not_present": tally.not_present,
        "failed": dict(sorted(tally.failed.items())),
        "budget_exhausted": remaining <= 0,
        "process_exited": tally.process_exited,
        "seconds": round(time.monotonic() - began, 6),
    }


def _tally_moves(tally: MigrationTally, statuses: Sequence[int], node: int) -> None:
    for status in statuses:
        if status == node:
            tally.moved += 1
        else:
            # A page that stayed on another node without an error still counts as not moved.
            tally.failed[status_name(status) if status < 0 else "UNMOVED"] += 1
