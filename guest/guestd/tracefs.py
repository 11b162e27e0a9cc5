"""DAMON's ``damon:damon_aggregated`` tracepoint, read from a private tracefs instance.

Why the tracepoint and not DAMON sysfs ``tried_regions``: the sysfs path needs an
``update_schemes_tried_regions`` command, which the kernel completes only at the
kdamond's next scheme apply (up to an aggregation interval, 100 ms by default),
and then four small file reads per region.  Measured on a fake tree with 1,000
regions (host, Python 3.11): reading them from sysfs files took ~105 ms before
any kernel wait; the tracepoint path, which parses the last aggregation kept in
memory, took ~4 ms for a whole observation.  So the tracepoint is the fast path
and ``tried_regions`` the fallback when tracefs is not mounted.

Each watched kdamond gets its own instance filtered on the kdamond's pid, so
one instance's pipe holds exactly one target's aggregations.  The pipe is read
only when an observation asks: the instance's ring buffer (overwrite mode) is
sized per CPU to hold the aggregation being written and the last complete one,
so older aggregations are dropped by the kernel unformatted, and a watch with
no observer costs the daemon nothing.  (A thread that drained the pipe four
times a second cost 15% of a vCPU under TCG: the kernel formats every line.)

Why a history of aggregations: an observation asked for just after an epoch
of the workload ended (``until``) must see an aggregation of that epoch, not
one that ended later, while the workload waited for the loop to act and DAMON
saw its memory idle (on ``smoke`` the hot index read 0.08-0.18 of its busy
access rate, and 0 in some intervals, from such part-idle aggregations).  The
ring buffer and the tail keep aggregations back ``HISTORY_S``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import NamedTuple

from .kernel import Kernel

DAMON_EVENT = "events/damon/damon_aggregated"
READ_CHUNK = 1 << 16
# A damon_aggregated event in the ring buffer: an event header, the common fields and six values
# (48 bytes of record), with room for a time-extend event.
EVENT_BYTES_BOUND = 64
LINE_BYTES_BOUND = 160  # a damon_aggregated line is ~100 bytes
# How far back an observation may ask for an aggregation: the loop observes within a few hundred
# milliseconds of an epoch's end under TCG.
HISTORY_S = 1.0

# "<task>-<pid> [cpu] flags <seconds>: damon_aggregated: target_id=T nr_regions=N START-END: NR_ACCESSES AGE"
_AGGREGATED = re.compile(
    rb" (\d+\.\d+): damon_aggregated: target_id=\d+ nr_regions=(\d+) (\d+)-(\d+): (\d+) (\d+)"
)

log = logging.getLogger(__name__)


class Region(NamedTuple):
    """One DAMON region (a tuple: a thousand of them are made per observation)."""

    start: int
    end: int
    nr_accesses: float  # a whole number in one aggregation
    age: int


@dataclass(frozen=True)
class Snapshot:
    """A complete DAMON aggregation, or the mean of several; ``time`` is CLOCK_MONOTONIC seconds when the
    (newest) one ended."""

    time: float
    regions: tuple[Region, ...]
    aggregations: int = 1


def history_aggregations(aggr_us: int) -> int:
    """Aggregations to keep: ``HISTORY_S`` of them, the one being written, and one more."""
    return -(-int(HISTORY_S * 1e6) // max(1, aggr_us)) + 2


def complete_aggregations(text: bytes, until: float | None = None, since: float | None = None) -> list[Snapshot]:
    """The complete aggregations in ``text`` that ended in (``since``, ``until``], newest first.

    Walking back from the end, a sweep is a run of lines with the same
    ``nr_regions`` and falling start addresses (regions are emitted in address
    order); a sweep shorter than its ``nr_regions`` is one still being written,
    or one the ring buffer lost lines of, and is skipped.  One ``findall`` does
    the parsing in C; the walk converts only counts and starts.  Without
    ``since``, only the newest that ended by ``until``.
    """
    entries = _AGGREGATED.findall(text)
    found: list[Snapshot] = []
    end = len(entries)  # the sweep being collected is entries[index:end]
    expected = next_start = 0
    for index in range(len(entries) - 1, -1, -1):
        count, start = int(entries[index][1]), int(entries[index][2])
        if index < end - 1 and (count != expected or start >= next_start):
            end = index + 1
        if index == end - 1:
            expected = count
        next_start = start
        if end - index == expected:
            ended = float(entries[end - 1][0])
            if since is not None and ended <= since:
                break
            if until is None or ended <= until:
                found.append(Snapshot(ended, tuple(Region(int(low), int(high), int(accesses), int(age))
                                                   for _, _, low, high, accesses, age in entries[index:end])))
                if since is None:
                    break
            end = index  # the sweep before this one is next
    return found


def mean_accesses(aggregations: list[Snapshot]) -> Snapshot:
    """The first (newest) aggregation's regions, each with the mean ``nr_accesses`` over all of them.

    Why: one aggregation is 20 samples of one random page per region, so a region's count is a small
    binomial draw; a policy that compares it with a threshold flips between repeats of the same run.
    Averaged over an epoch's ten aggregations its error is a third as large.  Regions split and merge
    between aggregations, so each older aggregation counts by how many bytes of its regions overlap
    the newest one's (its access count integrated over the region, over the bytes it covers there).
    """
    newest = aggregations[0]
    if len(aggregations) == 1:
        return newest
    sums = [0.0] * len(newest.regions)
    covered = [0] * len(newest.regions)
    for aggregation in aggregations:
        cumulative = _Cumulative(aggregation.regions)
        for index, region in enumerate(newest.regions):
            (low_sum, low_length), (high_sum, high_length) = cumulative.at(region.start), cumulative.at(region.end)
            sums[index] += high_sum - low_sum
            covered[index] += high_length - low_length
    return Snapshot(newest.time, tuple(
        region._replace(nr_accesses=round(total / size, 3) if size else region.nr_accesses)
        for region, total, size in zip(newest.regions, sums, covered, strict=True)), len(aggregations))


class _Cumulative:
    """One aggregation's access count integrated over addresses, and the bytes its regions cover."""

    def __init__(self, regions: tuple[Region, ...]) -> None:
        self._regions = regions
        self._starts = [region.start for region in regions]
        self._integral, self._length = [0.0], [0]  # over the regions before each one
        for region in regions:
            self._integral.append(self._integral[-1] + region.nr_accesses * (region.end - region.start))
            self._length.append(self._length[-1] + region.end - region.start)

    def at(self, address: int) -> tuple[float, int]:
        """Both, from the lowest address up to ``address``."""
        index = bisect_right(self._starts, address) - 1
        if index < 0:
            return 0.0, 0
        region = self._regions[index]
        inside = min(address, region.end) - region.start
        return self._integral[index] + region.nr_accesses * inside, self._length[index] + inside


