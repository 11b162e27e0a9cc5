"""guestd: the daemon inside the VM that observes memory use and applies placements.

Standard library only (the guest has no pip). It speaks versioned JSON lines on
stdin/stdout, one request at a time; ``guest/PROTOCOL.md`` is the reference.
Run it as ``python3 -m guestd`` with this package's parent on ``PYTHONPATH``.
"""

PROTOCOL_VERSION = 1
