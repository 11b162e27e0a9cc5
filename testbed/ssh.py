"""SSH to a guest: loopback only, key-only, the guest's host key pinned from the image.

One paramiko connection per VM handle (each new connection costs ~0.4 s under
TCG); commands and the guest daemon's channel share it.
"""

from __future__ import annotations

import base64
import socket
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from testbed.channel.transports import LineBuffer
from testbed.errors import UserError

GUEST_HOST = "127.0.0.1"


class SshError(UserError):
    pass


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def rc(self) -> int:
        """The exit code by its short name, as a test asserts it (``assert vm.run(...).rc == 0``)."""
        return self.exit_code


def pinned_host_key(public_key_file: Path) -> paramiko.PKey:
    kind, data = public_key_file.read_text().split()[:2]
    if kind != "ssh-ed25519":
        raise SshError(f"{public_key_file}: expected an ssh-ed25519 host key, got {kind}")
    return paramiko.Ed25519Key(data=base64.b64decode(data))


def known_hosts_line(port: int, public_key_file: Path) -> str:
    """The pinned key in OpenSSH known_hosts form, for `llamas ssh` and users' own ssh."""
    kind, data = public_key_file.read_text().split()[:2]
    return f"[{GUEST_HOST}]:{port} {kind} {data}\n"


class GuestShell:
    """An open SSH connection to one guest."""

    def __init__(self, client: paramiko.SSHClient, port: int) -> None:
        self._client = client
        self.port = port

    @classmethod
    def connect(cls, port: int, client_key: Path, host_key: Path, timeout: float) -> GuestShell:
        """Connect, waiting up to ``timeout`` for sshd: a restored or just-booted guest may need a moment."""
        deadline = time.monotonic() + timeout
        sock = _socket_with_banner(port, deadline)
        client = paramiko.SSHClient()
        client.get_host_keys().add(f"[{GUEST_HOST}]:{port}", "ssh-ed25519", pinned_host_key(host_key))
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        remaining = max(1.0, deadline - time.monotonic())
        try:
            client.connect(GUEST_HOST, port=port, username="root", key_filename=str(client_key), sock=sock,
                           look_for_keys=False, allow_agent=False, timeout=remaining, banner_timeout=remaining,
                           auth_timeout=remaining)
        except paramiko.BadHostKeyException as error:
            client.close()
            raise SshError(f"guest on port {port} presented a host key that is not the image's pinned key "
                           f"({error}); refusing to connect") from None
        except (paramiko.SSHException, OSError, EOFError) as error:
            client.close()
            raise SshError(f"SSH to the guest on {GUEST_HOST}:{port} failed: {error}") from None
        return cls(client, port)

    def run(self, command: str, timeout: float = 120.0, check: bool = True) -> CommandResult:
        try:
            _, stdout, stderr = self._client.exec_command(command, timeout=timeout)
            out = stdout.read().decode(errors="replace")
            err = stderr.read().decode(errors="replace")
            code = stdout.channel.recv_exit_status()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise SshError(f"guest command failed to run ({error}): {command}") from None
        result = CommandResult(command, code, out, err)
        if check and code != 0:
            tail = "\n".join((err or out).strip().splitlines()[-10:])
            raise SshError(f"guest command exited {code}: {command}\n{tail}")
        return result

    def open_exec(self, command: str) -> ChannelTransport:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise SshError(f"the SSH connection to port {self.port} is closed")
        channel = transport.open_session()
        channel.exec_command(command)
        return ChannelTransport(channel)

    def sftp(self) -> paramiko.SFTPClient:
        """File transfer on a channel of this connection (the guest runs OpenSSH's sftp-server)."""
        try:
            return self._client.open_sftp()
        except (paramiko.SSHException, OSError, EOFError) as error:
            raise SshError(f"SFTP to the guest on port {self.port} failed: {error}") from None

    @property
    def alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def close(self) -> None:
        self._client.close()


def _socket_with_banner(port: int, deadline: float) -> socket.socket:
    """A TCP connection on which sshd has started talking.

    QEMU's user networking accepts connections before the guest's sshd listens
    (then resets them), so wait for the first bytes of the banner, peeking so
    paramiko still reads it, and retry until ``deadline``.
    """
    while True:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.settimeout(max(0.1, min(2.0, deadline - time.monotonic())))
        try:
            sock.connect((GUEST_HOST, port))
            if sock.recv(4, socket.MSG_PEEK) == b"SSH-":
                sock.settimeout(None)
                return sock
            problem = "the connection closed before sshd answered"
        except OSError as error:
            problem = str(error) or type(error).__name__
        sock.close()
        if time.monotonic() >= deadline:
            raise SshError(f"no SSH server answered on {GUEST_HOST}:{port}: {problem}")
        time.sleep(0.05)


class ChannelTransport:
    """Lines over one SSH exec channel: the guest daemon's stdin and stdout."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._lines = LineBuffer()

    def send_line(self, line: bytes) -> None:
        try:
            self._channel.sendall(line.rstrip(b"\n") + b"\n")
        except (OSError, EOFError) as error:
            raise SshError(f"guest daemon channel closed while sending: {error}") from None

    def recv_line(self, timeout: float) -> bytes | None:
        return self._lines.next_line(self._receive, timeout)

    def _receive(self, timeout: float) -> bytes:
        self._channel.settimeout(timeout)  # paramiko raises socket.timeout, which is TimeoutError
        return bytes(self._channel.recv(65536))

    def close(self) -> None:
        self._channel.close()
