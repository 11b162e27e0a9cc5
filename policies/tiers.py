"""Which memory is fast, as the guest kernel reports it: memory tiers first, then HMAT latency.

Baselines know nothing of the devices' descriptions; they rank nodes the way
Linux does. The kernel computes memory tiers from HMAT's performance numbers,
so the tier decides; within a tier, or in a guest without tiers, the HMAT read
latency; then nodes with CPUs before CPU-less ones (expanders are CPU-less).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from testbed.values import NodeView


def speed_order(nodes: Iterable[NodeView]) -> tuple[NodeView, ...]:
    """The nodes that have memory, fastest first."""
    return tuple(sorted((node for node in nodes if node.total_bytes > 0), key=_speed_key))


def demotion_targets(nodes: Iterable[NodeView]) -> tuple[NodeView, ...]:
    """Where to put data that leaves the fastest node, best first: the nodes of slower tiers.

    In a machine whose nodes are all in one tier, the other nodes in speed order.
    """
    order = speed_order(nodes)
    slower = tuple(node for node in order[1:] if _in_slower_tier(node, order[0]))
    return slower or order[1:]


def _speed_key(node: NodeView) -> tuple[float, float, bool, int]:
    return _known_or_last(node.tier), _known_or_last(node.read_latency_ns), not node.cpus, node.id


def _in_slower_tier(node: NodeView, fastest: NodeView) -> bool:
    if node.tier is not None and fastest.tier is not None:
        return node.tier > fastest.tier
    return _known_or_last(node.read_latency_ns) > _known_or_last(fastest.read_latency_ns)


def _known_or_last(value: float | None) -> float:
    return math.inf if value is None else value
