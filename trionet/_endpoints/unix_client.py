"""connect_unix: a Unix domain socket client, with the channel and TLS options of connect_tcp."""

from __future__ import annotations

import math
import os
import ssl

import trio

from .._adapters.channel import DEFAULT_ABORT_TIMEOUT, DEFAULT_READ_SIZE, MessageChannel
from .._sansio.codecs import Codec
from .._sansio.framing import FrameT
from .._sansio.validate import check_timeout
from .client_tls import start_tls
from .connection import UnixConnection
from .options import DEFAULT_FRAME_TIMEOUT, DEFAULT_TLS_HANDSHAKE_TIMEOUT
from .unix_file import check_path

__all__ = ["connect_unix"]


async def connect_unix(
    path: str | os.PathLike[str],
    *,
    codec: Codec[FrameT] | None = None,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
    abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
    read_size: int = DEFAULT_READ_SIZE,
    ssl_context: ssl.SSLContext | None = None,
    server_hostname: str | None = None,
    connect_timeout: float | None = None,
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
) -> UnixConnection[FrameT]:
    """Connect to a Unix domain socket.

    The Unix twin of :func:`~trionet.connect_tcp`, with the options that apply
    to one path (no addresses to race, nothing to resolve).

    Example::

        async with await trionet.connect_unix("/run/app.sock", codec=trionet.Lines()) as conn:
            await conn.channel.send(b"hello")
            print(await conn.channel.receive())

    Args:
      path: The server's socket path (``"\\0name"`` for a Linux abstract socket).
      codec: Frame messages with this codec: the connection's ``channel`` is then
          a :class:`~trionet.MessageChannel`.
      frame_timeout, abort_timeout, read_size: With a codec, passed to the
          :class:`~trionet.MessageChannel`, as for :func:`~trionet.connect_tcp`.
      ssl_context: If given, TLS runs over the connection (for a server started
          with ``serve_unix(..., ssl_context=...)``), and the handshake
          completes before this returns.
      server_hostname: The name to check the server's certificate against
          (required by a context that checks host names).
      connect_timeout: Seconds for the whole connect (the TLS handshake
          included), or ``None`` for no limit. A server whose backlog is full
          keeps a Unix client waiting in ``connect()``.
      tls_handshake_timeout: Seconds the TLS handshake may take.

    Returns:
      A :class:`~trionet.UnixConnection` (``server`` is ``None``); close it with
      ``aclose()`` or ``async with``.

    Raises:
      ValueError: ``path`` is empty, or a timeout is not positive.
      FileNotFoundError: Nothing is at ``path``.
      ConnectionRefusedError: The file exists but nobody listens on it.
      PermissionError: The socket file is not writable by this process.
      trio.TooSlowError: ``connect_timeout`` or ``tls_handshake_timeout`` passed.
      trio.BrokenResourceError: The TLS handshake failed; the message says why.

    Cancellation:
      A cancelled call leaves no socket open.
    """
    path = check_path(path)
    timeout = check_timeout("connect_timeout", connect_timeout)
    with trio.fail_after(math.inf if timeout is None else timeout):
        sock_stream = await trio.open_unix_socket(path)
        stream: trio.abc.Stream = sock_stream
        try:
            if ssl_context is not None:
                stream = await start_tls(stream, ssl_context, server_hostname,
                                         tls_handshake_timeout, path)
            channel = None if codec is None else MessageChannel(
                stream, codec, frame_timeout=frame_timeout, abort_timeout=abort_timeout,
                read_size=read_size,
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
    return UnixConnection(stream, socket=sock_stream.socket, peer=path, local="", channel=channel)
