"""Connection objects: one end of a stream connection, as a handler or a client sees it.

A server hands its handler a :class:`TCPConnection` (or a
:class:`UnixConnection`); a client that connects gets the same type, with
``server`` set to ``None``. The object is a small bundle: the stream, the
:class:`~trionet.MessageChannel` over it when a codec was chosen, and the two
addresses. It adds no behaviour of its own to the stream.

Per-connection state is kept small (``__slots__``, addresses converted only
when asked for), because a server holds one of these for every open connection.
"""

from __future__ import annotations

import ssl
from typing import TYPE_CHECKING, Generic, TypeVar, final

import trio

from .._adapters.channel import MessageChannel
from .._adapters.tcp_info import kernel_byte_counts
from .._adapters.trio_compat import ssl_object_of, stdlib_socket_of
from .._sansio.addresses import Address
from .._sansio.escape import escape_text
from .._sansio.framing import FrameT
from .._sansio.proxy import ProxyHeader
from .server_base import BaseServer, TCPServer, UnixServer

if TYPE_CHECKING:
    from types import TracebackType

    from typing_extensions import Self

__all__ = ["Connection", "TCPConnection", "UnixConnection"]

ServerT = TypeVar("ServerT", bound=BaseServer)


class Connection(Generic[ServerT, FrameT]):
    """What :class:`TCPConnection` and :class:`UnixConnection` share.

    Closing a connection (:meth:`aclose`, or leaving ``async with``) closes the
    channel if there is one, else the stream. A server closes every connection
    when its handler returns, so handlers need not close it themselves.
    """

    __slots__ = ("_channel", "_final_counts", "_server", "_socket", "_stream")

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        socket: trio.socket.SocketType,
        channel: MessageChannel[FrameT] | None = None,
        server: ServerT | None = None,
    ) -> None:
        self._stream = stream
        self._socket = socket
        self._channel = channel
        self._server = server
        # A raw stream's bytes as the kernel counted them at aclose(), for the
        # server's ``closed`` event (a closed socket can no longer say).
        self._final_counts: tuple[int, int] | None = None

    @property
    def stream(self) -> trio.abc.Stream:
        """The byte stream: a :class:`trio.SocketStream`, or a :class:`trio.SSLStream`
        over it with TLS, possibly wrapped to track idleness.

        With a codec, the :attr:`channel` owns this stream: read and write through
        the channel only.
        """
        return self._stream

    @property
    def channel(self) -> MessageChannel[FrameT]:
        """The :class:`~trionet.MessageChannel` that frames messages over :attr:`stream`.

        Raises:
          RuntimeError: No codec was given (``codec=None``), so there is no
              channel: use :attr:`stream`, or pass ``codec=`` to get one.
        """
        channel = self._channel
        if channel is None:
            raise RuntimeError(
                "this connection has no message channel because no codec was given; "
                "use .stream, or pass codec= (for example trionet.LengthPrefixed())"
            )
        return channel

    @property
    def has_channel(self) -> bool:
        """Whether a codec was given, so that :attr:`channel` exists."""
        return self._channel is not None

    @property
    def socket(self) -> trio.socket.SocketType:
        """The connected socket, for socket options (``setsockopt``) and ``fileno()``.

        Do not read or write it directly: use :attr:`stream` or :attr:`channel`.
        """
        return self._socket

    @property
    def server(self) -> ServerT | None:
        """The server that accepted this connection, or ``None`` on the client side."""
        return self._server

    @property
    def ssl_object(self) -> ssl.SSLObject | None:
        """The TLS session (an :class:`ssl.SSLObject`) of a TLS connection, else ``None``.

        Typed access to what the TLS handshake settled: ``getpeercert()`` (the
        client certificate a server required), ``selected_alpn_protocol()``,
        ``version()``, ``cipher()``. Only after the handshake: a server's
        handler always runs after it.
        """
        stream = self._stream
        return ssl_object_of(stream) if isinstance(stream, trio.SSLStream) else None

    @property
    def shutdown_requested(self) -> bool:
        """Whether the server that accepted this connection has begun to shut down.

        ``False`` on the client side. See :meth:`wait_shutdown_requested`.
        """
        server = self._server
        return server is not None and server._shutdown_event().is_set()

    async def wait_shutdown_requested(self) -> None:
        """Return once the server that accepted this connection begins to shut down.

        This is how a handler of a raw stream (no codec) learns that it should
        finish: for example a keep-alive protocol waits for it beside its read
        and closes the connection between requests, so that the shutdown need
        not wait its whole grace (handlers with a codec get
        :exc:`trio.EndOfChannel` from an idle ``receive()`` instead, see
        ``end_idle_on_shutdown``). It returns at once (after a checkpoint) if
        the shutdown has already begun. On a client connection (``server`` is
        ``None``) it never returns.

        Cancellation:
          Safe to cancel; it holds nothing.
        """
        server = self._server
        if server is None:
            await trio.sleep_forever()
        else:
            await server._shutdown_event().wait()

    async def aclose(self) -> None:
        """Close the channel (if any) and the stream.

        Closing twice does nothing the second time.

        Cancellation:
          As :meth:`trio.abc.AsyncResource.aclose`: even when cancelled, the
          connection is closed (without a TLS ``close_notify`` then).
        """
        if self._channel is not None:
            await self._channel.aclose()
        else:
            if self._server is not None and self._final_counts is None:
                self._final_counts = kernel_byte_counts(stdlib_socket_of(self._socket))
            await self._stream.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()


