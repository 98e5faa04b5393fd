"""TCP servers whose lifetime is a nursery: serve_tcp, open_tcp_server, TCPServer."""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from .._adapters.channel import DEFAULT_ABORT_TIMEOUT, MessageChannel
from .._adapters.listen import adopt_listening_sockets, bind_listening_sockets
from .._adapters.observe import Observer
from .._adapters.resolver import Resolver
from .._sansio.addresses import Address
from .._sansio.codecs import Codec
from .._sansio.framing import FrameT
from .._sansio.proxy import ProxyHeader
from .connection import TCPConnection
from .options import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    StreamServerOptions,
)
from .server_base import TCPServer, server_context
from .server_core import ServerCore

__all__ = ["TCPServer", "open_tcp_server", "serve_tcp"]

# A handler of connections whose messages are FrameT (bytes, or what the codec decodes).
TCPHandler = Callable[[TCPConnection[FrameT]], Awaitable[object]]


def _describe_peer(sockaddr: Any) -> Address:
    return Address.from_sockaddr(sockaddr)


async def serve_tcp(
    handler: TCPHandler[FrameT],
    port: int | None = None,
    *,
    sockets: Iterable[trio.socket.SocketType] | None = None,
    host: str | None = None,
    codec: Codec[FrameT] | None = None,
    max_connections: int | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES,
    end_idle_on_shutdown: bool = True,
    strict: bool = False,
    reuse_port: bool = False,
    backlog: int | None = None,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
    proxy_protocol: bool = False,
    resolver: Resolver | None = None,
    observer: Observer | None = None,
    task_status: trio.TaskStatus[TCPServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen for TCP connections and run ``handler(connection)`` for each one.

    Use it with ``nursery.start``, which returns the :class:`TCPServer` once the
    server listens::

        async def echo(conn: trionet.TCPConnection) -> None:
            async for message in conn.channel:
                await conn.channel.send(message)

        async with trio.open_nursery() as nursery:
            server: trionet.TCPServer = await nursery.start(
                functools.partial(trionet.serve_tcp, echo, 0, codec=trionet.Lines()))
            print("listening on port", server.port)

    or :func:`open_tcp_server` for an ``async with`` block.

    Args:
      handler: An async function called with a :class:`~trionet.TCPConnection`
          in a task of its own for each connection. The connection is closed
          when it returns.
      port: The port; 0 lets the system pick one (the same one for every
          address), which :attr:`TCPServer.port` reports.
      sockets: Instead of ``port`` and ``host``: listening sockets bound by
          someone else, such as a service manager (:func:`~trionet.listen_fds`
          for systemd socket activation) or a parent process that binds a
          privileged port. IPv4 or IPv6 stream sockets, already bound; one
          not yet listening is made to, with ``backlog``. The server owns
          them from now on and closes them when it stops.
      host: ``None`` (the default) listens on every interface of both IPv4 and
          IPv6 (``0.0.0.0`` and ``::`` with IPV6_V6ONLY, on one port). An IP
          address or a host name listens on it (every address it resolves to).
      codec: Frame messages with this codec: the connection's
          :attr:`~trionet.TCPConnection.channel` is then a
          :class:`~trionet.MessageChannel`. Without one, use its ``stream``.
      max_connections: At most this many connections are open at once. At the
          limit the server stops calling ``accept()``: further clients wait in
          the kernel's backlog (nothing is refused) and are accepted, in order,
          as handlers finish. ``None`` (the default): no limit but the process's
          file descriptors (running out of them is survived, see "Error
          handling").
      idle_timeout: Close a connection when no byte has moved in either
          direction for this many seconds (its handler is cancelled). 600 s by
          default (nginx's TCP proxy_timeout); ``None``: never. Over TLS only
          progress above TLS counts: with a codec the channel's application
          bytes, without one whole TLS records (a record trickled byte by byte
          is no progress).
      frame_timeout: With a codec: a message must be complete this many seconds
          after its first byte arrived (wall clock; over TLS, the first byte of
          the TLS record that begins it), or the channel's ``receive()`` raises
          :exc:`~trionet.FrameTimeout` (see :class:`~trionet.MessageChannel`).
          Together with ``idle_timeout`` it sheds slow-loris peers, which keep a
          connection busy by trickling bytes. 60 s by default (nginx's
          client_header_timeout); ``None``: no limit.
      abort_timeout: With a codec: seconds a message whose sending has started
          may take to finish after its handler is cancelled (an idle timeout
          that fired, an error elsewhere with ``strict=True``), before the
          channel aborts the connection; passed to each
          :class:`~trionet.MessageChannel` (10 s, its default). A shutdown whose
          grace has run out, or a cancelled server, does not wait for it: a
          connection blocked on a peer that does not read is reset then (see
          :meth:`TCPServer.shutdown`).
      ssl_context: Serve TLS over TCP with this server-side context (a
          :class:`trio.SSLStream` is the connection's stream).
      tls_handshake_timeout: Seconds a client may take to complete the TLS
          handshake before it is disconnected (10 s by default, as Go's
          ``http.DefaultTransport``). The handler does not run for a
          connection whose handshake failed or timed out. A timed-out
          handshake counts in ``connections_shed`` (reason
          ``"tls_handshake_timeout"``), a failed one in ``handshake_failures``.
      max_pending_handshakes: With ``ssl_context``: at most this many
          connections are in their TLS handshake at once (128 by default);
          beyond it accepting pauses, as at ``max_connections``, until one
          finishes. ``None``: no limit.
      end_idle_on_shutdown: ``True`` (the default): when a graceful shutdown
          begins, each connection's channel ends its receiving direction at the
          next frame boundary (:meth:`~trionet.MessageChannel.end_when_idle`): a
          handler waiting in ``receive()`` with nothing buffered, or calling it
          later, gets :exc:`trio.EndOfChannel`, so idle keep-alive connections
          end at once and busy ones after their current message, as Go's
          ``Server.Shutdown``. ``False``: channels are left alone, and every
          handler may use the whole grace. Handlers of raw streams can wait for
          :meth:`~trionet.TCPConnection.wait_shutdown_requested` either way.
      strict: What a handler's exception does. ``False`` (the default): the
          connection is closed, the exception is logged through the
          ``trionet.server`` logger with the peer's address, and the server
          keeps serving. ``True``: it propagates as in any nursery: every other
          connection is cancelled and the exception comes out of the nursery
          that runs the server. See "Error handling".
      reuse_port: Set SO_REUSEPORT, so that several processes (one trio loop
          each) can listen on the same port; the kernel spreads connections
          among them.
      backlog: The listen backlog, a positive int (the system caps it at its
          maximum, ``net.core.somaxconn`` on Linux); ``None`` for the system's
          maximum.
      shutdown_grace: The grace of a :meth:`~TCPServer.shutdown` called
          without one, and of the shutdown that ends :func:`open_tcp_server`'s
          block: seconds the handlers may go on after a graceful shutdown
          begins (30 s by default, as gunicorn's graceful_timeout and
          Kubernetes' terminationGracePeriodSeconds).
      proxy_protocol: ``True`` behind a load balancer that sends the PROXY
          protocol header before the client's bytes (and before TLS): HAProxy's
          ``send-proxy`` or ``send-proxy-v2``, an AWS Network Load Balancer
          with proxy protocol v2, nginx's ``proxy_protocol on``. The server
          reads it (version 1 or 2) before anything else, and the connection's
          ``peer`` and ``local`` are the client's and the front end's addresses
          it names (:attr:`~trionet.TCPConnection.proxy` holds the header). A
          connection that does not begin with a well-formed header within
          10 s is closed before the handler runs and counted in
          ``connections_shed`` (reason ``"proxy_protocol"``, logged at INFO
          with the :exc:`~trionet.ProxyProtocolError`). Only for a server that
          nothing but the balancer can reach: a header is a claim, and any
          client could make it.
      resolver: The :class:`~trionet.Resolver` for a ``host`` name (the
          default one if ``None``).
      observer: Receives an :class:`~trionet.Event` for each step; see "Events".
      task_status: For ``nursery.start``, which returns the :class:`TCPServer`.

    Returns:
      After :meth:`TCPServer.shutdown` has completed (it never returns otherwise).

    Raises:
      OSError: A listening socket could not be opened (for example
          ``EADDRINUSE``); or ``accept()`` failed in a way that is not about
          capacity (capacity errors are survived, see "Error handling").
      ValueError: An option is out of range (a count below 1, a timeout not
          positive).
      TypeError: An option has the wrong type (``max_connections=True`` is not
          a count).
      ResolutionError: ``host`` could not be resolved.

    Error handling:
      A handler exception is a bug in the handler or a misbehaving peer; by
      default it ends one connection, not the server. Exceptions caused by the
      peer (:exc:`trio.BrokenResourceError`, :exc:`trio.EndOfChannel`,
      :exc:`~trionet.FramingError`) are logged at DEBUG without a traceback,
      also when they reach the server in an exception group (a handler that
      runs a nursery of its own) made only of such errors: a busy server sees
      resets all the time, and the INFO line it logs when it stops counts
      them by type. Others are logged at ERROR with a traceback (rate-limited
      per peer host and error type). The logger is ``trionet.server``; it
      also says, at INFO, where the server listens when it starts. This is the one place trionet departs from
      structured concurrency's rule that errors propagate: a server that dies
      because one client sent garbage is not what anyone wants. ``strict=True``
      restores the rule, which is right in tests and where a handler error means
      the process's state can no longer be trusted.

      ``accept()`` failing with EMFILE, ENFILE, ENOBUFS or ENOMEM (out of file
      descriptors or kernel memory) does not stop the server: it logs a warning,
      waits 5 ms, doubling up to 1 s while the errors continue (as Go's
      net/http), and resets the delay after the next successful accept. Errors
      about a single connection (reset before it was accepted) are skipped.

    Events:
      Reported to ``observer`` as ``tcp.<name>``: ``listening`` (addresses),
      ``accept`` (peer, active), ``paused`` (active, limit: accepting paused
      at ``max_connections`` or ``max_pending_handshakes``), ``resumed``
      (active), ``shed`` (peer, reason: ``"idle_timeout"``,
      ``"tls_handshake_timeout"``, or ``"proxy_protocol"`` with its ``error``),
      ``handshake_failed`` (peer, error), ``handler_error`` (peer, error),
      ``closed`` (peer, duration, bytes_in, bytes_out), ``accept_error``
      (errno, delay), ``shutdown.begin`` (grace, active),
      ``shutdown.grace_expired`` (cancelled: how many handlers),
      ``shutdown.done``.

    Cancellation:
      Cancelling the surrounding scope stops the server at once: accepting
      stops, every handler is cancelled, every connection and listening socket
      is closed, with no grace period. A connection whose send is blocked
      because the peer stopped reading is reset (a TCP RST), so that the frame
      in flight does not hold the server for ``abort_timeout``. The statistics
      and the ``closed`` events still count every connection. Use
      :meth:`TCPServer.shutdown` for a graceful stop.
    """
    options = StreamServerOptions(
        codec=codec,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        abort_timeout=abort_timeout,
        ssl_context=ssl_context,
        tls_handshake_timeout=tls_handshake_timeout,
        max_pending_handshakes=max_pending_handshakes,
        end_idle_on_shutdown=end_idle_on_shutdown,
        strict=strict,
        shutdown_grace=shutdown_grace,
        proxy_protocol=proxy_protocol,
        observer=observer,
    )
    core: ServerCore[TCPConnection[FrameT]] = ServerCore(
        handler, options, kind="tcp", describe_peer=_describe_peer
    )
    if sockets is not None:
        if port is not None or host is not None:
            raise TypeError("serve_tcp takes sockets= or a port (and host), not both")
        listeners = adopt_listening_sockets(sockets, backlog=backlog)
    elif port is None:
        raise TypeError("serve_tcp needs a port (0: any free one) or sockets=")
    else:
        listeners = await bind_listening_sockets(
            port, host=host, backlog=backlog, reuse_port=reuse_port, resolver=resolver
        )  # validates backlog
    try:
        addresses = tuple(Address.from_sockaddr(sock.getsockname()) for sock in listeners)
        server = TCPServer(core, addresses)
    except BaseException:
        for sock in listeners:
            sock.close()
        raise

    def make_connection(
        stream: trio.abc.Stream,
        sock: trio.socket.SocketType,
        peer: Any,
        channel: MessageChannel[Any] | None,
        proxy: ProxyHeader | None,
    ) -> TCPConnection[FrameT]:
        return TCPConnection(stream, socket=sock, peer=peer, channel=channel, server=server,
                             proxy=proxy)

    await core.run(
        listeners,
        make_connection,
        server,
        task_status,
        listening=tuple(str(address) for address in addresses),
    )


open_tcp_server = server_context(serve_tcp, TCPServer, "open_tcp_server", """\
    Run a TCP server for the duration of an ``async with`` block.

    ::

        async with trionet.open_tcp_server(echo, 0, codec=trionet.Lines()) as server:
            ...  # the server runs here, in a nursery of its own

    It takes the arguments of :func:`{serve}` (without ``task_status``), with
    the same defaults and meanings:

{args}

    Yields:
      The :class:`TCPServer`, listening.

    Raises:
      The block's own exception, unchanged (not in an exception group); the
      server is then cancelled at once, without grace. A handler's exception
      with ``strict=True`` comes out in an exception group, as from a nursery.
      The exceptions of :func:`{serve}` when the server cannot start.

    Cancellation:
      Cancelling the surrounding scope stops the server at once, as for
      :func:`{serve}`. Leaving the block normally shuts the server down with
      its ``shutdown_grace``; a cancellation during that wait cancels the
      remaining handlers.
    """)
