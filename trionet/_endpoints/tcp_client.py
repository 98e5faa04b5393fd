"""connect_tcp: a TCP client connection, raced over every address as RFC 8305 says."""

from __future__ import annotations

import contextlib
import math
import socket
import ssl
from dataclasses import dataclass
from typing import Final

import trio

from .._adapters.channel import DEFAULT_ABORT_TIMEOUT, DEFAULT_READ_SIZE, MessageChannel
from .._adapters.happy_eyeballs_input import RESOLUTION_DELAY, FamilyAnswer, resolve_happy_eyeballs
from .._adapters.observe import Observer, emit, emit_at
from .._adapters.resolver import Resolver, _check_request
from .._sansio.addresses import Address
from .._sansio.codecs import Codec
from .._sansio.framing import FrameT
from .._sansio.happy_eyeballs import CONNECTION_ATTEMPT_DELAY, ConnectAttempt, HappyEyeballs
from .._sansio.ordering import interleave_families
from ..errors import ConnectError, ResolutionError
from .client_tls import start_tls
from .connection import TCPConnection

# Seconds a TLS handshake may take before the connection is given up: as for
# servers (trio's open_ssl_over_tcp_stream has no limit, which lets a silent
# server hold a client).
from .options import DEFAULT_FRAME_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT

__all__ = ["ConnectAttempt", "connect_tcp"]

# RFC 8305 section 5's Connection Attempt Delay, 250 ms (as trio's open_tcp_stream).
HAPPY_EYEBALLS_DELAY: Final = CONNECTION_ATTEMPT_DELAY
# Linux's IP_BIND_ADDRESS_NO_PORT (include/uapi/linux/in.h), which Python's
# socket module exports only from 3.12 on. With it, bind() to a local address
# leaves the port to connect(), which can then reuse a port for different
# destinations; without it, every bound socket takes a port of its own, and a
# client making many connections from one address runs out (trio sets it too).
IP_BIND_ADDRESS_NO_PORT: Final = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)

# RFC 8305 in brief, and where each part is done:
#
# Section 3, asynchronous resolution: the AAAA and A queries go out together, and
# an A answer that comes first waits up to 50 ms (the Resolution Delay) for the
# AAAA one. resolve_happy_eyeballs() does this and sends each family's answer as
# it arrives; we start connecting on the first answer instead of waiting for both.
#
# Sections 4 and 5, the order of the addresses (answers that arrive late merged
# into the addresses not tried yet) and when each attempt starts (every 250 ms,
# or at once when one fails; the first to connect wins): HappyEyeballs in
# _sansio/happy_eyeballs.py decides, fed events and times, and _race() below
# only drives it with trio. The driver keeps what needs I/O: each attempt runs
# in a task of its own, every losing or cancelled attempt's socket is closed,
# and a socket() that fails for one family is that attempt's failure.
#
# Section 6, DNS64/NAT64 synthesis, and section 7's hostname-literal handling
# are left to the system resolver.


@dataclass(slots=True)
class _Race:
    """One connect_tcp call's race: the state machine, and what only the trio side holds."""

    machine: HappyEyeballs
    lookup_errors: list[tuple[int, ResolutionError]]
    winner: tuple[trio.socket.SocketType, Address] | None = None


