"""An observation's DAMON regions as arrays: what the backend's cost model and planner work on."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from testbed.model import PAGE_SIZE
from testbed.values import RegionView

Array = npt.NDArray[np.float64]
Array32 = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]


@dataclass(frozen=True)
class RegionTable:
    """An observation's regions as arrays, sorted by address.

    Residency is in sampled bytes, as the guest reports it and ``testbed.ledger``
    counts it: a region's resident bytes may fall short of its size (DAMON regions
    span unmapped gaps), and a part of a region holds its bytes in proportion.
    Per-node arrays are [node column, region]: numpy is many times faster along
    a long last axis than across a short one (3 nodes)."""

    starts: IntArray
    ends: IntArray
    access_rate: Array32
    written: Array32  # written_fraction; NaN where the guest could not tell
    resident: Array  # [node column, region]: the region's sampled resident bytes on each node
    node_ids: tuple[int, ...]

    @classmethod
    def from_regions(cls, regions: Sequence[RegionView], node_ids: Sequence[int]) -> RegionTable:
        # One list per field: the fastest way from dataclasses to arrays (most of a decision's time).
        starts = np.array([r.start for r in regions], dtype=np.int64)
        homes = [r.nodes for r in regions]
        on_node = np.zeros((len(node_ids), len(regions)))
        for column, node in enumerate(node_ids):
            on_node[column] = [home.get(node, 0) for home in homes]
        table = cls(starts=starts, ends=np.array([r.end for r in regions], dtype=np.int64),
                    access_rate=np.clip(np.array([r.access_rate for r in regions], dtype=np.float32), 0, 1),
                    written=np.array([r.written_fraction for r in regions], dtype=np.float32),  # None -> NaN
                    resident=on_node, node_ids=tuple(node_ids))
        return table if np.all(starts[1:] >= starts[:-1]) else table.subset(np.argsort(starts, kind="stable"))

    def subset(self, rows: IntArray) -> RegionTable:
        return RegionTable(self.starts[rows], self.ends[rows], self.access_rate[rows], self.written[rows],
                           self.resident[:, rows], self.node_ids)

    def split(self, limit: int, whole: BoolArray) -> tuple[RegionTable, IntArray]:
        """Regions larger than ``limit`` (but those ``whole`` says not to cut) as pieces of about that size
        (whole pages), each holding its share of the region's bytes as the validator counts a part of a
        region; and the region each piece comes from."""
        lengths = self.ends - self.starts
        counts = np.where(whole, 1, np.maximum(1, -(-lengths // limit)))
        rows = np.repeat(np.arange(len(self)), counts)
        if rows.size == len(self):
            return self, rows
        step = np.repeat(-(-lengths // counts // PAGE_SIZE) * PAGE_SIZE, counts)
        index = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
        starts = self.starts[rows] + index * step
        ends = np.minimum(starts + step, self.ends[rows])
        return RegionTable(starts, ends, self.access_rate[rows], self.written[rows],
                           self.resident[:, rows] * ((ends - starts) / lengths[rows]), self.node_ids), rows

    def cut(self, inside: IntArray) -> RegionTable:
        """The regions cut at each of ``inside`` (sorted addresses) that falls inside one, each part holding its
        share of the region's bytes."""
        first = np.searchsorted(inside, self.starts, side="right")  # the first edge after each start
        counts = np.searchsorted(inside, self.ends, side="left") - first  # edges strictly inside
        if not counts.any():
            return self
        rows = np.repeat(np.arange(len(self)), counts + 1)
        index = np.arange(len(rows)) - np.repeat(np.cumsum(counts + 1) - (counts + 1), counts + 1)
        at = np.repeat(first, counts + 1) + index  # the edge each part ends at, for all but the last part
        starts = np.where(index == 0, self.starts[rows], inside[np.maximum(at - 1, 0)])
        ends = np.where(index == counts[rows], self.ends[rows], inside[np.minimum(at, len(inside) - 1)])
        lengths = (self.ends - self.starts)[rows]
        return RegionTable(starts, ends, self.access_rate[rows], self.written[rows],
                           self.resident[:, rows] * ((ends - starts) / lengths), self.node_ids)

    @property
    def sizes(self) -> Array:
        return (self.ends - self.starts).astype(np.float64)

    @property
    def held(self) -> Array:
        """Each region's sampled resident bytes, on all nodes."""
        return self.resident.sum(axis=0)  # type: ignore[no-any-return]

    @property
    def placed(self) -> BoolArray:
        """The region's residency was sampled."""
        return self.held > 0

    @property
    def shares(self) -> Array:
        """[node column, region]: the share of the region's resident bytes on each node (0 if unsampled)."""
        held = self.held
        return np.divide(self.resident, held, out=np.zeros_like(self.resident), where=held > 0)

    def __len__(self) -> int:
        return len(self.starts)
