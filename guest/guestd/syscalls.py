"""The system calls the daemon makes, behind one small interface so tests can fake them."""

from __future__ import annotations

import ctypes
import mmap
import os
from array import array
from collections.abc import Sequence
from typing import Protocol

SYS_MOVE_PAGES_X86_64 = 279
SYS_MBIND_X86_64 = 237
MPOL_MF_MOVE = 1 << 1  # move pages mapped only by this process; shared ones stay put
MPOL_BIND = 2
NODEMASK_BITS = 64  # one unsigned long: nodes 0-62 (mbind reads maxnode - 1 bits)


class Held(Protocol):
    """Memory the daemon holds on one node until ``release``."""

    def release(self) -> None: ...


class Syscalls(Protocol):
    def move_pages(self, pid: int, pages: Sequence[int], node: int | None) -> Sequence[int]:
        """Move ``pages`` (addresses) of ``pid`` to ``node``, or only query them when ``node`` is None.

        Returns one status per page: the node it is on, or a negative errno.
        Raises OSError when the call as a whole fails (ESRCH: the process is gone).
        """

    def set_affinity(self, tid: int, cpus: Sequence[int]) -> None: ...

    def kill(self, pid: int, signum: int) -> None: ...

    def hold_memory(self, node: int, size: int) -> Held:
        """Allocate ``size`` bytes (whole pages) of the daemon's own memory on ``node`` and keep them."""


class LinuxSyscalls:
    """The real calls: move_pages(2) through ctypes (x86_64), the rest through :mod:`os`."""

    def __init__(self) -> None:
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.syscall.restype = ctypes.c_long

    def move_pages(self, pid: int, pages: Sequence[int], node: int | None) -> Sequence[int]:
        count = len(pages)
        addresses = pages if isinstance(pages, array) and pages.typecode == "Q" else array("Q", pages)
        status = array("i", bytes(4 * count))
        nodes = None if node is None else array("i", [node]) * count
        result = self._libc.syscall(
            ctypes.c_long(SYS_MOVE_PAGES_X86_64), ctypes.c_long(pid), ctypes.c_ulong(count),
            _pointer(addresses), _pointer(nodes), _pointer(status),
            ctypes.c_int(0 if node is None else MPOL_MF_MOVE),
        )
        if result < 0:
            code = ctypes.get_errno()
            raise OSError(code, os.strerror(code))
        return status

    def set_affinity(self, tid: int, cpus: Sequence[int]) -> None:
        os.sched_setaffinity(tid, cpus)

    def kill(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)

    def hold_memory(self, node: int, size: int) -> Held:
        if not 0 <= node < NODEMASK_BITS - 1:
            raise OSError(22, f"node {node} is beyond the daemon's node mask")
        region = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
        view = ctypes.c_char.from_buffer(region)
        address = ctypes.addressof(view)
        del view  # an exported pointer would keep release() from unmapping
        mask = ctypes.c_ulong(1 << node)
        result = self._libc.syscall(ctypes.c_long(SYS_MBIND_X86_64), ctypes.c_void_p(address),
                                    ctypes.c_ulong(size), ctypes.c_int(MPOL_BIND), ctypes.byref(mask),
                                    ctypes.c_ulong(NODEMASK_BITS), ctypes.c_uint(0))
        if result < 0:
            code = ctypes.get_errno()
            region.close()
            raise OSError(code, f"mbind to node {node}: {os.strerror(code)}")
        for offset in range(0, size, mmap.PAGESIZE):  # the first write to each page allocates it, on ``node``
            region[offset] = 1
        return _HeldMapping(region)


class _HeldMapping:
    def __init__(self, region: mmap.mmap) -> None:
        self._region = region

    def release(self) -> None:
        self._region.close()


def _pointer(buffer: array[int] | None) -> ctypes.c_void_p:
    if buffer is None or not buffer:
        return ctypes.c_void_p(None)
    address, _ = buffer.buffer_info()
    return ctypes.c_void_p(address)