async def connect_tcp(
    host: str,
    port: int,
    *,
    codec: Codec[FrameT] | None = None,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
    read_size: int = DEFAULT_READ_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    happy_eyeballs_delay: float | None = HAPPY_EYEBALLS_DELAY,
    resolution_delay: float = RESOLUTION_DELAY,
    first_address_family_count: int = 1,
    connect_timeout: float | None = None,
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    local: str | None = None,
    resolver: Resolver | None = None,
    observer: Observer | None = None,
) -> TCPConnection[FrameT]:
    """Open a TCP connection to ``host``, racing its addresses (Happy Eyeballs, RFC 8305).

    The IPv6 and IPv4 lookups run in parallel, and attempts start as soon as the
    first answer is in (an IPv4 answer waits up to ``resolution_delay`` for the
    IPv6 one). Addresses are tried with the families interleaved, keeping the
    first family's preference; a new attempt starts every ``happy_eyeballs_delay``
    seconds, or at once when an attempt fails. The first connection wins; the
    other attempts are cancelled and their sockets closed.

    Example::

        async with await trionet.connect_tcp("example.net", 7000, codec=trionet.Lines()) as conn:
            await conn.channel.send(b"hello")

    Args:
      host: A host name or an IP address literal.
      port: The port, 0-65535.
      codec: If given, the connection's :attr:`~TCPConnection.channel` is a
          :class:`~trionet.MessageChannel` with this codec.
      frame_timeout, abort_timeout, read_size: With a codec, passed to the
          :class:`~trionet.MessageChannel`. ``frame_timeout`` defaults to 60 s,
          as for servers (:data:`~trionet.DEFAULT_FRAME_TIMEOUT`): a peer
          trickling a reply byte by byte cannot hold the client for ever;
          ``None`` turns it off. ``abort_timeout`` and ``read_size`` default
          to the channel's (10 s, 64 KiB).
      ssl_context: If given, TLS runs over the connection (a :class:`trio.SSLStream`)
          and the handshake completes before this returns.
      server_hostname: The name to check the server's certificate against;
          ``host`` by default.
      happy_eyeballs_delay: Seconds between the starts of attempts. RFC 8305's
          bounds apply: it is raised to 10 ms and capped at 2 s. ``None`` makes
          attempts strictly one after another, each after the previous failed.
      resolution_delay: How long a first IPv4 answer waits for the IPv6 one.
      first_address_family_count: How many addresses of the first family to try
          before the other family (RFC 8305 section 4).
      connect_timeout: Seconds for the whole connect (lookups, attempts and TLS
          handshake), or ``None`` for no limit. It is the same as wrapping the
          call in :func:`trio.fail_after`, but the error names each attempt.
      tls_handshake_timeout: Seconds the TLS handshake may take.
      local: An IP address to connect from; only addresses of its
          family are tried (if it rules every address out, the
          :exc:`~trionet.ConnectError` says so). The port is chosen at
          connect time (``IP_BIND_ADDRESS_NO_PORT`` on Linux, as trio does),
          so many connections from one address to different servers can
          share local ports.
      resolver: The :class:`~trionet.Resolver` to use (the default one if ``None``).
      observer: Receives events: ``tcp.connect.answer`` (family, addresses, error,
          held: a family's lookup answered; the event's time is when the answer
          arrived, ``held`` how many seconds the resolution delay kept it back
          before it was used), ``tcp.connect.attempt`` (address: started),
          ``tcp.connect.failed`` (address, error), ``tcp.connect.won`` (address, after:
          seconds since that attempt started) and ``tcp.connect.cancelled``
          (address: a losing attempt closed).

    Returns:
      A :class:`TCPConnection` whose ``server`` is ``None``.

    Raises:
      ResolutionError: Neither family resolved (the message has both reasons).
      ConnectError: Every attempt failed, or ``connect_timeout`` passed; its
          ``attempts`` lists each :class:`ConnectAttempt` with its address,
          time and cause. It is an :exc:`OSError`.
      trio.BrokenResourceError: The TLS handshake failed (for example the
          certificate does not match); the message names the address and
          the reason, and ``__cause__`` is the :exc:`ssl.SSLError`.
      trio.TooSlowError: The TLS handshake took longer than ``tls_handshake_timeout``.
      AddressError: ``host`` or ``port`` is malformed: ``host`` is checked as
          :meth:`Resolver.resolve` checks it (an IPv6 literal may be written
          in brackets, ``"[::1]"``), before anything is looked up.

    Cancellation:
      Cancelling it cancels the lookups and every attempt, and closes every
      socket it opened; nothing is left running.
    """
    if happy_eyeballs_delay is not None and not happy_eyeballs_delay >= 0:
        raise ValueError(f"happy_eyeballs_delay must be >= 0 or None, not {happy_eyeballs_delay!r}")
    # Every argument is checked here, before the nursery: an error raised in
    # one of its tasks would come out wrapped in an ExceptionGroup.
    host, name, port = _check_request(host, port, 0)
    if not resolution_delay >= 0:
        raise ValueError(f"resolution_delay must be >= 0, not {resolution_delay!r}")
    interleave_families([], first_address_family_count=first_address_family_count)  # checks it
    source = Address.parse(local, default_port=0) if local is not None else None
    if source is not None:
        source.to_sockaddr()  # AddressError now for a zone that names an interface
    machine = HappyEyeballs(
        attempt_delay=happy_eyeballs_delay,
        first_address_family_count=first_address_family_count,
        family=None if source is None else source.family,
    )
    race = _Race(machine, lookup_errors=[])
    began = trio.current_time()
    deadline = math.inf if connect_timeout is None else began + connect_timeout

    with trio.move_on_at(deadline) as timeout_scope:
        await _race(host, port, race, resolution_delay, source, resolver, observer)
    if race.winner is None:
        timed_out = connect_timeout if timeout_scope.cancelled_caught else None
        if not machine.addresses and not machine.ruled_out and race.lookup_errors and timed_out is None:
            raise _resolution_error(host, port, race.lookup_errors)
        raise _connect_error(host, port, machine.give_up(), machine.ruled_out, began, timed_out, source)
    sock, address = race.winner
    try:
        stream: trio.abc.Stream = trio.SocketStream(sock)
    except BaseException:
        sock.close()
        raise
    try:
        if ssl_context is not None:
            # The ssl module encodes a str server_hostname with IDNA 2003;
            # the lookup form is already ASCII (IDNA 2008, as the lookup used).
            with trio.move_on_at(deadline) as timeout_scope:
                stream = await start_tls(stream, ssl_context, server_hostname or name,
                                         tls_handshake_timeout, address)
            if timeout_scope.cancelled_caught:
                raise _connect_error(
                    host, port, machine.attempts, machine.ruled_out, began, connect_timeout, source
                )
        channel = None if codec is None else MessageChannel(
            stream, codec, frame_timeout=frame_timeout, abort_timeout=abort_timeout,
            read_size=read_size,
        )
        return TCPConnection(stream, socket=sock, peer=address, channel=channel)
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise


