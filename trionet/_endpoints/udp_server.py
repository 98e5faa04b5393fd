"""UDP servers whose lifetime is a nursery: serve_udp and open_udp_server.

A server is one endpoint and a fixed pool of ``max_concurrency`` worker tasks in
the task that ``nursery.start`` runs (:class:`~trionet.UDPServer`, in
:mod:`trionet._endpoints.udp_server_core`). Each worker receives a datagram,
runs the handler and sends its reply, then receives again: concurrency is
bounded by the pool, with no task spawned per datagram. When every worker is
busy nobody reads the socket, and datagrams wait in the system's buffer (or are
dropped there, which is UDP's backpressure).
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Final

import trio

from .._adapters.observe import Observer
from .._adapters.resolver import Resolver
from .._adapters.udp import (
    DEFAULT_MAX_RECEIVE_SIZE,
    DEFAULT_RECEIVE_QUEUE_BYTES,
    DEFAULT_RECEIVE_QUEUE_SIZE,
    open_udp_endpoint,
)
from .._sansio.replies import (
    DEFAULT_REPLY_CACHE_BYTES,
    DEFAULT_REPLY_CACHE_LIFETIME,
    DEFAULT_REPLY_CACHE_SIZE,
    ReplyCache,
)
from .server_base import DEFAULT_SHUTDOWN_GRACE, open_server
from .udp_server_core import RequestKey, UDPHandler
from .udp_server_core import UDPServer as UDPServer
from .udp_server_core import UDPServerStatistics as UDPServerStatistics

__all__ = [
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_REPLY_CACHE_BYTES",
    "DEFAULT_REPLY_CACHE_LIFETIME",
    "DEFAULT_REPLY_CACHE_SIZE",
    "UDPServer",
    "UDPServerStatistics",
    "open_udp_server",
    "serve_udp",
]

# trionet's choice: enough handlers in flight to hide the latency of a
# database or upstream call per request, few enough that a flood cannot make
# the server hold unbounded work (each worker is one trio task).
DEFAULT_MAX_CONCURRENCY: Final = 100


async def serve_udp(
    handler: UDPHandler,
    port: int,
    *,
    host: str | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    request_key: RequestKey | None = None,
    reply_cache_lifetime: float = DEFAULT_REPLY_CACHE_LIFETIME,
    reply_cache_size: int = DEFAULT_REPLY_CACHE_SIZE,
    reply_cache_bytes: int = DEFAULT_REPLY_CACHE_BYTES,
    strict: bool = False,
    reuse_port: bool = False,
    max_receive_size: int = DEFAULT_MAX_RECEIVE_SIZE,
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
    receive_buffer_size: int | None = None,
    resolver: Resolver | None = None,
    observer: Observer | None = None,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Receive datagrams on ``port`` and answer each with ``handler(datagram)``.

    Use it with ``nursery.start``, which returns the :class:`UDPServer` once the
    socket is bound::

        async def echo(datagram: trionet.Datagram) -> bytes:
            return datagram.data

        async with trio.open_nursery() as nursery:
            server = await nursery.start(trionet.serve_udp, echo, 0)
            print("serving on port", server.port)

    Args:
      handler: An async function called with each :class:`~trionet.Datagram`;
          the bytes it returns are sent back to the datagram's sender (``None``:
          no reply). To send other datagrams use :attr:`UDPServer.endpoint`.
      port: The port; 0 lets the system pick one (see :attr:`UDPServer.port`).
      host: ``None`` (the default) binds every address of both IPv4 and IPv6
          with one dual-stack socket (IPv4 only where IPv6 is unavailable, and
          on trionet's virtual network). An IP address or a host name binds it.
      max_concurrency: At most this many handlers run at once. At the limit
          the server stops reading its socket: datagrams wait in the system's
          buffer, which drops them when it is full, as UDP does.
      request_key: Turns duplicate suppression on: called with each datagram,
          it returns what identifies the request (a message id, say), or
          ``None`` for a datagram not to deduplicate. A datagram whose
          ``(sender, key)`` was answered less than ``reply_cache_lifetime``
          seconds ago gets the cached reply again, without running the handler;
          one whose handler is still running is dropped (the reply will answer
          it). Only replies that were sent are cached: a handler that raises or
          returns ``None``, or a reply that could not be sent, caches nothing,
          so a retransmission runs the handler again. An exception from
          ``request_key`` counts as a handler error.
      reply_cache_lifetime: How long a reply is replayed, in seconds: at least
          the longest time a client keeps retransmitting (CoAP's
          EXCHANGE_LIFETIME by default).
      reply_cache_size: The most replies cached.
      reply_cache_bytes: The most reply bytes cached (16 MiB by default).
          Past either bound, a sender holding more than its fair share of the
          cache loses its own oldest reply, else the oldest reply of all goes:
          a sender flooding new keys cannot evict another client's replies.
      strict: What a handler's exception does. ``False``: it is logged through
          the ``"trionet"`` logger with the sender's address (at INFO without a
          traceback for a :exc:`~trionet.FramingError`, which the peer caused;
          at ERROR with one otherwise), no reply is sent, and the server keeps
          serving. Logged records are escaped (no control character a peer
          sent reaches the log) and rate-limited per sender host and exception
          type: at most 5 records with a traceback per 60 seconds, then one
          line saying that similar records are suppressed, and a later record
          reports how many were; ``statistics().handler_errors`` counts every
          error. ``True``: it propagates, as in any nursery, and stops the
          server.
      reuse_port: Set SO_REUSEPORT, so several processes can serve the port.
      max_receive_size: The largest datagram handled, in bytes; a larger one is
          truncated, and dropped without running the handler.
      receive_queue_size, receive_queue_bytes, receive_buffer_size: As for
          :func:`~trionet.open_udp_endpoint`. A server that must absorb bursts
          while its handlers are busy needs a larger ``receive_buffer_size``.
      resolver: For a ``host`` name.
      observer: Receives an :class:`~trionet.Event` for each step; see "Events".
      task_status: For ``nursery.start``, which returns the :class:`UDPServer`.

    Returns:
      After :meth:`UDPServer.shutdown` has completed (it never returns otherwise).

    Raises:
      OSError: The socket could not be opened or bound (``EADDRINUSE``, ...).
      ValueError: An option is out of range.
      ResolutionError: ``host`` could not be resolved.

    Security:
      A UDP sender's address is whatever its datagram claims: anyone on the
      path can forge it. A datagram claiming to come from one of this host's
      own addresses on the server's port is dropped without running the
      handler (``from_self_dropped``, event ``udp.dropped``), so a forged
      datagram cannot make the server answer itself for ever. Replies go to
      the claimed sender, so a server whose replies are larger than its
      requests can be used to flood a third party: keep replies small for
      requests from unverified peers (see :doc:`/security`).

    Performance:
      A handler that never blocks runs inline, back to back, in one worker:
      datagrams are taken from the socket with no task switch each, and the
      reply goes out with one non-blocking ``sendto``. Whenever a handler
      starts with no other worker waiting for datagrams, one parked worker is
      woken, so a handler that blocks (an upstream call) does not hold up the
      next datagrams.

    Events:
      Reported to ``observer``: ``udp.listening`` (address),
      ``udp.handler_error`` (peer, error), ``udp.duplicate_replayed`` (peer,
      key), ``udp.duplicate_in_progress`` (peer, key), ``udp.shutdown.begin``
      (grace, active), ``udp.shutdown.grace_expired`` (cancelled),
      ``udp.shutdown.done``; and the endpoint's ``udp.truncated`` and
      ``udp.dropped``.

    Cancellation:
      Cancelling the surrounding scope stops the server at once: every handler
      is cancelled and the socket is closed, with no grace period. Use
      :meth:`UDPServer.shutdown` for a graceful stop.
    """
    if not isinstance(max_concurrency, int) or isinstance(max_concurrency, bool) or (
        max_concurrency < 1
    ):
        raise ValueError(f"max_concurrency must be an int >= 1, not {max_concurrency!r}")
    if not callable(handler):
        raise TypeError(f"handler must be an async callable, not {handler!r}")
    cache = ReplyCache(reply_cache_lifetime, reply_cache_size, reply_cache_bytes)
    local: tuple[str, int] | int = port if host is None else (host, port)
    async with open_udp_endpoint(
        local,
        reuse_port=reuse_port,
        max_receive_size=max_receive_size,
        receive_queue_size=receive_queue_size,
        receive_queue_bytes=receive_queue_bytes,
        receive_buffer_size=receive_buffer_size,
        max_outstanding_per_peer=None,
        resolver=resolver,
        observer=observer,
    ) as endpoint:
        server = UDPServer(
            endpoint,
            handler,
            max_concurrency=max_concurrency,
            request_key=request_key,
            cache=cache,
            strict=strict,
            observer=observer,
        )
        await server._run(task_status)