@final
class TCPConnection(Connection[TCPServer, FrameT]):
    """A TCP connection: what a :func:`~trionet.serve_tcp` handler receives.

    Attributes:
      stream: See :attr:`Connection.stream`.
      channel: See :attr:`Connection.channel`.
      peer: The remote end's :class:`~trionet.Address`, normalised (an IPv4 peer
          of a dual-stack socket shows as IPv4, not ``::ffff:a.b.c.d``).
      local: This end's :class:`~trionet.Address` (the specific address the peer
          connected to, also when the server listens on a wildcard).
      proxy: The :class:`~trionet.ProxyHeader` of a server started with
          ``proxy_protocol=True``: ``peer`` and ``local`` are then the client's
          and the front end's addresses it names.
      server: The :class:`~trionet.TCPServer`, or ``None`` on the client side.

    Example::

        async def handler(conn: trionet.TCPConnection) -> None:
            print("connection from", conn.peer)
            async for message in conn.channel:
                await conn.channel.send(message)
    """

    __slots__ = ("_local", "_peer", "_proxy")

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        socket: trio.socket.SocketType,
        peer: Address | tuple[object, ...] | None = None,
        channel: MessageChannel[FrameT] | None = None,
        server: TCPServer | None = None,
        proxy: ProxyHeader | None = None,
    ) -> None:
        super().__init__(stream, socket=socket, channel=channel, server=server)
        # A raw sockaddr (as accept() returns it) is converted on first use only.
        self._peer: Address | tuple[object, ...] | None = peer
        self._local: Address | None = None
        self._proxy = proxy
        if proxy is not None and proxy.source is not None:
            self._peer, self._local = proxy.source, proxy.destination

    @property
    def proxy(self) -> ProxyHeader | None:
        """The PROXY protocol header the connection began with (``proxy_protocol=True``), else ``None``.

        :attr:`peer` and :attr:`local` are then the addresses it names, when
        it names any; the load balancer's own address is the socket's
        ``getpeername()``.
        """
        return self._proxy

    @property
    def peer(self) -> Address:
        """The remote address, normalised; see the class documentation."""
        peer = self._peer
        if isinstance(peer, Address):
            return peer
        if peer is None:
            peer = self._socket.getpeername()
        address = Address.from_sockaddr(peer)
        self._peer = address
        return address

    @property
    def local(self) -> Address:
        """The local address, normalised; see the class documentation."""
        local = self._local
        if local is None:
            local = self._local = Address.from_sockaddr(self._socket.getsockname())
        return local

    def __repr__(self) -> str:
        try:
            peer: object = self.peer
        except OSError:  # closed before the peer's address was asked for
            peer = "?"
        return f"<TCPConnection peer={peer}>"


@final
class UnixConnection(Connection[UnixServer, FrameT]):
    """A Unix domain socket connection: what a :func:`~trionet.serve_unix` handler receives.

    Attributes:
      stream: See :attr:`Connection.stream`.
      channel: See :attr:`Connection.channel`.
      peer: The peer's socket path; ``""`` for an unnamed socket, which is what
          clients usually have. The peer chooses this name, so on the server
          side it is display text, safe to log or print: control and other
          non-printable characters, and bytes that are not UTF-8, are shown as
          escapes (``\\n``, ``\\x1b``, ``\\udcff``), and a Linux abstract
          name starts with ``\\x00``. The raw name is
          ``conn.socket.getpeername()``.
      local: This end's socket path (the server's path on the server side;
          usually ``""`` on the client side), escaped as ``peer`` is.
      server: The :class:`~trionet.UnixServer`, or ``None`` on the client side.
    """

    __slots__ = ("_local", "_peer")

    def __init__(
        self,
        stream: trio.abc.Stream,
        *,
        socket: trio.socket.SocketType,
        peer: object = None,
        local: str | None = None,
        channel: MessageChannel[FrameT] | None = None,
        server: UnixServer | None = None,
    ) -> None:
        super().__init__(stream, socket=socket, channel=channel, server=server)
        # Escaped now, also when it is already text (accept() gives the name
        # as a str): a raw name must never be what .peer returns.
        self._peer = None if peer is None else path_text(peer)
        self._local = local

    @property
    def peer(self) -> str:
        """The peer's path, ``""`` when it is unnamed; see the class documentation."""
        peer = self._peer
        if peer is None:
            peer = self._peer = path_text(self._socket.getpeername())
        return peer

    @property
    def local(self) -> str:
        """This end's path, ``""`` when it is unnamed."""
        local = self._local
        if local is None:
            local = self._local = path_text(self._socket.getsockname())
        return local

    def __repr__(self) -> str:
        try:
            return f"<UnixConnection local={self.local!r} peer={self.peer!r}>"
        except OSError:  # closed before the addresses were asked for
            return "<UnixConnection (closed)>"


def path_text(sockaddr: object) -> str:
    """A Unix socket address as display text, escaped: a peer chooses its name.

    Linux reports abstract names as bytes; a path that is not UTF-8 comes as
    text with lone surrogates ("surrogateescape"). Both, and any control
    character, are shown as escapes, so the name can be logged and printed.
    """
    if isinstance(sockaddr, (bytes, str)):
        return escape_text(sockaddr)
    return escape_text(str(sockaddr)) if sockaddr else ""
