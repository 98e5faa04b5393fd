"""UDP servers whose lifetime is a nursery: serve_udp, open_udp_server, UDPServer.

A server is one endpoint and a fixed pool of ``max_concurrency`` worker tasks in
the task that ``nursery.start`` runs (``UDPServerCore``, in
:mod:`trionet._endpoints.udp_server_core`; :class:`~trionet.UDPServer` is the
handle on it). Each worker receives a datagram,
runs the handler and sends its reply, then receives again: concurrency is
bounded by the pool, with no task spawned per datagram. When every worker is
busy nobody reads the socket, and datagrams wait in the system's buffer (or are
dropped there, which is UDP's backpressure).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import final

import trio

from .._adapters.observe import Observer
from .._adapters.resolver import Resolver
from .._adapters.udp import (
    DEFAULT_MAX_RECEIVE_SIZE,
    DEFAULT_RECEIVE_QUEUE_BYTES,
    DEFAULT_RECEIVE_QUEUE_SIZE,
    UDPEndpoint,
    open_udp_endpoint,
)
from .._sansio.addresses import Address
from .._sansio.replies import (
    DEFAULT_REPLY_CACHE_BYTES,
    DEFAULT_REPLY_CACHE_LIFETIME,
    DEFAULT_REPLY_CACHE_SIZE,
    ReplyCache,
)
from .options import DEFAULT_MAX_CONCURRENCY, DEFAULT_SHUTDOWN_GRACE, RequestKey, UDPServerOptions
from .server_base import BaseServer, server_context
from .udp_server_core import UDPHandler, UDPServerCore
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

@final
class UDPServer(BaseServer):
    """A running UDP server, as returned by ``nursery.start(serve_udp, ...)``.

    Attributes:
      endpoint: The server's :class:`~trionet.UDPEndpoint`, for sending
          datagrams other than replies (it is closed when the server stops).
      addresses: The bound addresses, a tuple as :attr:`TCPServer.addresses`:
          one, ``[::]:port`` for a dual-stack server.
      port: The bound port.
    """

    __slots__ = ()

    _core: UDPServerCore

    def __init__(self, core: UDPServerCore) -> None:
        super().__init__(core)

    @property
    def endpoint(self) -> UDPEndpoint:
        """The server's endpoint."""
        return self._core.endpoint

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The bound addresses; see the class documentation."""
        return (self._core.endpoint.local,)

    @property
    def port(self) -> int:
        """The port the server is bound to."""
        return self._core.endpoint.local.port

    def statistics(self) -> UDPServerStatistics:
        """Return a :class:`UDPServerStatistics` snapshot."""
        return self._core.statistics()

    def __repr__(self) -> str:
        return f"<UDPServer {self._core.endpoint.local} active={self._core.active}>"


async def serve_udp(
    handler: UDPHandler,
    port: int | None = None,
    *,
    sockets: Iterable[trio.socket.SocketType] | None = None,
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
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    observer: Observer | None = None,
    task_status: trio.TaskStatus[UDPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Receive datagrams on ``port`` and answer each with ``handler(datagram)``.

    Use it with ``nursery.start``, which returns the :class:`UDPServer` once the
    socket is bound::

        async def echo(datagram: trionet.Datagram) -> bytes:
            return datagram.data

        async with trio.open_nursery() as nursery:
            server: trionet.UDPServer = await nursery.start(trionet.serve_udp, echo, 0)
            print("serving on port", server.port)

    Args:
      handler: An async function called with each :class:`~trionet.Datagram`;
          the bytes it returns are sent back to the datagram's sender (``None``:
          no reply). To send other datagrams use :attr:`UDPServer.endpoint`.
      port: The port; 0 lets the system pick one (see :attr:`UDPServer.port`).
      sockets: Instead of ``port`` and ``host``: one UDP socket bound by
          someone else, such as a service manager (:func:`~trionet.listen_fds`
          for systemd socket activation) or a parent process that binds a
          privileged port. The server owns it from now on and closes it when
          it stops.
      host: ``None`` (the default) binds every address of both IPv4 and IPv6
          with one dual-stack socket (IPv4 only where IPv6 is unavailable). An
          IP address or a host name binds it.
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
          the ``trionet.udp`` logger with the sender's address (at DEBUG
          without a traceback for a :exc:`~trionet.FramingError`, which the
          peer caused, or an exception group made only of them, counted in the
          INFO line the server logs when it stops;
          at ERROR with one otherwise), no reply is sent, and the server keeps
          serving. Logged records are escaped (no control character a peer
          sent reaches the log) and rate-limited per sender host and exception
          type: the first record with a traceback per 60 seconds, then one
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
      shutdown_grace: The grace of a :meth:`~UDPServer.shutdown` called
          without one, and of the shutdown that ends :func:`open_udp_server`'s
          block (30 s by default).
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
      Reported to ``observer``: ``udp.listening`` (addresses, as
      ``tcp.listening``),
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
    options = UDPServerOptions(
        max_concurrency=max_concurrency,
        request_key=request_key,
        strict=strict,
        shutdown_grace=shutdown_grace,
        observer=observer,
    )
    if not callable(handler):
        raise TypeError(f"handler must be an async callable, not {handler!r}")
    cache = ReplyCache(reply_cache_lifetime, reply_cache_size, reply_cache_bytes)
    adopted: trio.socket.SocketType | None = None
    local: tuple[str, int] | int | None = None
    if sockets is not None:
        if port is not None or host is not None or reuse_port:
            raise TypeError("serve_udp takes sockets= or a port (and host, reuse_port), not both")
        given = list(sockets)
        if len(given) != 1:
            raise ValueError(f"a UDP server serves one socket, not {len(given)}")
        adopted = given[0]
    elif port is None:
        raise TypeError("serve_udp needs a port (0: any free one) or sockets=")
    else:
        local = port if host is None else (host, port)
    async with open_udp_endpoint(
        local,
        sock=adopted,
        reuse_port=reuse_port,
        max_receive_size=max_receive_size,
        receive_queue_size=receive_queue_size,
        receive_queue_bytes=receive_queue_bytes,
        receive_buffer_size=receive_buffer_size,
        max_outstanding_per_peer=None,
        resolver=resolver,
        observer=observer,
    ) as endpoint:
        core = UDPServerCore(endpoint, handler, options, cache)
        await core.run(UDPServer(core), task_status)


open_udp_server = server_context(serve_udp, UDPServer, "open_udp_server", """\
    Run a UDP server for the duration of an ``async with`` block.

    ::

        async with trionet.open_udp_server(echo, 0) as server:
            ...  # the server runs here, in a nursery of its own

    It takes the arguments of :func:`{serve}` (without ``task_status``), with
    the same defaults and meanings:

{args}

    Yields:
      The :class:`UDPServer`, bound.

    Raises:
      The block's own exception, unchanged (not in an exception group); the
      server is then cancelled at once. A handler's exception with
      ``strict=True`` comes out in an exception group, as from a nursery.
      The exceptions of :func:`{serve}` when the server cannot start.

    Cancellation:
      Cancelling the surrounding scope stops the server at once, as for
      :func:`{serve}`. Leaving the block normally shuts the server down with
      its ``shutdown_grace``; a cancellation during that wait cancels the
      remaining handlers.
    """)
