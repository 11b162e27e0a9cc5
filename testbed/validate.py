"""Checking a policy's actions against the machine before they reach the guest.

A policy may propose anything; what is sent is only what the machine can do:
nodes that exist and have room, ranges the process has, the interval's
migration budget, CPUs that exist. Each refusal is recorded with its reason.
"""

from __future__ import annotations

from dataclasses import dataclass

from testbed.values import Action, Migrate, Observation, Place, RegionView

# The kernel keeps some memory free for itself; a move that would take the
# target node below this is refused rather than left to fail page by page.
NODE_HEADROOM = 64 * 2**20
UNKNOWN_NODE = -1  # where an unsampled region's pages count as being: they may all need to move


@dataclass(frozen=True)
class Verdict:
    accepted: tuple[Action, ...]
    rejected: tuple[tuple[Action, str], ...]


def validate(actions: list[Action], observation: Observation, budget: int) -> Verdict:
    accepted: list[Action] = []
    rejected: list[tuple[Action, str]] = []
    room = {node.id: node.free_bytes - NODE_HEADROOM for node in observation.nodes if node.total_bytes > 0}
    cpus = {cpu for node in observation.nodes for cpu in node.cpus}
    remaining = budget
    for action in actions:
        if isinstance(action, Place):
            problem = None if action.cpus and set(action.cpus) <= cpus else f"CPUs {list(action.cpus)} do not all exist"
        else:
            problem, sources = _check_migrate(action, observation, room, remaining)
            if problem is None:
                moving = sum(sources.values())
                remaining -= moving
                room[action.node] -= moving
                for node, freed in sources.items():  # a demotion makes room for a promotion after it
                    room[node] = room.get(node, 0) + freed
        if problem is None:
            accepted.append(action)
        else:
            rejected.append((action, problem))
    return Verdict(tuple(accepted), tuple(rejected))


def _check_migrate(action: Migrate, observation: Observation, room: dict[int, int],
                   remaining: int) -> tuple[str | None, dict[int, int]]:
    """Why the move cannot be made (or None), and the bytes it would take from each node."""
    if action.node not in room:
        return f"node {action.node} is not a node with memory", {}
    if action.end <= action.start:
        return f"empty range [{action.start:#x}, {action.end:#x})", {}
    overlap = [r for r in observation.regions if r.start < action.end and action.start < r.end]
    if sum(_overlap(r, action) for r in overlap) < action.size:
        return f"[{action.start:#x}, {action.end:#x}) is not all inside the process's observed regions", {}
    sources: dict[int, int] = {}
    for region in overlap:
        for node, resident in _resident(region).items():
            if node != action.node:  # the part of the region's resident bytes the range covers
                sources[node] = sources.get(node, 0) + resident * _overlap(region, action) // region.size
    moving = sum(sources.values())
    if moving == 0:
        return f"no-op: its pages are already on node {action.node}", {}
    if moving > remaining:
        return f"over budget: moves {moving} bytes, {max(0, remaining)} left this interval", {}
    if moving > room[action.node]:
        return f"no room: node {action.node} has {max(0, room[action.node])} bytes to spare, needs {moving}", {}
    return None, sources


def _overlap(region: RegionView, action: Migrate) -> int:
    return min(region.end, action.end) - max(region.start, action.start)


def _resident(region: RegionView) -> dict[int, int]:
    """The region's resident bytes per node; an unsampled region counts as wholly resident, off every node.

    Resident bytes, not the region's size: DAMON regions span unmapped gaps, which do not move.
    """
    return region.nodes if sum(region.nodes.values()) else {UNKNOWN_NODE: region.size}
