"""Where pages are and moving them: move_pages(2) in query mode and in move mode, in batches."""

from __future__ import annotations

import errno
import math
import time
from array import array
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from .process import PAGE_SIZE
from .protocol import GuestdError, JsonObject, from_os_error
from .syscalls import Syscalls

# Pages per move_pages call. Each moving call starts with lru_cache_disable() (an expedited RCU
# grace period and an LRU drain on every CPU), which under emulation costs as much as moving a
# few MiB: under TCG 256 MiB took 2.8 s in batches of 1024 pages, 1.85 s in batches of 16384, as
# fast as migratepages. A 64 MiB batch still ends soon enough to notice a process that exits.
BATCH_PAGES = 1 << 14


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


def unaliased_stride(stride: int) -> int:
    """The smallest page stride at least ``stride`` that shares no factor with 30.

    Interleaving puts page k on node k mod N (the sum of the weights, weighted), so a
    stride with a factor in common with N samples only some of the nodes: every 16th
    page of a two-node interleave is on one node. Strides coprime with 2, 3 and 5 see
    every node of an interleave over up to 6 nodes.
    """
    return next(candidate for candidate in range(stride, stride + 30) if math.gcd(candidate, 30) == 1)


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
    counts = _status_counts(syscalls, pid, [page_addresses(start, end, query.stride) for start, end in spans])
    return [{
        "offset": start - query.area.start,
        "nodes": {str(status): count for status, count in sorted(chunk.items()) if status >= 0},
        "absent": {status_name(status): count for status, count in sorted(chunk.items()) if status < 0},
    } for (start, _), chunk in zip(spans, counts, strict=True)]


def region_node_bytes(syscalls: Syscalls, pid: int, regions: Sequence[tuple[int, int]], pages_per_region: int,
                      budget_pages: int) -> tuple[list[int], list[JsonObject]]:
    """Per region, the pages sampled and its bytes on each node estimated from them (``{"<node>": bytes}``).

    Each region gets at most ``pages_per_region`` samples, fewer when the regions
    together would pass ``budget_pages``; the samples are spread evenly over it
    (a fixed page stride, so the addresses come from ``range`` without per-page
    Python work). One move_pages query covers every region.
    """
    cap = max(1, min(pages_per_region, budget_pages // max(1, len(regions))))
    samples = [spread_pages(start, end, cap) for start, end in regions]
    placements = []
    for (start, end), sampled, counts in zip(regions, samples, _status_counts(syscalls, pid, samples), strict=True):
        pages_per_sample = -(-(end - start) // PAGE_SIZE) / len(sampled)  # counts is empty if sampled is
        placements.append({str(node): round(count * pages_per_sample) * PAGE_SIZE
                           for node, count in counts.items() if node >= 0})
    return [len(sampled) for sampled in samples], placements


def spread_pages(start: int, end: int, count: int) -> range:
    """At most ``count`` page addresses spread evenly over [start, end), each in the middle of its share
    (an unaliased stride: fewer samples, down to 2/7 of ``count``, rather than a biased few)."""
    base = start - start % PAGE_SIZE
    pages = max(1, -(-(end - base) // PAGE_SIZE))
    stride = unaliased_stride(-(-pages // count))
    return range(base + min(stride, pages) // 2 * PAGE_SIZE, end, stride * PAGE_SIZE)


def _status_counts(syscalls: Syscalls, pid: int, groups: Sequence[Sequence[int]]) -> list[dict[int, int]]:
    """How many pages of each group are on each node (or absent, by negative errno): one query for all.

    Counted with C-level ``count`` calls, not per page: once for a group wholly on one
    node (the usual case), else once per status seen (a few nodes and errnos).
    """
    addresses = array("Q")
    for group in groups:
        addresses.extend(group)
    statuses = _query(syscalls, pid, addresses) if addresses else ()
    seen = sorted(set(statuses))
    counts = []
    position = 0
    for group in groups:
        size = len(group)
        part = statuses[position:position + size]
        position += size
        if size and part.count(part[0]) == size:
            counts.append({part[0]: size})
        else:
            counts.append({status: count for status in seen if (count := part.count(status))})
    return counts


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
            movable = _movable(batch, syscalls.move_pages(pid, batch, None), node, tally)[:remaining]
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


def _movable(batch: array[int], statuses: Sequence[int], node: int, tally: MigrationTally) -> array[int]:
    """The pages of ``batch`` present on other nodes; those on ``node`` or absent are counted.

    A batch wholly on one node (the usual case) is decided with a few C-level
    counts: under emulation a Python loop over every page costs as much as moving it.
    """
    on_node = statuses.count(node)
    present = sum(statuses.count(status) for status in set(statuses) if status >= 0)
    tally.already_on_node += on_node
    tally.not_present += len(statuses) - present
    if present - on_node == len(batch):
        return batch
    if present == on_node:
        return array("Q")
    return array("Q", (address for address, status in zip(batch, statuses, strict=True)
                       if status >= 0 and status != node))


def _tally_moves(tally: MigrationTally, statuses: Sequence[int], node: int) -> None:
    moved = statuses.count(node)
    tally.moved += moved
    if moved < len(statuses):
        for status in statuses:
            if status != node:
                # A page that stayed on another node without an error still counts as not moved.
                tally.failed[status_name(status) if status < 0 else "UNMOVED"] += 1
