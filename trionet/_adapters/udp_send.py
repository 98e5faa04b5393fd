"""Sending on a UDP endpoint: destinations resolved once, and datagrams sent without a lost one.

:class:`DatagramSender` is the sending half of :class:`~trionet.UDPEndpoint`
(a base class, between :class:`~trionet._adapters.udp_receive.DatagramReceiver`
below it and :class:`~trionet._adapters.udp_request.DatagramRequester` above):
:meth:`~DatagramSender.send`, the cache of resolved destinations, the
non-blocking reply path of the servers, and ``_transmit``, the one send that a
request's transmissions and :meth:`~DatagramSender.send` share.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any, Final

import trio

from .._sansio.addresses import Address
from .._sansio.errors import AddressError
from ..errors import DatagramTooLarge
from .observe import Observer
from .resolver import Resolver
from .udp_options import EndpointOptions
from .udp_receive import DatagramReceiver
from .udp_socket import MAX_DATAGRAM_SIZE, AddressLike, OpenedSocket, cacheable, host_port, resolve_one

__all__ = ["DatagramSender", "Target"]

# Bound of the cache from destination arguments to resolved socket addresses.
_TARGET_CACHE_SIZE: Final = 4096

# A reply no larger than this fits a datagram of either family.
_SMALLEST_DATAGRAM_LIMIT: Final = min(MAX_DATAGRAM_SIZE.values())

Target = tuple[Address, Any, int]  # (peer, sockaddr or None when connected, size limit)


class DatagramSender(DatagramReceiver):
    """The sending half of a UDP endpoint (private base of :class:`~trionet.UDPEndpoint`)."""

    def __init__(
        self,
        opened: OpenedSocket,
        options: EndpointOptions,
        *,
        remote: Address | None,
        resolver: Resolver | None,
        observer: Observer | None,
    ) -> None:
        super().__init__(opened.sock, opened.nonblocking, remote=remote, options=options, observer=observer)
        self._family = opened.sock.family
        self._local = opened.local
        self._dual_stack = opened.dual_stack
        self._remote_target: Target | None = (
            None if remote is None else (remote, None, MAX_DATAGRAM_SIZE[remote.family])
        )
        self._resolver = resolver
        self._targets: dict[Hashable, Target] = {}
        self._sent = 0

    async def _target(self, address: AddressLike | None) -> Target:
        """The resolved destination for ``address`` (``None``: the connected peer)."""
        if address is None:
            if self._remote_target is None:
                raise AddressError("this endpoint is not connected: a destination address is needed")
            return self._remote_target
        try:
            target = self._targets.get(address)
        except TypeError:
            raise AddressError(f"not an address: {address!r}") from None
        if target is None and isinstance(address, Address) and self._remote_target is None:
            target = self._literal_target(address)  # no lookup, so no wait for the resolver
        if target is None:
            target = await self._resolve_target(address)
        return target

    async def _resolve_target(self, address: AddressLike) -> Target:
        host, port = host_port(address, what="destination")
        if host is None or port == 0:
            raise AddressError(f"a destination needs a host and a non-zero port, not {address!r}")
        family = 0 if self._dual_stack else self._family
        peer = await resolve_one(host, port, family=family, passive=False, resolver=self._resolver)
        if self._remote_target is not None:
            if peer != self._remote:
                raise AddressError(
                    f"this endpoint is connected to {self._remote}; it cannot send to {peer}"
                )
            return self._remote_target
        target = (peer, peer.to_sockaddr(family=self._family), MAX_DATAGRAM_SIZE[peer.family])
        if cacheable(address):
            if len(self._targets) >= _TARGET_CACHE_SIZE:
                self._targets.clear()
            self._targets[address] = target
        return target

    async def send(
        self, data: bytes | bytearray | memoryview, address: AddressLike | None = None
    ) -> None:
        """Send one datagram.

        Args:
          data: The payload.
          address: The destination: an :class:`~trionet.Address`, ``"host:port"``
              text or a ``(host, port)`` tuple; a host name is resolved through
              trionet's resolver (cached). ``None`` on a connected endpoint
              sends to its remote address.

        Raises:
          DatagramTooLarge: ``data`` is larger than the destination family can
              carry (65,507 bytes over IPv4, 65,527 over IPv6); nothing was sent.
          PeerUnreachable: A connected endpoint's peer was found unreachable.
          trio.ClosedResourceError: The endpoint is closed.
          AddressError: ``address`` is malformed, missing on an unconnected
              endpoint, or not the remote address of a connected one.
          ResolutionError: The host name could not be resolved.
          OSError: The system refused the datagram (no route, ...).

        Cancellation:
          If it raises :exc:`trio.Cancelled`, the datagram was not sent; if it
          returns, it was handed to the system (which may still lose it).
        """
        peer, sockaddr, limit = await self._target(address)
        size = data.nbytes if isinstance(data, memoryview) else len(data)
        if size > limit:
            raise DatagramTooLarge(size, limit)
        await self._transmit(data, sockaddr, peer)

    def _send_nowait(self, data: bytes, address: Address) -> bool:
        """Send ``data`` to ``address`` at once if nothing stands in the way; False if not sent.

        The servers' reply path (issue 11.4): a non-blocking ``sendto`` with no
        schedule point, for a worker whose loop already has one in ``receive()``.
        False when the datagram needs :meth:`send` (a custom socket without
        non-blocking calls, a destination not resolved yet, a full send buffer,
        too large).
        """
        raw = self._raw
        if raw is None or self._closed or self._remote_target is not None:
            return False
        target = self._targets.get(address)
        if target is None:
            target = self._literal_target(address)
        if target is None or len(data) > target[2]:
            return False
        try:
            raw.sendto(data, target[1])
        except BlockingIOError:
            return False
        except ConnectionRefusedError as exc:
            raise self._unreachable(target[0]) from exc
        self._sent += 1
        return True

    def _literal_target(self, address: Address) -> Target | None:
        """What :meth:`_resolve_target` makes of ``address``, made at once; ``None`` if it must resolve.

        Both :meth:`send` and the reply path take it. A reply's first datagram
        to a new peer would otherwise wait for the resolver (a schedule point,
        though an IP literal is no lookup), and the replies other workers sent
        meanwhile would overtake it: a burst of requests from one client was
        answered out of order.
        """
        family = address.family
        if address.port == 0 or address.scope_id or (not self._dual_stack and family != self._family):
            return None  # let send() resolve it, and raise what it raises
        peer = Address(address.host, address.port)
        target = (peer, peer.to_sockaddr(family=self._family), MAX_DATAGRAM_SIZE[family])
        if len(self._targets) >= _TARGET_CACHE_SIZE:
            self._targets.clear()
        self._targets[address] = target
        return target

    def _send_to_nowait(self, data: bytes, sockaddr: Any, address: Address) -> bool:
        """:meth:`_send_nowait` to ``sockaddr`` as a datagram came from it (no lookup).

        A server's reply goes back to the socket address its request came
        from; ``sockaddr`` is ``None`` when not known (then ``address`` is used).
        """
        raw = self._raw
        if (
            sockaddr is None or raw is None or self._closed or self._remote_target is not None
            or len(data) > _SMALLEST_DATAGRAM_LIMIT
        ):
            return self._send_nowait(data, address)
        try:
            raw.sendto(data, sockaddr)
        except BlockingIOError:
            return False
        except ConnectionRefusedError as exc:
            raise self._unreachable(address) from exc
        self._sent += 1
        return True

    async def _transmit(self, data: bytes | bytearray | memoryview, sockaddr: Any, peer: Address) -> None:
        """Send one datagram (``sockaddr`` None: to the connected peer); if cancelled, nothing was sent."""
        # trio's own sequence for a non-blocking call (trio._socket._try_sync):
        # a cancellation point before the system call, a cancel-shielded yield
        # after it; so a cancelled send sent nothing.
        await trio.lowlevel.checkpoint_if_cancelled()
        raw = self._raw
        try:
            self._check_open()
            if raw is None:
                if sockaddr is None:
                    await self._sock.send(data)
                else:
                    await self._sock.sendto(data, sockaddr)
                self._sent += 1
                return
            try:
                if sockaddr is None:
                    raw.send(data)
                else:
                    raw.sendto(data, sockaddr)
            except BlockingIOError:  # the send buffer is full: rare for UDP
                nonblocking = self._nonblocking
                assert nonblocking is not None
                while True:
                    await nonblocking.wait_writable()
                    try:
                        if sockaddr is None:
                            raw.send(data)
                        else:
                            raw.sendto(data, sockaddr)
                    except BlockingIOError:
                        continue
                    self._sent += 1
                    return
        except ConnectionRefusedError as exc:
            if raw is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
            raise self._unreachable(peer) from exc
        except BaseException:
            if raw is not None:
                await trio.lowlevel.cancel_shielded_checkpoint()
            raise
        self._sent += 1
        await trio.lowlevel.cancel_shielded_checkpoint()
