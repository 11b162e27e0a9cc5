"""What keeps a guest daemon call from returning a result: the errors the channel's callers catch.

Their own module because every part of the channel raises them: reply parsing (a malformed reply),
the connection (an error reply, a timeout) and the transports (a channel that is gone).
"""

from __future__ import annotations


class GuestdFailure(Exception):
    """Anything that kept a guest daemon call from returning a result."""


class GuestError(GuestdFailure):
    """The daemon answered with an error: ``code`` is an errno name (ESRCH, EINVAL, ...) or a protocol code."""

    def __init__(self, code: str, message: str, op: str) -> None:
        super().__init__(f"{op}: {code}: {message}")
        self.code = code
        self.message = message
        self.op = op


class ChannelClosed(GuestdFailure):
    """The channel to the daemon ended (and a reconnect did not make up for it)."""


class GuestTimeout(GuestdFailure):
    """No reply within the call's timeout; the request may still complete in the guest."""
