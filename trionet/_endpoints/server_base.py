"""What every stream server shares: its defaults, its handle (TCPServer, UnixServer), statistics.

The handles sit below the machinery that runs a server (``server_core.py``) and
below the connection types (``connection.py``), which name them: they reach the
running server only through :class:`ServerControl`, the protocol that
``ServerCore`` implements.
"""

from __future__ import annotations

import functools
import inspect
import textwrap
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any, ParamSpec, Protocol, TypeVar, final

import trio

from .._sansio.addresses import Address

__all__ = [
    "BaseServer",
    "ServerControl",
    "ServerStatistics",
    "StreamServer",
    "TCPServer",
    "UnixServer",
    "open_server",
    "server_context",
]

P = ParamSpec("P")
ServerT = TypeVar("ServerT", bound="BaseServer")

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
    """What a server handle needs of the machinery that runs the server.

    ``ServerCore`` (TCP and Unix) and ``UDPServerCore`` implement it; both keep
    their shutdown state in one :class:`~trionet._endpoints.shutdown.GracefulShutdown`.
    """

    @property
    def active(self) -> int: ...

    @property
    def shutdown_requested(self) -> trio.Event: ...

    @property
    def shutdown_grace(self) -> float: ...

    def begin_shutdown(self, grace: float) -> None: ...

    async def shutdown(self, grace: float) -> None: ...


class StreamControl(ServerControl, Protocol):
    """What a stream server's handle also reads: its statistics."""

    def statistics(self) -> ServerStatistics: ...


class BaseServer:
    """What every running server shares: :class:`~trionet.TCPServer`,
    :class:`~trionet.UnixServer` and :class:`~trionet.UDPServer`."""

    __slots__ = ("_core",)

    def __init__(self, core: ServerControl) -> None:
        self._core = core

    def _shutdown_event(self) -> trio.Event:
        # For Connection.wait_shutdown_requested.
        return self._core.shutdown_requested

    def shutdown_nowait(self, *, grace: float | None = None) -> None:
        """Start a graceful shutdown and return at once; see :meth:`shutdown`.

        This is what a handler calls to stop its own server: :meth:`shutdown`
        from a handler would wait for that handler too.

        Raises:
          ValueError: ``grace`` is negative.
        """
        self._core.begin_shutdown(self._core.shutdown_grace if grace is None else grace)

    async def shutdown(self, *, grace: float | None = None) -> None:
        """Stop taking new work, let the work in progress finish for up to ``grace`` seconds.

        From the moment of the call a stream server's listening sockets are
        closed: new connections are refused (a Unix server's socket file is
        removed), and connections that were waiting in the backlog are dropped.
        Each connection's :meth:`~trionet.TCPConnection.wait_shutdown_requested`
        returns, and (unless the server was started with
        ``end_idle_on_shutdown=False``) each channel ends at its next frame
        boundary (:meth:`~trionet.MessageChannel.end_when_idle`): a handler
        waiting for a message with nothing buffered gets
        :exc:`trio.EndOfChannel` now, so idle connections do not hold the
        shutdown. A UDP server takes no datagram from its socket any more.
        Handlers keep running; those still running ``grace`` seconds later are
        cancelled, and a connection whose send is blocked because the peer
        stopped reading is reset (a TCP RST) at that moment: the send ends at
        once instead of finishing its frame for ``abort_timeout``, so the
        shutdown takes its grace and no more. This returns once every
        connection is closed and the server's task has ended. Calling it again
        (or :meth:`shutdown_nowait`) can only bring the deadline closer. On a
        server that has already stopped it returns at once.

        Args:
          grace: Seconds to wait for handlers; 0 cancels them (and resets the
              blocked ones) at once. ``None`` (the default): the server's
              ``shutdown_grace`` (30 s unless the server was started with
              another).

        Raises:
          ValueError: ``grace`` is negative.

        Cancellation:
          Cancelling this call cancels only the waiting: the shutdown, once
          started, goes on in the server's own task, with the same deadline.
        """
        await self._core.shutdown(self._core.shutdown_grace if grace is None else grace)


class StreamServer(BaseServer):
    """What :class:`~trionet.TCPServer` and :class:`~trionet.UnixServer` share."""

    __slots__ = ()

    _core: StreamControl

    def __init__(self, core: StreamControl) -> None:
        super().__init__(core)

    @property
    def connection_count(self) -> int:
        """How many connections are open now."""
        return self._core.active

    def statistics(self) -> ServerStatistics:
        """Return a :class:`~trionet.ServerStatistics` snapshot of the server."""
        return self._core.statistics()