class TraceTail:
    """The last bytes read from a trace pipe: enough for ``aggregations`` of ``max_regions``."""

    def __init__(self, fd: int, max_regions: int, aggregations: int = 2) -> None:
        self._fd = fd
        self._capacity = aggregations * max_regions * LINE_BYTES_BOUND + READ_CHUNK
        self._buffer = bytearray()
        self._changed = False
        self._complete = b""  # the buffer up to its last whole line, as last parsed
        self._latest: Snapshot | None = None
        self._asked: dict[tuple[float, float | None], Snapshot | None] = {}

    def _drain(self) -> None:
        while True:
            try:
                chunk = os.read(self._fd, READ_CHUNK)
            except BlockingIOError:
                return
            except OSError as error:
                # trace_pipe also says EBUSY when its formatted line buffer has nothing left
                # to copy (seq_buf_to_user): nothing more to read for now, like EAGAIN.
                if error.errno == errno.EBUSY:
                    return
                raise
            if not chunk:
                return
            self._buffer += chunk
            self._changed = True
            self._trim()

    def _trim(self) -> None:
        excess = len(self._buffer) - self._capacity
        if excess > 0:
            # Cut at a line end so no partial line can parse as a different region.
            cut = self._buffer.find(b"\n", excess)
            del self._buffer[: cut + 1 if cut >= 0 else len(self._buffer)]

    def snapshot(self, until: float | None = None, since: float | None = None) -> Snapshot | None:
        """The latest complete aggregation that ended by ``until`` (CLOCK_MONOTONIC seconds; None: the latest);
        with ``since`` too, the mean of those that ended in (``since``, ``until``].

        If none that old is kept any more, the latest (its ``time`` says how late); parses again only when
        new lines arrived."""
        self._drain()
        if self._changed:
            self._complete = bytes(self._buffer[: self._buffer.rfind(b"\n") + 1])
            self._latest = next(iter(complete_aggregations(self._complete)), self._latest)
            self._asked = {}
            self._changed = False
        if until is None:
            return self._latest
        if (until, since) not in self._asked:
            found = complete_aggregations(self._complete, until, since)
            self._asked[until, since] = mean_accesses(found) if found else self._latest
        return self._asked[until, since]


def ring_buffer_kb(max_regions: int, aggregations: int = 2) -> int:
    """Per CPU: ``aggregations`` of ``max_regions`` (the one being written among them), and half an
    aggregation more for the pages the kernel drops whole when it overwrites."""
    return -(-(2 * aggregations + 1) * max_regions * EVENT_BYTES_BOUND // 2 // 1024) + 8


class TraceInstance:
    """A tracefs instance that records one kdamond's aggregations, read when an observation asks."""

    def __init__(self, kernel: Kernel, tracefs: str, name: str, kdamond_pid: int, max_regions: int,
                 aggregations: int) -> None:
        self._kernel = kernel
        self._dir = f"{tracefs}/instances/{name}"
        self._fd = -1
        kernel.mkdir(self._dir)
        try:
            kernel.write(f"{self._dir}/trace_clock", "mono")  # comparable with the guest's time.monotonic()
            kernel.write(f"{self._dir}/buffer_size_kb", str(ring_buffer_kb(max_regions, aggregations)))
            kernel.write(f"{self._dir}/{DAMON_EVENT}/filter", f"common_pid == {kdamond_pid}")
            kernel.write(f"{self._dir}/{DAMON_EVENT}/enable", "1")
            self._fd = kernel.open_stream(f"{self._dir}/trace_pipe")
        except OSError:
            self.close()
            raise
        self.tail = TraceTail(self._fd, max_regions, aggregations)

    def close(self) -> None:
        """Stop recording and remove the instance; what cannot be undone is logged, not raised."""
        try:
            self._kernel.write(f"{self._dir}/{DAMON_EVENT}/enable", "0")
        except OSError as error:
            log.warning("could not disable the DAMON event in %s: %s", self._dir, error)
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        try:
            self._kernel.rmdir(self._dir)
        except OSError as error:
            log.warning("could not remove trace instance %s: %s", self._dir, error)