@asynccontextmanager
async def open_udp_server(
    handler: UDPHandler,
    port: int,
    *,
    host: str | None = None,
    max_concurrency: int = DEFAULT_MAX_CONCURRENCY,
    request_key: RequestKey | None = None,
    reply_cache_lifetime: float = DEFAULT_REPLY_CACHE_LIFETIME,
    reply_cache_size: int = DEFAULT_REPLY_CACHE_SIZE,
    reply_cache_bytes: int = DEFAULT_REPLY_CACHE_BYTES,
    strict: bool = False,
    reuse_port: bool = False,
    max_receive_size: int = DEFAULT_MAX_RECEIVE_SIZE,
    receive_queue_size: int = DEFAULT_RECEIVE_QUEUE_SIZE,
    receive_queue_bytes: int = DEFAULT_RECEIVE_QUEUE_BYTES,
    receive_buffer_size: int | None = None,
    resolver: Resolver | None = None,
    observer: Observer | None = None,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
) -> AsyncIterator[UDPServer]:
    """Run a UDP server for the duration of an ``async with`` block.

    ::

        async with trionet.open_udp_server(echo, 0) as server:
            ...  # the server runs here, in a nursery of its own

    Takes the arguments of :func:`serve_udp`, and:

    Args:
      shutdown_grace: When the block ends normally, the server shuts down as by
          ``await server.shutdown(grace=shutdown_grace)``.

    Yields:
      The :class:`UDPServer`, bound.

    Raises:
      The block's own exception, unchanged (not in an exception group); the
      server is then cancelled at once. A handler's exception with
      ``strict=True`` comes out in an exception group, as from a nursery.

    Cancellation:
      Cancelling the surrounding scope stops the server at once, as for
      :func:`serve_udp`. Leaving the block normally waits for the graceful
      shutdown; a cancellation during that wait cancels the remaining handlers.
    """
    serve = functools.partial(
        serve_udp,
        handler,
        port,
        host=host,
        max_concurrency=max_concurrency,
        request_key=request_key,
        reply_cache_lifetime=reply_cache_lifetime,
        reply_cache_size=reply_cache_size,
        reply_cache_bytes=reply_cache_bytes,
        strict=strict,
        reuse_port=reuse_port,
        max_receive_size=max_receive_size,
        receive_queue_size=receive_queue_size,
        receive_queue_bytes=receive_queue_bytes,
        receive_buffer_size=receive_buffer_size,
        resolver=resolver,
        observer=observer,
    )
    async with open_server(serve, shutdown_grace) as server:
        assert isinstance(server, UDPServer)
        yield server

