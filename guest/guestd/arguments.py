"""A request's arguments checked into the daemon's types, and the bounds they are checked against.

Every handler reads its arguments through ``protocol.Args``; what several take
(address ranges, monitoring attributes, schemes, memory policies) is parsed
here once, so the daemon's handlers say what they do with them.
"""

from __future__ import annotations

from dataclasses import dataclass

from .damon import MAX_UINT, MAX_ULONG, Monitoring, Scheme
from .kernel import Kernel
from .pages import AddressRange, RangeQuery, unaliased_stride
from .process import PAGE_SIZE
from .protocol import Args
from .system import require_memory_node

MAX_PID = 1 << 22  # PID_MAX_LIMIT on 64-bit
MAX_NODE = 1023
MAX_CPU = 8191
MAX_ADDRESS = (1 << 64) - 1
MAX_MONOTONIC_US = (1 << 63) - 1
MAX_QUERY_PAGES = 1 << 22  # per observed range; a larger stride samples bigger ranges
MAX_QUERY_CHUNKS = 1 << 16
MAX_OBSERVED_REGIONS = 100_000
DEFAULT_PAGEMAP_BUDGET = 1 << 18  # pagemap entries per observation (2 MiB read)
# Where regions' pages are: 64 samples put a region's share on a node within about ±6%
# (one standard error at worst), and 16k pages keep the one move_pages query short.
DEFAULT_REGION_NODE_PAGES = 64
DEFAULT_REGION_NODE_BUDGET = 1 << 14
SCHEME_ACTIONS = ("migrate_hot", "migrate_cold", "pageout", "lru_prio", "lru_deprio", "stat")  # paddr in 6.12
MEMORY_POLICIES = ("interleave", "membind", "preferred")


@dataclass(frozen=True)
class NodeSampling:
    """How observe samples where each DAMON region's pages are."""

    pages_per_region: int
    budget_pages: int


def node_sampling(args: Args) -> NodeSampling | None:
    wanted = args.boolean("region_nodes", default=False)
    sampling = NodeSampling(
        args.integer("region_nodes_pages", 1, 1 << 12, default=DEFAULT_REGION_NODE_PAGES),
        args.integer("region_nodes_budget_pages", 1, 1 << 20, default=DEFAULT_REGION_NODE_BUDGET),
    )
    return sampling if wanted else None


def monitoring(args: Args) -> Monitoring:
    defaults = Monitoring()
    attributes = Monitoring(
        sample_us=args.integer("sample_us", 1, MAX_UINT, default=defaults.sample_us),
        aggr_us=args.integer("aggr_us", 1, MAX_UINT, default=defaults.aggr_us),
        update_us=args.integer("update_us", 1, MAX_UINT, default=defaults.update_us),
        min_regions=args.integer("min_regions", 3, MAX_OBSERVED_REGIONS, default=defaults.min_regions),
        max_regions=args.integer("max_regions", 3, MAX_OBSERVED_REGIONS, default=defaults.max_regions),
    )
    if attributes.aggr_us < attributes.sample_us:
        raise args.error("aggr_us", f"must be at least sample_us ({attributes.sample_us})")
    if attributes.max_regions < attributes.min_regions:
        raise args.error("max_regions", f"must be at least min_regions ({attributes.min_regions})")
    return attributes


def pair(args: Args, key: str, maximum: int) -> tuple[int, int]:
    values = args.integers(key, 0, maximum, default=[0, maximum])
    if len(values) != 2 or values[0] > values[1]:
        raise args.error(key, f"expected [min, max] with min <= max, got {values}")
    return values[0], values[1]


def address_range(args: Args) -> AddressRange:
    area = AddressRange(args.integer("start", 0, MAX_ADDRESS), args.integer("length", 1, MAX_ADDRESS))
    args.done()
    if area.end > MAX_ADDRESS:
        raise args.error("length", f"range {area.describe()} runs past the end of the address space")
    return area


def query_range(args: Args) -> RangeQuery:
    start, length = args.integer("start", 0, MAX_ADDRESS), args.integer("length", 1, MAX_ADDRESS)
    chunk = args.integer("chunk", PAGE_SIZE, MAX_ADDRESS, default=length)
    stride = unaliased_stride(args.integer("stride", 1, MAX_QUERY_PAGES, default=1))
    args.done()
    area = AddressRange(start, length)
    pages = length // (PAGE_SIZE * stride)
    if area.end > MAX_ADDRESS or pages > MAX_QUERY_PAGES:
        raise args.error("length", f"{area.describe()} at stride {stride} is {pages} pages, more than "
                                   f"{MAX_QUERY_PAGES}; use a larger stride")
    if length // chunk > MAX_QUERY_CHUNKS:
        raise args.error("chunk", f"{area.describe()} in chunks of {chunk} bytes is more than {MAX_QUERY_CHUNKS}")
    return RangeQuery(area, chunk, stride)


def memory_option(memory: Args) -> str:
    given = [policy for policy in MEMORY_POLICIES if memory.has(policy)]
    if len(given) != 1:
        raise memory.error("|".join(MEMORY_POLICIES), "give exactly one memory policy")
    policy = given[0]
    if policy == "preferred":
        nodes: list[int] | str = [memory.integer(policy, 0, MAX_NODE)]
    else:
        nodes = memory.ids_or_all(policy, MAX_NODE)
    memory.done()
    if not nodes:
        raise memory.error(policy, "give at least one node, or \"all\"")
    listed = nodes if isinstance(nodes, str) else ",".join(map(str, nodes))
    return f"--{policy}={listed}"


def scheme(args: Args, kernel: Kernel, default_nodes: list[int]) -> Scheme:
    """One of a ``damos`` request's schemes."""
    action = args.text("action")
    if action not in SCHEME_ACTIONS:
        raise args.error("action", f"expected one of {', '.join(SCHEME_ACTIONS)}, got {action!r}")
    target = args.integer("target_node", 0, MAX_NODE, default=None)
    if (target is None) == action.startswith("migrate_"):
        raise args.error("target_node", "required for migrate_hot/migrate_cold and only for them")
    if target is not None:
        require_memory_node(kernel, target, "damos")
    nodes = args.integers("nodes", 0, MAX_NODE, default=default_nodes)
    if not nodes:
        raise args.error("nodes", "give at least one node (or leave it out for the request's nodes)")
    for node in nodes:
        require_memory_node(kernel, node, "damos")
    weights = args.integers("quota_weights", 0, MAX_UINT, default=[0, 0, 0])
    if len(weights) != 3:
        raise args.error("quota_weights", f"expected [size, nr_accesses, age] per mille, got {weights}")
    scheme = Scheme(
        action, target,
        size=pair(args, "size", MAX_ULONG), nr_accesses=pair(args, "nr_accesses", MAX_UINT),
        age=pair(args, "age", MAX_UINT),
        quota_ms=args.integer("quota_ms", 0, MAX_UINT, default=0),
        quota_bytes=args.integer("quota_bytes", 0, MAX_ULONG, default=0),
        quota_reset_ms=args.integer("quota_reset_ms", 0, MAX_UINT, default=0),
        apply_interval_us=args.integer("apply_interval_us", 0, MAX_UINT, default=0),
        quota_weights=(weights[0], weights[1], weights[2]), nodes=tuple(sorted(set(nodes))),
        young=args.boolean("young", default=None),
    )
    args.done()
    return scheme
