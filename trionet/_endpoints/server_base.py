"""What every trionet server shares: the server handle, its statistics, the async-with form."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, final

import trio

if TYPE_CHECKING:
    from .server_core import ServerCore

__all__ = ["DEFAULT_SHUTDOWN_GRACE", "BaseServer", "ServerStatistics", "check_count", "open_server"]

# gunicorn's graceful_timeout and Kubernetes' terminationGracePeriodSeconds: 30 s.
DEFAULT_SHUTDOWN_GRACE: Final = 30.0


def check_count(name: str, value: int | None, *, minimum: int = 1) -> int | None:
    """Validate a count option: ``None``, or an int (not a bool) of at least ``minimum``.

    Raises:
      TypeError: ``value`` is not an int (``True`` is not a count).
      ValueError: ``value`` is below ``minimum``.
    """
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int or None, not {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be at least {minimum} (or None), not {value!r}")
    return value


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


class BaseServer:
    """What :class:`~trionet.TCPServer` and :class:`~trionet.UnixServer` share."""

    __slots__ = ("_core",)

    def __init__(self, core: ServerCore[Any]) -> None:
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
