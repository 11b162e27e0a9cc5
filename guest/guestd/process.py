"""One process as procfs shows it: CPU time, affinity, per-node residency, mappings, soft-dirty bits."""

from __future__ import annotations

import mmap
import os
from collections.abc import Iterator, Sequence
from typing import NamedTuple

from .kernel import Kernel, parse_id_list
from .protocol import GuestdError

PAGE_SIZE = mmap.PAGESIZE
PAGEMAP_ENTRY = 8
# pagemap entry bits (Documentation/admin-guide/mm/pagemap.rst): 55 soft-dirty, 62 swapped, 63 present.
# Only the top two bytes matter, so counting is done on byte slices without decoding entries.
_SOFT_DIRTY_BYTE, _SOFT_DIRTY_MASK = 6, 0x80
_RESIDENT_BYTE, _RESIDENT_MASK = 7, 0xC0
_SOFT_DIRTY_FLAG = bytes(int(bool(value & _SOFT_DIRTY_MASK)) for value in range(256))  # byte -> 0 or 1
_RESIDENT_FLAG = bytes(int(bool(value & _RESIDENT_MASK)) for value in range(256))
CLEAR_SOFT_DIRTY = "4"  # /proc/PID/clear_refs: clear the soft-dirty bits of every page
SAMPLE_BLOCK_PAGES = 512  # a sampled stretch: one 4 KiB pagemap read, 2 MiB of address space
MAX_READ_PAGES = 1 << 18  # merged pagemap reads stay under 2 MiB


class Process:
    """Files under ``/proc/PID``; a process that is gone (or goes) is ESRCH naming the pid."""

    def __init__(self, kernel: Kernel, pid: int) -> None:
        self.kernel = kernel
        self.pid = pid
        if not kernel.exists(f"proc/{pid}"):
            raise self.gone()

    def gone(self) -> GuestdError:
        return GuestdError("ESRCH", f"pid {self.pid}: no such process")

    def path(self, name: str) -> str:
        return f"proc/{self.pid}/{name}"

    def read(self, name: str) -> str:
        try:
            return self.kernel.read(self.path(name))
        except (FileNotFoundError, ProcessLookupError):
            raise self.gone() from None

    def cpu_seconds(self) -> tuple[float, float]:
        """User and system CPU time of the whole process."""
        # Fields after the command name, which may itself hold spaces and parentheses.
        fields = self.read("stat").rpartition(")")[2].split()
        ticks = os.sysconf("SC_CLK_TCK")
        return int(fields[11]) / ticks, int(fields[12]) / ticks

    def status(self) -> dict[str, str]:
        return {key: value.strip() for key, _, value in
                (line.partition(":") for line in self.read("status").splitlines())}

    def affinity(self) -> list[int]:
        return parse_id_list(self.status().get("Cpus_allowed_list", ""))

    def threads(self) -> list[int]:
        try:
            return [int(name) for name in self.kernel.listdir(self.path("task")) if name.isdigit()]
        except FileNotFoundError:
            raise self.gone() from None

    def resident_bytes(self) -> dict[int, int]:
        """Bytes on each node, summed over ``numa_maps`` (counts are in each mapping's page size)."""
        per_node: dict[int, int] = {}
        for line in self.read("numa_maps").splitlines():
            counts: list[tuple[int, int]] = []
            page_bytes = PAGE_SIZE
            for token in line.split()[2:]:
                key, _, value = token.partition("=")
                if key == "kernelpagesize_kB":
                    page_bytes = int(value) * 1024
                elif key[:1] == "N" and key[1:].isdigit() and value.isdigit():
                    counts.append((int(key[1:]), int(value)))
            for node, pages in counts:
                per_node[node] = per_node.get(node, 0) + pages * page_bytes
        return per_node

    def mappings(self) -> list[tuple[int, int]]:
        """Mapped address ranges from ``maps``, in address order."""
        ranges = []
        for line in self.read("maps").splitlines():
            start, _, end = line.partition(" ")[0].partition("-")
            ranges.append((int(start, 16), int(end, 16)))
        return ranges

    def clear_soft_dirty(self) -> None:
        try:
            self.kernel.write(self.path("clear_refs"), CLEAR_SOFT_DIRTY)
        except (FileNotFoundError, ProcessLookupError):
            raise self.gone() from None

    def pagemap(self, first_page: int, pages: int) -> bytes:
        try:
            return self.kernel.read_bytes(self.path("pagemap"), first_page * PAGEMAP_ENTRY, pages * PAGEMAP_ENTRY)
        except (FileNotFoundError, ProcessLookupError):
            raise self.gone() from None