async def _race(
    host: str,
    port: int,
    race: _Race,
    resolution_delay: float,
    local: Address | None,
    resolver: Resolver | None,
    observer: Observer | None,
) -> None:
    """Drive ``race.machine`` until it is done: a winner in ``race.winner``, or every attempt failed.

    Resource handling:
      Each attempt runs in a task of this function's nursery and closes its
      own socket unless it wins; the winner cancels the nursery, so the losers
      close theirs. The winning socket is the caller's to close.
    """
    machine = race.machine
    # Everything that may let a new attempt start arrives on one channel: each
    # family's answer, each failed attempt (already fed to the machine by its
    # task), and None when the lookups are over.
    wake_send, wake = trio.open_memory_channel[FamilyAnswer | ConnectAttempt | None](math.inf)

    async def look_up() -> None:
        await resolve_happy_eyeballs(
            host, port, wake_send.clone(), resolution_delay=resolution_delay, resolver=resolver
        )
        wake_send.send_nowait(None)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(look_up)
        while True:
            address = machine.next_attempt(trio.current_time())
            if address is not None:
                nursery.start_soon(_attempt, address, local, race, wake_send, nursery, observer)
                continue
            if machine.done:
                return  # won (the winner cancelled the nursery), or every attempt failed
            wakeup = machine.next_wakeup()
            with trio.move_on_at(math.inf if wakeup is None else wakeup):
                event = await wake.receive()
                if event is None:
                    machine.on_lookups_done()
                elif isinstance(event, FamilyAnswer):
                    # Shown when it arrived; "held" says how long the resolution
                    # delay kept it back (RFC 8305 section 3).
                    emit_at(
                        observer, event.answered_at, "tcp.connect.answer",
                        family=_family_name(event.family),
                        addresses=", ".join(map(str, event.addresses)) or "-", error=event.error,
                        held=event.held,
                    )
                    if event.error is not None:
                        race.lookup_errors.append((event.family, event.error))
                    machine.on_addresses(event.addresses, trio.current_time())


