"""A running VM as another project's tests use it: run a command, move files, ask what the guest sees.

A thin layer over ``testbed.vms.Vm``: commands and file transfers share the VM's
one SSH connection (each new one costs ~0.4 s under TCG), the NUMA view is the
guest daemon's, the check is ``llamas verify``'s. The pytest plugin
(testbed/pytest_plugin.py) hands these out; they work as well on their own:

    with VmHandle(up("dram-cxl", share="build/")) as vm:
        assert vm.run("/mnt/host/my-test --node 1").rc == 0
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from testbed.share import GUEST_MOUNT

if TYPE_CHECKING:
    from testbed.channel.replies import NodeInfo
    from testbed.ssh import CommandResult
    from testbed.verify import Report
    from testbed.vms import Vm

DMESG_TIMEOUT = 30.0


class VmHandle:
    """A context manager: leaving the block takes the VM down."""

    def __init__(self, vm: Vm) -> None:
        self.vm = vm

    @property
    def name(self) -> str:
        return self.vm.name

    @property
    def share(self) -> str | None:
        """Where the guest sees the shared host directory, if the VM has one."""
        return GUEST_MOUNT if self.vm.record.share else None

    def run(self, command: str | Sequence[str], timeout: float = 120.0) -> CommandResult:
        """Run ``command`` in the guest as root; a failing command is a result (``rc``), not an error.

        A string goes to the guest's shell as written; a sequence is quoted word by word.
        """
        text = command if isinstance(command, str) else shlex.join(command)
        return self.vm.shell().run(text, timeout=timeout, check=False)

    def put(self, local: str | Path, remote: str) -> None:
        """Copy the host file ``local`` to ``remote`` in the guest."""
        with self.vm.shell().sftp() as sftp:
            sftp.put(str(local), remote)

    def get(self, remote: str, local: str | Path) -> None:
        """Copy the guest file ``remote`` to ``local`` on the host."""
        with self.vm.shell().sftp() as sftp:
            sftp.get(remote, str(local))

    def numa(self) -> list[NodeInfo]:
        """The guest's NUMA nodes as its kernel reports them: size, free, CPUs, memory tier, HMAT, distances."""
        with self.vm.guest() as guest:
            return guest.nodes()

    def verify(self) -> Report:
        """Expected (the system's YAML) against seen, check by check; ``.ok`` when all pass."""
        from testbed.verify import verify_vm

        return verify_vm(self.vm)

    def dmesg(self) -> str:
        return self.vm.shell().run("dmesg", timeout=DMESG_TIMEOUT).stdout

    def alive(self) -> bool:
        return self.vm.alive()

    def down(self) -> None:
        self.vm.down()

    def __enter__(self) -> VmHandle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()