def mapped_parts(mappings: Sequence[tuple[int, int]], start: int, end: int) -> list[tuple[int, int]]:
    """The parts of [start, end) that mappings cover, in address order."""
    return [(max(low, start), min(high, end)) for low, high in mappings if low < end and start < high]


class PageCounts(NamedTuple):
    """Pages of one region, estimated from the sampled pagemap entries."""

    resident: int
    written: int


class _Block(NamedTuple):
    """A stretch of one region's pages to read from pagemap (a tuple: there are many)."""

    region: int
    first_page: int
    pages: int


def _sample_blocks(regions: Sequence[tuple[int, int]], cap: int) -> list[_Block]:
    """Each region whole if it fits in ``cap`` pages, else as evenly spread 512-page stretches."""
    blocks = []
    for index, (start, end) in enumerate(regions):
        first_page, pages = start // PAGE_SIZE, max(1, (end - start) // PAGE_SIZE)
        if pages <= cap:
            blocks.append(_Block(index, first_page, pages))
            continue
        count = max(1, cap // SAMPLE_BLOCK_PAGES)
        step = pages // count
        blocks += [_Block(index, first_page + n * step, SAMPLE_BLOCK_PAGES) for n in range(count)]
    return blocks


def _merged_reads(blocks: list[_Block]) -> Iterator[tuple[int, int, list[_Block]]]:
    """Adjacent blocks grouped into single reads: DAMON regions tile the address space."""
    group: list[_Block] = []
    for block in blocks:
        if group:
            first = group[0].first_page
            last = group[-1].first_page + group[-1].pages
            if block.first_page != last or last + block.pages - first > MAX_READ_PAGES:
                yield first, last - first, group
                group = []
        group.append(block)
    if group:
        first = group[0].first_page
        yield first, group[-1].first_page + group[-1].pages - first, group


def page_counts(process: Process, regions: Sequence[tuple[int, int]], budget_pages: int) -> list[PageCounts]:
    """Resident and soft-dirty pages per region (since the last ``clear_soft_dirty``).

    At most about ``budget_pages`` pagemap entries are read; larger regions are sampled.
    Each read is reduced to one 0/1 byte per page for each bit, then counted per
    block with ``bytes.count``: no Python work per page.
    """
    blocks = _sample_blocks(regions, cap=max(SAMPLE_BLOCK_PAGES, budget_pages // max(1, len(regions))))
    sampled = [0] * len(regions)
    resident = [0] * len(regions)
    written = [0] * len(regions)
    for first_page, pages, group in _merged_reads(blocks):
        data = process.pagemap(first_page, pages)
        resident_flags = data[_RESIDENT_BYTE::PAGEMAP_ENTRY].translate(_RESIDENT_FLAG)
        written_flags = data[_SOFT_DIRTY_BYTE::PAGEMAP_ENTRY].translate(_SOFT_DIRTY_FLAG)
        for region, block_first, block_pages in group:
            offset = block_first - first_page
            sampled[region] += block_pages
            resident[region] += resident_flags.count(1, offset, offset + block_pages)
            written[region] += written_flags.count(1, offset, offset + block_pages)
    scales = [(end - start) / PAGE_SIZE / pages for (start, end), pages in zip(regions, sampled, strict=True)]
    return [PageCounts(round(count * scale), round(dirty * scale))
            for count, dirty, scale in zip(resident, written, scales, strict=True)]
