"""Whether this host can give a guest its memory, asked before QEMU starts."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from testbed.errors import UserError
from testbed.model import System
from testbed.render_qemu import guest_memory

MEMINFO = Path("/proc/meminfo")


def check_host_memory(system: System, meminfo: Path = MEMINFO) -> None:
    """Refuse a guest whose memory the host cannot give: QEMU would fail to allocate it, or the
    host would swap or kill something, and the VM would stop during boot without a word."""
    needed = guest_memory(system)
    available = host_available_memory(meminfo)
    if available is not None and needed > available:
        raise UserError(f"{system.name}: the guest needs {_gib(needed, math.ceil)} of memory, this host has "
                        f"{_gib(available, math.floor)} available (MemAvailable in {meminfo})")


def host_available_memory(meminfo: Path = MEMINFO) -> int | None:
    """MemAvailable in bytes: what the host can give without swapping; None where it does not say."""
    try:
        text = meminfo.read_text()
    except OSError:
        return None
    found = re.search(r"^MemAvailable:\s+(\d+) kB$", text, re.MULTILINE)
    return int(found[1]) * 1024 if found else None


def _gib(size: int, rounding: Callable[[float], int]) -> str:
    """``size`` in GiB to one decimal, rounded so that a shortfall still shows (needed up, available down)."""
    return f"{rounding(size / 2**30 * 10) / 10:g}GiB"
