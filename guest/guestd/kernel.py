"""The kernel's file interfaces (sysfs, procfs, tracefs) under a configurable root.

Every file the daemon touches goes through :class:`Kernel`, so the logic runs
unchanged against a fake tree in a temporary directory.  Paths are given
relative to the root, written the way they appear on a live system
(``sys/kernel/mm/damon/admin``, ``proc/123/numa_maps``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import re
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import TypeVar

_ID_RANGE = re.compile(r"(\d+)(?:-(\d+))?")
# Largest id accepted in a kernel list such as "0-3,8"; larger ones are a typo, not a machine.
MAX_LIST_ID = 1 << 16
# DAMON's sysfs files answer EBUSY when their lock is held elsewhere (mm/damon/sysfs.c takes it with
# mutex_trylock): every running kdamond takes it once an aggregation interval to look for a command meant for
# it, and under TCG a vCPU preempted in that moment holds it for milliseconds (a hot-cold run failed at watch
# on one). The kernel means "not now": a read or write there is tried again, pausing longer each time, for
# about a second in all, before the error stands.
DAMON_SYSFS = "sys/kernel/mm/damon/"
BUSY_PAUSES_S = (0.001, 0.005, 0.02, 0.05, 0.1, 0.2, 0.3, 0.3)

T = TypeVar("T")


class Kernel:
    """Reads and writes kernel files below ``root``; errors are the OSError the kernel gave."""

    def __init__(self, root: Path = Path("/")) -> None:
        self.root = root

    def path(self, relative: str) -> Path:
        return self.root / relative

    def exists(self, relative: str) -> bool:
        return self.path(relative).exists()

    def read(self, relative: str) -> str:
        def once() -> str:
            with open(self.path(relative), encoding="utf-8", errors="replace") as file:
                return file.read()
        return _again_if_busy(relative, once)

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
        def once() -> None:
            # No O_CREAT: a kernel file that is missing is an error, in the fake tree too.
            fd = os.open(self.path(relative), os.O_WRONLY | os.O_TRUNC)
            try:
                os.write(fd, text.encode())
            finally:
                os.close(fd)
        _again_if_busy(relative, once)

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


def _again_if_busy(relative: str, action: Callable[[], T]) -> T:
    """``action``'s result; under DAMON's sysfs, tried again while the kernel answers EBUSY (see BUSY_PAUSES_S)."""
    pauses = iter(BUSY_PAUSES_S if relative.startswith(DAMON_SYSFS) else ())
    while True:
        try:
            return action()
        except OSError as error:
            pause = next(pauses, None) if error.errno == errno.EBUSY else None
            if pause is None:
                raise
            time.sleep(pause)


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
