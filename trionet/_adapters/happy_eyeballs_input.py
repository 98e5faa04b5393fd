"""The input side of Happy Eyeballs: each family's addresses as soon as they arrive.

RFC 8305 section 3 asks a client to send the AAAA and A queries at once and to
start connecting as soon as it has something to connect to, instead of waiting
for one combined answer (which trio, anyio and asyncio all do, through a
single getaddrinfo call):

    "Implementations SHOULD NOT wait for both families of answers to return
    before attempting connection establishment. If one query fails to return or
    takes significantly longer to return, waiting for the second address family
    can significantly delay the connection establishment of the first one."

and, so that IPv6 keeps its preference when the A answer happens to come back
first:

    "If a positive A response is received first due to reordering, the client
    SHOULD wait a short time for the AAAA response ... The recommended value
    for the Resolution Delay is 50 milliseconds."

A negative AAAA answer ends that wait at once: there is nothing to prefer.
getaddrinfo cannot send one query alone, so the two "queries" are two
getaddrinfo calls, with ``family=AF_INET6`` and ``family=AF_INET``, each
through a :class:`~trionet.Resolver` (cached and coalesced per family).

The answers go to a channel that the connector reads, from a task the
connector starts in its own nursery; so nothing runs once the connector's
nursery is done, and a connector that has won simply cancels it.
"""

from __future__ import annotations

import dataclasses
import socket
from dataclasses import dataclass
from typing import Final, final

import trio

from .._sansio.addresses import Address
from ..errors import ResolutionError
from .resolver import Resolver, _check_request, _literal, default_resolver

__all__ = ["RESOLUTION_DELAY", "FamilyAnswer", "resolve_happy_eyeballs"]

# RFC 8305 section 3: "The recommended value for the Resolution Delay is 50 milliseconds."
RESOLUTION_DELAY: Final = 0.05


@final
@dataclass(frozen=True, slots=True)
class FamilyAnswer:
    """One address family's answer, sent by :func:`resolve_happy_eyeballs`.

    Attributes:
      family: The family that was looked up: :data:`socket.AF_INET6` or
          :data:`socket.AF_INET`.
      addresses: The addresses found, in the system's order and with the
          requested port; empty if the lookup failed.
      error: Why the lookup failed, or ``None``.
      answered_at: :func:`trio.current_time` when the answer arrived, before
          any resolution delay held it back.
      released_at: When it was sent on: ``answered_at``, or later for an
          IPv4 answer that the resolution delay held back for the IPv6 one.
    """

    family: socket.AddressFamily
    addresses: tuple[Address, ...]
    error: ResolutionError | None
    answered_at: float
    released_at: float | None = None

    @property
    def held(self) -> float:
        """Seconds the resolution delay held the answer back (0 if it did not)."""
        return 0.0 if self.released_at is None else self.released_at - self.answered_at


async def resolve_happy_eyeballs(
    host: str,
    port: int,
    send_channel: trio.abc.SendChannel[FamilyAnswer],
    *,
    type: int = socket.SOCK_STREAM,
    flags: int = 0,
    resolution_delay: float = RESOLUTION_DELAY,
    resolver: Resolver | None = None,
) -> None:
    """Look up IPv6 and IPv4 in parallel and send each answer as it arrives.

    This is the input side of Happy Eyeballs (RFC 8305 section 3). The two
    lookups (``family=AF_INET6`` and ``family=AF_INET``, through
    :meth:`Resolver.resolve`, so with its cache, coalescing and hosts table)
    run at the same time. Each family's answer is sent on ``send_channel`` as
    a :class:`FamilyAnswer` when it arrives, except that a positive IPv4
    answer that arrives first is held for ``resolution_delay`` seconds, or
    until the IPv6 answer (positive or negative) arrives if that is sooner, so
    that IPv6 gets its chance to go first.

    Each family looked up sends exactly one answer, failures included (an IP
    literal is not looked up: it sends one answer, for its own family, at
    once); then ``send_channel`` is closed. The name resolved if at least one
    answer has addresses; otherwise each answer's ``error`` says why its
    family failed.

    Run it in the connector's nursery and receive until the channel ends::

        send, receive = trio.open_memory_channel[trionet.FamilyAnswer](2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(trionet.resolve_happy_eyeballs, host, port, send)
            async for answer in receive:
                if answer.error is None:
                    ...  # merge answer.addresses into the attempts not yet made
                    # (interleave_families keeps RFC 8305's order)

    A buffer of 2 means the lookups never wait for the connector.

    Args:
      host: A host name or an IP address.
      port: The port to put in each address, 0-65535.
      send_channel: Where answers go; this function closes it when done. If
          the receiving end is closed, the next answer ends the lookups.
      type: The socket type passed to getaddrinfo.
      flags: ``AI_*`` flags passed to getaddrinfo.
      resolution_delay: How long a first, positive IPv4 answer waits for the
          IPv6 one, in seconds (:data:`RESOLUTION_DELAY`, 50 ms, by default).
      resolver: The resolver to use (the run's :func:`default_resolver` if
          ``None``).

    Raises:
      AddressError: ``host`` is not a valid host name or IP address (see
          :meth:`Resolver.resolve`) or ``port`` is out of range (nothing is
          sent, and the channel is closed).
      ValueError: ``resolution_delay`` is negative.

    Cancellation:
      Cancelling it cancels the lookups it is waiting for (a lookup that other
      callers share still finishes for them, see :meth:`Resolver.resolve`),
      sends nothing more and closes ``send_channel``. No task is left running.
    """
    async with send_channel:
        host, name, port = _check_request(host, port, 0)
        if not resolution_delay >= 0:
            raise ValueError(f"resolution_delay must be >= 0, not {resolution_delay!r}")
        if resolver is None:
            resolver = default_resolver()
        literal = _literal(name)
        families = [socket.AF_INET6, socket.AF_INET] if literal is None else [literal.family]
        ipv6_settled = trio.Event()

        async def deliver(answer: FamilyAnswer) -> None:
            try:
                await send_channel.send(answer)
            except trio.BrokenResourceError:  # nobody listens any more: stop looking
                nursery.cancel_scope.cancel()

        async def look_up(family: socket.AddressFamily) -> None:
            try:
                found = await resolver.resolve(host, port, family=family, type=type, flags=flags)
            except ResolutionError as exc:
                answer = FamilyAnswer(family, (), exc, trio.current_time())
            except Exception as exc:  # a broken custom resolver: this family failed
                error = ResolutionError(host, port, f"the lookup raised {exc!r}")
                error.__cause__ = exc
                answer = FamilyAnswer(family, (), error, trio.current_time())
            else:
                answer = FamilyAnswer(family, tuple(found), None, trio.current_time())
            if family == socket.AF_INET6:
                await deliver(answer)
                ipv6_settled.set()
                return
            if answer.addresses and socket.AF_INET6 in families and not ipv6_settled.is_set():
                with trio.move_on_after(resolution_delay):
                    await ipv6_settled.wait()
                answer = dataclasses.replace(answer, released_at=trio.current_time())
            await deliver(answer)

        async with trio.open_nursery() as nursery:
            for family in families:
                nursery.start_soon(look_up, family)
