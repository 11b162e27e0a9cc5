"""The kernel's file interfaces (sysfs, procfs, tracefs) under a configurable root.

Every file the daemon touches goes through :class:`Kernel`, so the logic runs
unchanged against a fake tree in a temporary directory.  Paths are given
relative to the root, written the way they appear on a live system
(``sys/kernel/mm/damon/admin``, ``proc/123/numa_maps``).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

_ID_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
# Largest id accepted in a kernel list such as "0-3,8"; larger ones are a typo, not a machine.
MAX_LIST_ID = 1 << 16


class Kernel:
    """Reads and writes kernel files below ``root``; errors are the OSError the kernel gave."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def path(self, relative: str) -> Path:
        return self.root / relative

    def exists(self, relative: str) -> bool:
        return self.path(relative).exists()

    def read(self, relative: str) -> str:
        with open(self.path(relative), encoding="utf-8", errors="replace") as file:
            return file.read()

    def value(self, relative: str) -> str:
        """A one-value file, such as ``state`` or ``nodelist``, without its newline."""
        return self.read(relative).strip()

    def read_bytes(self, relative: str, offset: int, size: int) -> bytes:
        """``size`` bytes at ``offset`` (fewer at the end), as pagemap needs: one pread."""
        fd = os.open(self.path(relative), os.O_RDONLY)
        try:
            return os.pread(fd, size, offset)
        finally:
            os.close(fd)

    def write(self, relative: str, text: str) -> None:
        # No O_CREAT: a kernel file that is missing is an error, in the fake tree too.
        fd = os.open(self.path(relative), os.O_WRONLY | os.O_TRUNC)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def listdir(self, relative: str) -> list[str]:
        return sorted(os.listdir(self.path(relative)))

    def mkdir(self, relative: str) -> None:
        """Create a directory; in tracefs ``instances/`` this creates a trace instance."""
        os.mkdir(self.path(relative))

    def rmdir(self, relative: str) -> None:
        os.rmdir(self.path(relative))

    def open_stream(self, relative: str) -> int:
        """A non-blocking read descriptor, for ``trace_pipe``."""
        return os.open(self.path(relative), os.O_RDONLY | os.O_NONBLOCK)

    @contextlib.contextmanager
    def exclusive(self, relative: str) -> Iterator[None]:
        """Hold an advisory lock shared with other guestd processes (one per channel)."""
        path = self.path(relative)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def parse_id_list(text: str) -> list[int]:
    """A kernel id list such as ``0-3,8`` (cpulist, nodelist); empty text is no ids."""
    ids: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        match = _ID_RANGE.fullmatch(part)
        bounds = (int(match[1]), int(match[2] or match[1])) if match else None
        if bounds is None or not bounds[0] <= bounds[1] < MAX_LIST_ID:
            raise ValueError(f"bad id range {part!r} in list {text.strip()!r}")
        ids.extend(range(bounds[0], bounds[1] + 1))
    return ids


def format_id_list(ids: Iterable[int]) -> str:
    """The inverse of :func:`parse_id_list`: ``[0, 1, 2, 5]`` -> ``0-2,5``."""
    ranges: list[list[int]] = []
    for value in sorted(set(ids)):
        if ranges and ranges[-1][1] + 1 == value:
            ranges[-1][1] = value
        else:
            ranges.append([value, value])
    return ",".join(str(low) if low == high else f"{low}-{high}" for low, high in ranges)
