"""What every stream server shares: its defaults, its handle (TCPServer, UnixServer), statistics.

The handles sit below the machinery that runs a server (``server_core.py``) and
below the connection types (``connection.py``), which name them: they reach the
running server only through :class:`ServerControl`, the protocol that
``ServerCore`` implements.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, Final, Protocol, final

import trio

from .._sansio.addresses import Address

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "BaseServer",
    "ServerControl",
    "ServerStatistics",
    "TCPServer",
    "UnixServer",
    "open_server",
]

# gunicorn's graceful_timeout and Kubernetes' terminationGracePeriodSeconds: 30 s.
DEFAULT_SHUTDOWN_GRACE: Final = 30.0

# The defaults below bound what a peer can hold without sending anything useful
# (docs/howto/limits.rst has the table; issue 15.4). Each can be passed as None
# for "no limit".
#
# A started frame must finish: nginx gives a client 60 s to send a whole request
# header (client_header_timeout, default 60 s) and a body 60 s between reads
# (client_body_timeout); Apache's mod_reqtimeout allows 20-40 s for a header. At
# 60 s a max_size frame (8 MiB) still arrives over a 140 KB/s link.
DEFAULT_FRAME_TIMEOUT: Final = 60.0
# A connection on which nothing moves is closed: nginx's stream (TCP) proxy closes
# one after 10 minutes without a byte in either direction (proxy_timeout 10m).
# Generous for keep-alive protocols that ping (most do every 30-60 s), and a
# silent peer holds its memory 10 minutes, not for ever.
DEFAULT_IDLE_TIMEOUT: Final = 600.0
# A TLS handshake takes round trips, not minutes: Go's http.DefaultTransport gives
# it 10 s (TLSHandshakeTimeout), as connect_tcp does (asyncio's 60 s let 2,000
# silent clients hold 51.5 KiB each for a minute).
DEFAULT_TLS_HANDSHAKE_TIMEOUT: Final = 10.0
# Connections still in their TLS handshake, at most: beyond it accepting pauses
# (they wait in the kernel's backlog) until one finishes. 128 is what Linux's
# SOMAXCONN was for decades (before 5.4): the accept queue of connections whose
# TCP handshake is done but that the application has not taken yet, the stage
# before this one. 128 of them cost about 6.5 MiB.
DEFAULT_MAX_PENDING_HANDSHAKES: Final = 128


@final
@dataclass(frozen=True, slots=True)
class ServerStatistics:
    """A snapshot of a server's state, from :meth:`TCPServer.statistics`.

    Attributes:
      connections_active: Connections open now (their handler, or TLS handshake,
          is running).
      connections_accepted: Connections accepted since the server started.
      connections_shed: Connections the server closed because of a limit: idle
          for ``idle_timeout``, or a TLS handshake slower than its timeout.
      handshake_failures: TLS handshakes that failed (bad certificate, not TLS);
          one that timed out counts in ``connections_shed`` instead.
      handler_errors: Handlers that raised an exception.
      accept_errors: ``accept()`` failures survived (EMFILE, ENFILE, ENOBUFS,
          ENOMEM), each followed by a back-off.
      accepting: Whether the server is accepting: ``False`` while it is paused at
          ``max_connections`` or ``max_pending_handshakes``, and once shutdown
          has started.
      shutting_down: Whether shutdown has started.
    """

    connections_active: int
    connections_accepted: int
    connections_shed: int
    handshake_failures: int
    handler_errors: int
    accept_errors: int
    accepting: bool
    shutting_down: bool


class ServerControl(Protocol):
    """What a server handle needs of the machinery that runs the server (``ServerCore``)."""

    @property
    def active(self) -> int: ...

    @property
    def shutdown_requested(self) -> trio.Event: ...

    def statistics(self) -> ServerStatistics: ...

    def begin_shutdown(self, grace: float) -> None: ...

    async def shutdown(self, grace: float) -> None: ...


class BaseServer:
    """What :class:`~trionet.TCPServer` and :class:`~trionet.UnixServer` share."""

    __slots__ = ("_core",)

    def __init__(self, core: ServerControl) -> None:
        self._core = core

    @property
    def connection_count(self) -> int:
        """How many connections are open now."""
        return self._core.active

    def statistics(self) -> ServerStatistics:
        """Return a :class:`~trionet.ServerStatistics` snapshot of the server."""
        return self._core.statistics()

    def _shutdown_event(self) -> trio.Event:
        # For Connection.wait_shutdown_requested.
        return self._core.shutdown_requested

    def shutdown_nowait(self, *, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        """Start a graceful shutdown and return at once; see :meth:`shutdown`.

        This is what a handler calls to stop its own server: :meth:`shutdown`
        from a handler would wait for that handler too.

        Raises:
          ValueError: ``grace`` is negative.
        """
        self._core.begin_shutdown(grace)

    async def shutdown(self, *, grace: float = DEFAULT_SHUTDOWN_GRACE) -> None:
        """Stop accepting, let handlers finish for up to ``grace`` seconds, then cancel them.

        From the moment of the call the listening sockets are closed: new
        connections are refused (a Unix server's socket file is removed), and
        connections that were waiting in the backlog are dropped. Each
        connection's :meth:`~trionet.TCPConnection.wait_shutdown_requested`
        returns, and (unless the server was started with
        ``end_idle_on_shutdown=False``) each channel ends at its next frame
        boundary (:meth:`~trionet.MessageChannel.end_when_idle`): a handler
        waiting for a message with nothing buffered gets
        :exc:`trio.EndOfChannel` now, so idle connections do not hold the
        shutdown. Handlers keep running; those still running ``grace`` seconds
        later are cancelled, and a connection whose send is blocked because the
        peer stopped reading is reset (a TCP RST) at that moment: the send ends
        at once instead of finishing its frame for ``abort_timeout``, so the
        shutdown takes its grace and no more. This returns once every
        connection is closed and the server's task has ended. Calling it again
        (or :meth:`shutdown_nowait`) can only bring the deadline closer. On a
        server that has already stopped it returns at once.

        Args:
          grace: Seconds to wait for handlers; 0 cancels them (and resets the
              blocked ones) at once.

        Raises:
          ValueError: ``grace`` is negative.

        Cancellation:
          Cancelling this call cancels only the waiting: the shutdown, once
          started, goes on in the server's own task, with the same deadline.
        """
        await self._core.shutdown(grace)


@final
class TCPServer(BaseServer):
    """A running TCP server, as returned by ``nursery.start(serve_tcp, ...)``.

    Attributes:
      addresses: The addresses bound, one per listening socket, in the order
          opened: ``[::]:port`` and ``0.0.0.0:port`` for ``host=None``.
      port: The port, the same on every address (also when ``port=0`` was asked).
      connection_count: Connections open now.
    """

    __slots__ = ("_addresses",)

    def __init__(self, core: ServerControl, addresses: tuple[Address, ...]) -> None:
        super().__init__(core)
        self._addresses = addresses

    @property
    def addresses(self) -> tuple[Address, ...]:
        """The bound addresses; see the class documentation."""
        return self._addresses

    @property
    def port(self) -> int:
        """The port every listening socket is bound to."""
        return self._addresses[0].port

    def __repr__(self) -> str:
        where = ", ".join(str(address) for address in self._addresses)
        return f"<TCPServer {where} connections={self.connection_count}>"


@final
class UnixServer(BaseServer):
    """A running Unix domain socket server, as returned by ``nursery.start(serve_unix, ...)``.

    Attributes:
      path: The socket's path (for a Linux abstract socket, the name with its
          leading NUL).
      connection_count: Connections open now.
    """

    __slots__ = ("_path",)

    def __init__(self, core: ServerControl, path: str) -> None:
        super().__init__(core)
        self._path = path

    @property
    def path(self) -> str:
        """The socket's path."""
        return self._path

    def __repr__(self) -> str:
        return f"<UnixServer {self._path!r} connections={self.connection_count}>"


@asynccontextmanager
async def open_server(
    serve: Callable[..., Awaitable[None]], shutdown_grace: float
) -> AsyncIterator[Any]:
    """Run ``serve`` (a ``serve_*`` with its arguments bound) for an ``async with`` block.

    On a normal exit from the block the server shuts down with ``shutdown_grace``.
    When the block raises, the server is cancelled at once (as a nursery cancels
    its children on an error) and the block's exception comes out as it is, not
    wrapped in an exception group; so does an error starting the server (such as
    a port in use). An error of the running server's own (``strict=True``) comes
    out of the nursery, in a group.
    """
    if not shutdown_grace >= 0:
        raise ValueError(f"shutdown_grace must be a number of seconds >= 0, not {shutdown_grace!r}")
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            server: BaseServer = await nursery.start(serve)
        except Exception as exc:  # the server could not start (port in use...)
            error = exc
        else:
            try:
                yield server
            except GeneratorExit:
                raise
            except BaseException as exc:
                error = exc
                server.shutdown_nowait(grace=0)
            else:
                await server.shutdown(grace=shutdown_grace)
    # Raised here, outside the nursery, so that no exception group wraps it.
    if error is not None:
        raise error