async def _attempt(
    address: Address,
    local: Address | None,
    race: _Race,
    wake: trio.MemorySendChannel[FamilyAnswer | ConnectAttempt | None],
    nursery: trio.Nursery,
    observer: Observer | None,
) -> None:
    started = trio.current_time()
    emit(observer, "tcp.connect.attempt", address=address)
    sock: trio.socket.SocketType | None = None
    try:
        # Inside the try: socket() fails for one family on a host without
        # IPv6 (EAFNOSUPPORT), or at EMFILE; that is this attempt's failure,
        # and the next address is tried.
        sock = trio.socket.socket(address.family, socket.SOCK_STREAM)
        if local is not None:
            if local.port == 0:
                with contextlib.suppress(OSError, AttributeError):  # not Linux, or a custom socket
                    sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            await sock.bind(local.to_sockaddr())
        await sock.connect(address.to_sockaddr())
    except OSError as exc:
        if sock is not None:
            sock.close()
        attempt = race.machine.on_failure(address, exc, trio.current_time())
        emit(observer, "tcp.connect.failed", address=address, error=exc)
        wake.send_nowait(attempt)
        return
    except BaseException:
        # Cancelled: another attempt won, or the whole connect was cancelled.
        # The machine keeps it as unfinished (ended_at None), which is how a
        # ConnectError reports it.
        if sock is not None:
            sock.close()
        emit(observer, "tcp.connect.cancelled", address=address)
        raise
    if race.machine.on_success(address, trio.current_time()) is None:
        sock.close()  # another attempt connected in the same instant
        emit(observer, "tcp.connect.cancelled", address=address)
        return
    race.winner = (sock, address)
    emit(observer, "tcp.connect.won", address=address, after=trio.current_time() - started)
    nursery.cancel_scope.cancel()


def _resolution_error(host: str, port: int, errors: list[tuple[int, ResolutionError]]) -> ResolutionError:
    if len(errors) == 1:
        return errors[0][1]
    # IPv6 first whichever answered first, so that the message is the same each run.
    ordered = sorted(errors, key=lambda item: item[0] != socket.AF_INET6)
    reasons = "; ".join(f"{_family_name(family)}: {error.reason}" for family, error in ordered)
    error = ResolutionError(host, port, reasons)
    error.__cause__ = ordered[0][1]
    return error


def _family_name(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


def _connect_error(
    host: str,
    port: int,
    attempts: tuple[ConnectAttempt, ...],
    ruled_out: tuple[Address, ...],
    began: float,
    timeout: float | None,
    local: Address | None,
) -> ConnectError:
    if timeout is not None:
        head = f"no connection to {host!r} port {port} within connect_timeout={timeout}s"
    elif not attempts and ruled_out and local is not None:
        families = sorted({_family_name(address.family) for address in ruled_out})
        head = (
            f"no address of {host!r} port {port} to connect to: local={local.host!r} is "
            f"{_family_name(local.family)}, which rules out every address found ("
            f"{' and '.join(families)}: {', '.join(map(str, ruled_out))})"
        )
    elif not attempts:
        head = f"no address of {host!r} port {port} to connect to"
    elif len(attempts) == 1:
        head = f"the connection attempt to {host!r} port {port} failed"
    else:
        head = f"all {len(attempts)} connection attempts to {host!r} port {port} failed"
    lines = [head + (":" if attempts else "")] + [
        f"  {attempt} (started {(attempt.started_at - began) * 1000:.0f} ms in)" for attempt in attempts
    ]
    error = ConnectError("\n".join(lines), attempts)
    causes = [attempt.error for attempt in attempts if isinstance(attempt.error, Exception)]
    if causes:
        error.__cause__ = causes[-1]
    return error
