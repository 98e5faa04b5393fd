"""Unix domain socket servers and clients: serve_unix, open_unix_server, connect_unix.

trio can connect to a Unix socket (:func:`trio.open_unix_socket`) but has no
helper to listen on one (python-trio/trio#279). These run the same server
machinery as :func:`~trionet.serve_tcp`, with the same limits, shutdown and
events (prefixed ``unix.``), and take care of the socket file: a stale file left
by a crashed server is replaced, a file in use is not, and the file is removed
when the server shuts down (unless another server has replaced it meanwhile).
"""

from __future__ import annotations

import errno
import functools
import os
import ssl
import stat
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, final

import trio

from ._channel import DEFAULT_ABORT_TIMEOUT, MessageChannel
from ._connection import UnixConnection, _path_text
from ._observe import Observer
from ._sansio.codecs import Codec
from ._server_base import DEFAULT_SHUTDOWN_GRACE, BaseServer, check_count, open_server
from ._server_core import DEFAULT_TLS_HANDSHAKE_TIMEOUT, ServerCore

__all__ = ["UnixServer", "connect_unix", "open_unix_server", "serve_unix"]

UnixHandler = Callable[[UnixConnection], Awaitable[object]]

# Linux caps listen()'s backlog at net.core.somaxconn; asking for more is harmless
# (see trio.open_tcp_listeners).
_DEFAULT_BACKLOG: Final = 0xFFFF


@final
class UnixServer(BaseServer):
    """A running Unix domain socket server, as returned by ``nursery.start(serve_unix, ...)``.

    Attributes:
      path: The socket's path (for a Linux abstract socket, the name with its
          leading NUL).
      connection_count: Connections open now.
    """

    __slots__ = ("_path",)

    def __init__(self, core: ServerCore[UnixConnection], path: str) -> None:
        super().__init__(core)
        self._path = path

    @property
    def path(self) -> str:
        """The socket's path."""
        return self._path

    def __repr__(self) -> str:
        return f"<UnixServer {self._path!r} connections={self.connection_count}>"


def _is_abstract(path: str) -> bool:
    return path.startswith("\0")


def _check_path(path: str | os.PathLike[str]) -> str:
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or an os.PathLike of str, not {path!r}")
    if not text:
        # trio's bind() would fail with an IndexError, connect() with EINVAL.
        raise ValueError("path must not be empty: give the socket file's path "
                         "(or \"\\0name\" for a Linux abstract socket)")
    return text


async def _remove_stale_socket(path: str) -> None:
    """Remove ``path`` if it is a socket nobody listens on (left by a crashed server)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise OSError(errno.EADDRINUSE, f"{path!r} exists and is not a socket")
    probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(path)
        except ConnectionRefusedError:
            os.unlink(path)
            return
        except FileNotFoundError:
            return
    raise OSError(errno.EADDRINUSE, f"{path!r} is in use: a server is listening on it")


async def _open_unix_listener(
    path: str, backlog: int | None, mode: int | None
) -> tuple[trio.socket.SocketType, tuple[int, int] | None]:
    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    try:
        identity = None
        if not _is_abstract(path):
            await _remove_stale_socket(path)
        await sock.bind(path)
        if not _is_abstract(path):
            info = os.stat(path)
            identity = (info.st_dev, info.st_ino)
            if mode is not None:
                os.chmod(path, mode)
        sock.listen(_DEFAULT_BACKLOG if backlog is None else min(backlog, _DEFAULT_BACKLOG))
    except BaseException:
        sock.close()
        raise
    return sock, identity


def _remover(path: str, identity: tuple[int, int] | None) -> Callable[[], None]:
    def remove() -> None:
        if identity is None:
            return
        try:
            info = os.stat(path)
            # Only our own file: a newer server may have bound the path since.
            if (info.st_dev, info.st_ino) == identity:
                os.unlink(path)
        except FileNotFoundError:
            pass

    return remove


async def serve_unix(
    handler: UnixHandler,
    path: str | os.PathLike[str],
    *,
    codec: Codec | None = None,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    frame_timeout: float | None = None,
    abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    end_idle_on_shutdown: bool = True,
    strict: bool = False,
    backlog: int | None = None,
    mode: int | None = None,
    observer: Observer | None = None,
    task_status: trio.TaskStatus[UnixServer] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on a Unix domain socket and run ``handler(connection)`` for each connection.

    The Unix twin of :func:`~trionet.serve_tcp`, for ``nursery.start``, which
    returns the :class:`UnixServer`. The handler receives a
    :class:`~trionet.UnixConnection`. Every option, the error handling and the
    cancellation semantics are those of :func:`~trionet.serve_tcp`; events are
    named ``unix.<name>`` instead of ``tcp.<name>``.

    Args:
      handler: An async function called with each connection, in its own task.
      path: The socket file to create. A socket file already there that nobody
          listens on (left by a crashed server) is replaced. On Linux, a path
          starting with ``"\\0"`` names an abstract socket, which has no file.
          Paths are limited to about 100 bytes by the system.
      codec: See :func:`~trionet.serve_tcp`.
      max_connections: See :func:`~trionet.serve_tcp`.
      idle_timeout: See :func:`~trionet.serve_tcp`.
      frame_timeout: See :func:`~trionet.serve_tcp`.
      abort_timeout: See :func:`~trionet.serve_tcp`.
      ssl_context: See :func:`~trionet.serve_tcp` (rarely useful on one machine).
      tls_handshake_timeout: See :func:`~trionet.serve_tcp`.
      end_idle_on_shutdown: See :func:`~trionet.serve_tcp`.
      strict: See :func:`~trionet.serve_tcp`.
      backlog: The listen backlog, a positive int; ``None`` for the system's
          maximum.
      mode: Permission bits for the socket file (for example ``0o660``); who may
          connect is who may write to it. ``None`` leaves the umask's choice.
      observer: See :func:`~trionet.serve_tcp`.
      task_status: For ``nursery.start``, which returns the :class:`UnixServer`.

    Returns:
      After :meth:`UnixServer.shutdown` has completed.

    Raises:
      OSError: The socket could not be created or bound; ``EADDRINUSE`` when
          a server is already listening on ``path`` or it is not a socket.
      ValueError: ``path`` is empty, or an option is out of range.
      TypeError: An option has the wrong type (``max_connections=True``).

    Resource handling:
      The socket file is removed when shutdown starts (so new clients get
      ``FileNotFoundError`` or ``ConnectionRefusedError``) and when the server
      is cancelled; a file that another server has bound since is left alone.

    Cancellation:
      As :func:`~trionet.serve_tcp`: cancelling the surrounding scope stops the
      server at once and removes the socket file.
    """
    path = _check_path(path)
    backlog = check_count("backlog", backlog)
    core: ServerCore[UnixConnection] = ServerCore(
        handler,
        kind="unix",
        describe_peer=_path_text,
        codec=codec,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        abort_timeout=abort_timeout,
        ssl_context=ssl_context,
        tls_handshake_timeout=tls_handshake_timeout,
        end_idle_on_shutdown=end_idle_on_shutdown,
        strict=strict,
        observer=observer,
    )
    sock, identity = await _open_unix_listener(path, backlog, mode)
    remove = _remover(path, identity)
    server = UnixServer(core, path)

    def make_connection(
        stream: trio.abc.Stream,
        sock: trio.socket.SocketType,
        peer: Any,
        channel: MessageChannel | None,
    ) -> UnixConnection:
        return UnixConnection(stream, socket=sock, peer=peer, local=path, channel=channel,
                              server=server)

    await core.run(
        [sock], make_connection, server, task_status, listening=path, on_listeners_closed=remove
    )


