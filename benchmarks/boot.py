"""Boot-to-ready times: lean cold boot and warm restore, beside a systemd boot, for both backends.

Ready means the guest's sshd runs and a command over SSH works. Each figure is
the median (and range) of several runs, with the host's load average beside it
because TCG boot times depend on what else the host is doing.

    .venv/bin/python benchmarks/boot.py [--runs 3] [--system dram-only] [--backends qemu libvirt]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from testbed.image import build_image
from testbed.machine import VmBackend
from testbed.table import render_table
from testbed.vms import Vm, up

# The systemd baseline boots the same image and kernel through /lib/systemd/systemd;
# net.ifnames=0 keeps the interface named eth0 as its networkd configuration expects.
SYSTEMD = "llamas.init=systemd net.ifnames=0"


def measure(start: Callable[[], Vm]) -> tuple[float, float]:
    """Seconds from start to a working SSH command, and the 1-minute load average before it."""
    load = os.getloadavg()[0]
    began = time.monotonic()
    vm = start()
    try:
        vm.shell().run("true")
        return time.monotonic() - began, load
    finally:
        vm.down()


def series(label: str, runs: int, start: Callable[[], Vm],
           baseline: float | None = None) -> tuple[float, list[object]]:
    """The median, and a table row: median, range, speed-up over ``baseline``, load."""
    figures = [measure(start) for _ in range(runs)]
    seconds = [s for s, _ in figures]
    loads = [load for _, load in figures]
    median = statistics.median(seconds)
    speedup = f"{baseline / median:.1f}x" if baseline else "1.0x"
    return median, [label, f"{median:.2f}", f"{min(seconds):.2f}-{max(seconds):.2f}", speedup,
                    f"{statistics.median(loads):.2f}"]


def silent(_: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--system", default="dram-only")
    parser.add_argument("--backends", nargs="+", type=VmBackend, choices=list(VmBackend), default=list(VmBackend))
    args = parser.parse_args()
    build_image(log=silent)
    rows = []
    for backend in args.backends:
        name = f"bench-{backend}"

        def start(warm: bool, cmdline: str = "", backend: VmBackend = backend, name: str = name) -> Vm:
            return up(args.system, name=name, backend=backend, warm=warm, extra_cmdline=cmdline, log=silent)

        start(warm=True).down()  # make sure a saved state exists
        baseline, row = series(f"{backend}: systemd boot (baseline)", args.runs, lambda: start(False, SYSTEMD))
        rows.append(row)
        rows.append(series(f"{backend}: lean cold boot", args.runs, lambda: start(False), baseline)[1])
        rows.append(series(f"{backend}: warm restore", args.runs, lambda: start(True), baseline)[1])
    print(f"boot to ready on {args.system}, {args.runs} runs each, {os.cpu_count()} host cores")
    print(render_table(["boot", "median s", "range s", "vs systemd", "load avg"], rows))


if __name__ == "__main__":
    main()
