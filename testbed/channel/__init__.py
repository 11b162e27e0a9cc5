"""The channel: the host side of the guest daemon's protocol (``guest/PROTOCOL.md``).

:mod:`~testbed.channel.client` holds the connection and the typed calls of :class:`~testbed.channel.client.GuestClient`,
:mod:`~testbed.channel.replies` the reply types and their parsing, :mod:`~testbed.channel.transports` the line
channels a client runs over, and :mod:`~testbed.channel.errors` what a failed call raises.
"""