@asynccontextmanager
async def open_unix_server(
    handler: UnixHandler,
    path: str | os.PathLike[str],
    *,
    codec: Codec | None = None,
    max_connections: int | None = None,
    idle_timeout: float | None = None,
    frame_timeout: float | None = None,
    abort_timeout: float = DEFAULT_ABORT_TIMEOUT,
    ssl_context: ssl.SSLContext | None = None,
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    end_idle_on_shutdown: bool = True,
    strict: bool = False,
    backlog: int | None = None,
    mode: int | None = None,
    observer: Observer | None = None,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
) -> AsyncIterator[UnixServer]:
    """Run a Unix domain socket server for the duration of an ``async with`` block.

    Takes the arguments of :func:`serve_unix`, and ``shutdown_grace``, with the
    behaviour of :func:`~trionet.open_tcp_server`.

    Yields:
      The :class:`UnixServer`, listening.

    Cancellation:
      As :func:`~trionet.open_tcp_server`.
    """
    serve = functools.partial(
        serve_unix,
        handler,
        path,
        codec=codec,
        max_connections=max_connections,
        idle_timeout=idle_timeout,
        frame_timeout=frame_timeout,
        abort_timeout=abort_timeout,
        ssl_context=ssl_context,
        tls_handshake_timeout=tls_handshake_timeout,
        end_idle_on_shutdown=end_idle_on_shutdown,
        strict=strict,
        backlog=backlog,
        mode=mode,
        observer=observer,
    )
    async with open_server(serve, shutdown_grace) as server:
        assert isinstance(server, UnixServer)
        yield server


async def connect_unix(
    path: str | os.PathLike[str],
    *,
    codec: Codec | None = None,
) -> UnixConnection:
    """Connect to a Unix domain socket.

    Example::

        async with await trionet.connect_unix("/run/app.sock", codec=trionet.Lines()) as conn:
            await conn.channel.send(b"hello")
            print(await conn.channel.receive())

    Args:
      path: The server's socket path (``"\\0name"`` for a Linux abstract socket).
      codec: Frame messages with this codec: the connection's ``channel`` is then
          a :class:`~trionet.MessageChannel`.

    Returns:
      A :class:`~trionet.UnixConnection` (``server`` is ``None``); close it with
      ``aclose()`` or ``async with``.

    Raises:
      ValueError: ``path`` is empty.
      FileNotFoundError: Nothing is at ``path``.
      ConnectionRefusedError: The file exists but nobody listens on it.
      PermissionError: The socket file is not writable by this process.

    Cancellation:
      A cancelled call leaves no socket open.
    """
    path = _check_path(path)
    stream = await trio.open_unix_socket(path)
    channel = MessageChannel(stream, codec) if codec is not None else None
    return UnixConnection(stream, socket=stream.socket, peer=path, local="",
                          channel=channel)
