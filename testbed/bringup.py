"""Guest bring-up: make every memory device of the system a NUMA node in the guest.

Plain RAM nodes need nothing. An NVDIMM becomes a device-DAX namespace that
kmem onlines as system RAM; a CXL type-3 device gets a RAM region whose DAX
device kmem onlines likewise. Both end up as CPU-less nodes. The script is
generated from the system (a pure function) and run over SSH after boot.
"""

from __future__ import annotations

from testbed.model import Emulation, System

# Without udev nobody loads drivers on demand; these are the ones the devices need.
NVDIMM_MODULES = ("nfit", "dax_pmem", "kmem")
CXL_MODULES = ("cxl_acpi", "cxl_pci", "cxl_mem", "dax_cxl", "kmem")


def bringup_script(system: System) -> str | None:
    """A shell script for the guest, or None when every node is plain RAM."""
    nvdimms = [node for node in system.nodes if node.emulation is Emulation.NVDIMM]
    cxl = [node for node in system.nodes if node.emulation is Emulation.CXL_TYPE3]
    if not nvdimms and not cxl:
        return None
    lines = ["set -eu",
             # Onlining is done explicitly below; daxctl refuses while the kernel auto-onlines.
             "echo offline > /sys/devices/system/memory/auto_online_blocks"]
    if nvdimms:
        lines += [f"modprobe -a {' '.join(NVDIMM_MODULES)}",
                  _wait_for(f"/sys/bus/nd/devices/region{len(nvdimms) - 1}", "NVDIMM regions")]
        for index in range(len(nvdimms)):
            lines += [f"ndctl create-namespace --force --region=region{index} --mode=devdax --map=mem > /dev/null",
                      f"daxctl reconfigure-device --mode=system-ram --no-online dax{index}.0 > /dev/null"]
    if cxl:
        lines += [f"modprobe -a {' '.join(CXL_MODULES)}",
                  _wait_for(f"/sys/bus/cxl/devices/mem{len(cxl) - 1}", "CXL memory devices")]
        for index in range(len(cxl)):
            lines.append(f"cxl create-region --memdevs --decoder=decoder0.{index} --type=ram --ways=1 "
                         f"mem{index} > /dev/null")
    # ZONE_NORMAL, as a plain RAM node's memory is: with only movable memory off DRAM and no swap, a
    # workload filling DRAM leaves no room for the kernel's own pages (page tables, trace buffers)
    # and is OOM-killed instead of spilling over to the slow node.
    lines.append('for dev in /sys/bus/dax/devices/dax*; do daxctl online-memory --no-movable "${dev##*/}" > /dev/null; '
                 'done')
    return "\n".join(lines) + "\n"


def _wait_for(path: str, what: str) -> str:
    """Drivers probe asynchronously after modprobe returns."""
    return (f"for _ in $(seq 100); do [ -e {path} ] && break; sleep 0.1; done; "
            f"[ -e {path} ] || {{ echo 'bring-up: no {what} appeared ({path})' >&2; exit 1; }}")