@final
class TCPServer(StreamServer):
    """A running TCP server, as returned by ``nursery.start(serve_tcp, ...)``.

    Attributes:
      addresses: The addresses bound, one per listening socket, in the order
          opened: ``[::]:port`` and ``0.0.0.0:port`` for ``host=None``.
      port: The port, the same on every address (also when ``port=0`` was asked).
      connection_count: Connections open now.
    """

    __slots__ = ("_addresses",)

    def __init__(self, core: StreamControl, addresses: tuple[Address, ...]) -> None:
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
class UnixServer(StreamServer):
    """A running Unix domain socket server, as returned by ``nursery.start(serve_unix, ...)``.

    Attributes:
      path: The socket's path (for a Linux abstract socket, the name with its
          leading NUL).
      connection_count: Connections open now.
    """

    __slots__ = ("_path",)

    def __init__(self, core: StreamControl, path: str) -> None:
        super().__init__(core)
        self._path = path

    @property
    def path(self) -> str:
        """The socket's path."""
        return self._path

    def __repr__(self) -> str:
        return f"<UnixServer {self._path!r} connections={self.connection_count}>"


@asynccontextmanager
async def open_server(serve: Callable[..., Awaitable[None]]) -> AsyncIterator[Any]:
    """Run ``serve`` (a ``serve_*`` with its arguments bound) for an ``async with`` block.

    On a normal exit from the block the server shuts down with its
    ``shutdown_grace``. When the block raises, the server is cancelled at once
    (as a nursery cancels its children on an error) and the block's exception
    comes out as it is, not wrapped in an exception group; so does an error
    starting the server (such as a port in use). An error of the running
    server's own (``strict=True``) comes out of the nursery, in a group.
    """
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
                await server.shutdown()
    # Raised here, outside the nursery, so that no exception group wraps it.
    if error is not None:
        raise error


def server_context(
    serve: Callable[P, Awaitable[None]], server_type: type[ServerT], name: str, doc: str
) -> Callable[P, AbstractAsyncContextManager[ServerT]]:
    """Derive ``open_*_server`` from ``serve_*``: the same arguments, for ``async with``.

    The derived function takes exactly ``serve``'s arguments (checked by mypy
    through the ``ParamSpec``, and shown by :func:`inspect.signature`, hence in
    the reference, without ``task_status``), runs the server in a nursery of
    its own with :func:`open_server`, and yields the running server. ``doc``
    is its docstring; ``{serve}`` in it names ``serve``, and ``{args}``
    stands for the "Args" section of ``serve``'s docstring (without
    ``task_status``), so that every option is documented on both.
    """

    @asynccontextmanager
    async def context(*args: P.args, **kwargs: P.kwargs) -> AsyncIterator[ServerT]:
        async with open_server(functools.partial(serve, *args, **kwargs)) as server:
            assert isinstance(server, server_type)
            yield server

    # Evaluated annotations: the derived function lives here, where the names
    # in serve's annotations (TCPHandler...) are not defined.
    signature = inspect.signature(serve, eval_str=True)
    parameters = [p for p in signature.parameters.values() if p.name != "task_status"]
    returns = AbstractAsyncContextManager[server_type]  # type: ignore[valid-type]
    context.__signature__ = signature.replace(  # type: ignore[attr-defined]
        parameters=parameters, return_annotation=returns
    )
    # What typing.get_type_hints() (and so Sphinx) reads: the same, and not the
    # generic inner function's, which __wrapped__ would lead to.
    context.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": returns}
    del context.__wrapped__  # type: ignore[attr-defined]
    context.__name__ = context.__qualname__ = name
    context.__module__ = serve.__module__
    context.__doc__ = doc.format(serve=serve.__name__, args=_args_section(serve))
    return context


def _args_section(function: Callable[..., Any]) -> str:
    # The "Args:" block of a Google-style docstring indented by four spaces,
    # from its heading to the next section's heading, without task_status.
    # Python 3.13 strips a docstring's indentation when it compiles it, older
    # ones keep it: clean it, then indent it as the source has it.
    doc = textwrap.indent(inspect.cleandoc(function.__doc__ or ""), "    ")
    start = doc.index("\n    Args:\n") + 1
    end = doc.index("\n\n    ", start)
    while doc[end + 6] == " ":  # a blank line inside an argument's text
        end = doc.index("\n\n    ", end + 2)
    lines = doc[start:end].splitlines()
    kept: list[str] = []
    skipping = False
    for line in lines:
        if line.startswith("      ") and not line.startswith("        "):
            skipping = line.strip().startswith("task_status:")
        if not skipping:
            kept.append(line)
    return "\n".join(kept)
