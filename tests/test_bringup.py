from testbed.bringup import bringup_script
from testbed.catalog import default_catalog


def test_plain_ram_systems_need_no_bringup() -> None:
    assert bringup_script(default_catalog().load_system("dram-cxl")) is None


def test_nvdimm_becomes_system_ram() -> None:
    script = bringup_script(default_catalog().load_system("three-tier")) or ""
    assert "echo offline > /sys/devices/system/memory/auto_online_blocks" in script
    assert "ndctl create-namespace --force --region=region0 --mode=devdax --map=mem" in script
    assert "daxctl reconfigure-device --mode=system-ram --no-online dax0.0" in script
    assert "cxl create-region" not in script
    assert script.index("auto_online_blocks") < script.index("daxctl reconfigure-device")


def test_cxl_type3_gets_a_ram_region_from_its_window() -> None:
    script = bringup_script(default_catalog().load_system("cxl-type3")) or ""
    assert "modprobe -a cxl_acpi cxl_pci cxl_mem dax_cxl kmem" in script
    assert "/sys/bus/cxl/devices/mem0" in script
    assert "cxl create-region --memdevs --decoder=decoder0.0 --type=ram --ways=1 mem0" in script
    assert script.rstrip().endswith("done")  # every DAX device onlined last
    assert "daxctl online-memory --no-movable" in script  # the kernel may use it too: no OOM when DRAM fills
