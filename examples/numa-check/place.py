"""Touch N MiB of fresh anonymous memory and print, as JSON, how many pages landed on each NUMA node.

The program under test of this example: run it under ``numactl --membind=NODE`` (or any memory policy)
to see where the kernel put its pages. It reads the answer from /proc/self/numa_maps, so it needs
nothing but Python.

    python3 place.py 32          # {"0": 8192}
"""

from __future__ import annotations

import ctypes
import json
import mmap
import re
import sys

PAGE = mmap.PAGESIZE


def pages_per_node(size: int) -> dict[str, int]:
    buffer = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    for offset in range(0, size, PAGE):  # first touch: this is when the kernel picks the node
        buffer[offset] = 1
    start = ctypes.addressof(ctypes.c_char.from_buffer(buffer))
    with open("/proc/self/numa_maps") as maps:
        for line in maps:
            fields = line.split()
            if int(fields[0], 16) == start:
                return {match[1]: int(match[2]) for field in fields[1:]
                        if (match := re.fullmatch(r"N(\d+)=(\d+)", field))}
    raise SystemExit("place.py: the buffer is not in /proc/self/numa_maps")


if __name__ == "__main__":
    print(json.dumps(pages_per_node(int(sys.argv[1]) * 2**20)))
