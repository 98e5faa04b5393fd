"""The records of UDP receiving: a received :class:`Datagram`, and who waits for one.

Kept apart from :mod:`trionet._adapters.udp_receive` (which dispatches
datagrams to waiters) so that the endpoint's parts share these small types
without importing each other.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, final

import trio

from .._sansio.addresses import Address

__all__ = ["Datagram", "PeerState", "Waiter"]


@final
class Datagram(NamedTuple):
    """One received datagram.

    Attributes:
      data: The payload.
      address: The sender, normalised (an IPv4 peer of a dual-stack endpoint is
          an IPv4 address, not ``::ffff:a.b.c.d``).
      truncated: ``True`` when the datagram was larger than the endpoint's
          ``max_receive_size``: ``data`` then holds only its first
          ``max_receive_size`` bytes, and the rest is lost. Such a datagram
          never answers a :meth:`~trionet.UDPEndpoint.request`.
    """

    data: bytes
    address: Address
    truncated: bool = False


@final
class Waiter:
    """A task waiting for a reply (a request) or for any datagram (a receiver)."""

    __slots__ = ("error", "match", "reply", "request", "task")

    def __init__(self, request: bool, match: Callable[[Datagram], bool] | None = None) -> None:
        self.request = request
        self.match = match
        self.reply: Datagram | None = None
        self.error: BaseException | None = None
        self.task: trio.lowlevel.Task | None = None


@final
class PeerState:
    """The requests in progress to one peer: their waiters and their turns."""

    __slots__ = ("outstanding", "turns", "waiters")

    def __init__(self) -> None:
        self.waiters: list[Waiter] = []
        self.outstanding = 0  # requests holding a turn (max_outstanding_per_peer)
        self.turns: trio.lowlevel.ParkingLot | None = None  # requests waiting for one

    def idle(self) -> bool:
        return not self.outstanding and not self.waiters and not (self.turns and len(self.turns))
