"""Unix domain socket servers: serve_unix, open_unix_server, UnixServer.

trio can connect to a Unix socket (:func:`trio.open_unix_socket`) but has no
helper to listen on one (python-trio/trio#279). These run the same server
machinery as :func:`~trionet.serve_tcp`, with the same limits, shutdown and
events (prefixed ``unix.``), and take care of the socket file: a stale file left
by a crashed server is replaced, a file in use is not, and the file is removed
when the server shuts down (unless another server has replaced it meanwhile).
The socket file is created, and its mode set, where no one else can reach it
(issue 15.1; ``unix_file.py`` does it, and says why).
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import trio

from .._adapters.channel import DEFAULT_ABORT_TIMEOUT, MessageChannel
from .._adapters.listen import adopt_listening_sockets
from .._adapters.observe import Observer
from .._sansio.codecs import Codec
from .._sansio.framing import FrameT
from .._sansio.proxy import ProxyHeader
from .._sansio.validate import check_optional_count
from .connection import UnixConnection, path_text
from .options import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    StreamServerOptions,
)
from .server_base import UnixServer, server_context
from .server_core import ServerCore
from .unix_file import SocketFile, check_path, is_abstract, open_unix_listener

__all__ = ["UnixServer", "open_unix_server", "serve_unix"]

UnixHandler = Callable[[UnixConnection[FrameT]], Awaitable[object]]


def _check_mode(path: str, mode: int | None) -> None:
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int (such as 0o660) or None, not {mode!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be permission bits between 0 and 0o7777, not {mode!r}")
    if is_abstract(path):
        # An abstract socket has no file, so no permissions: anyone on the machine
        # (in the same network namespace) may connect. Silently ignoring mode=
        # would hand a caller who asked for 0o600 a socket open to every user.
        raise ValueError(
            f"mode={mode:#o} cannot protect the abstract socket {path!r}: it has no file, "
            "so any local user may connect; use a socket file in a private directory, "
            "or check the peer's credentials (SO_PEERCRED) in the handler"
        )


async def serve_unix(
    handler: UnixHandler[FrameT],
    path: str | os.PathLike[str] | None = None,
    *,
    sockets: Iterable[trio.socket.SocketType] | None = None,
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
    backlog: int | None = None,
    mode: int | None = None,
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE,
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
          listens on (left by a crashed server) is replaced; anything else
          there (a regular file, a directory, a symlink, wherever it points) is
          refused and kept. On Linux, a path starting with ``"\\0"`` names an
          abstract socket, which has no file. Paths are limited to about 100
          bytes by the system (on systems without ``/proc/self/fd``, such as
          macOS, the directory's path to about 80 bytes).
      sockets: Instead of ``path``: one listening ``AF_UNIX`` stream socket
          bound by someone else, such as a service manager
          (:func:`~trionet.listen_fds` for systemd socket activation). One not
          yet listening is made to, with ``backlog``. The server owns the
          socket and closes it when it stops, but not its file, which belongs
          to whoever bound it: the file is neither replaced nor removed, and
          ``mode`` cannot be given. :attr:`UnixServer.path` is the socket's
          own name.
      codec: See :func:`~trionet.serve_tcp`.
      max_connections: See :func:`~trionet.serve_tcp`.
      idle_timeout: See :func:`~trionet.serve_tcp`.
      frame_timeout: See :func:`~trionet.serve_tcp`.
      abort_timeout: See :func:`~trionet.serve_tcp`.
      ssl_context: See :func:`~trionet.serve_tcp` (rarely useful on one machine).
      tls_handshake_timeout: See :func:`~trionet.serve_tcp`.
      max_pending_handshakes: See :func:`~trionet.serve_tcp`.
      end_idle_on_shutdown: See :func:`~trionet.serve_tcp`.
      strict: See :func:`~trionet.serve_tcp`.
      backlog: The listen backlog, a positive int; ``None`` for the system's
          maximum.
      mode: Permission bits for the socket file (for example ``0o660``); who may
          connect is who may write to it. ``None`` leaves the umask's choice.
          Not allowed with an abstract socket, which has no permissions.
      shutdown_grace: See :func:`~trionet.serve_tcp`.
      observer: See :func:`~trionet.serve_tcp`.
      task_status: For ``nursery.start``, which returns the :class:`UnixServer`.

    Returns:
      After :meth:`UnixServer.shutdown` has completed.

    Raises:
      OSError: The socket could not be created or bound; ``EADDRINUSE`` when
          a server is already listening on ``path`` or it is not a socket.
      ValueError: ``path`` is empty or does not end with a file name, an
          option is out of range, or ``mode`` is given for an abstract socket.
      TypeError: An option has the wrong type (``max_connections=True``).

    Security:
      Whoever can write to the socket's directory, or swap a symlink on its
      path, cannot make the server touch any other file: the server opens the
      directory once and does everything else through that handle (on Linux
      and other systems with ``/proc/self/fd``; elsewhere the probe of a stale
      socket looks ``path`` up by name). It binds the socket, sets ``mode``
      and starts listening inside a new private (``0o700``) directory next to
      ``path``, then hard-links the file into place: no one can connect before
      ``mode`` is set, and the chmod cannot be redirected. A stale socket is
      removed, and the file removed at shutdown, only if it is the file just
      checked (same device and inode), never by following a symlink. Someone
      who can write to the directory can still delete or replace the socket
      file there, as with any file; a directory only the server's user can
      write to, or a sticky one such as ``/tmp``, prevents that. The private
      directory (``.trionet-`` and random letters) is removed before this
      returns or raises; only a crash in between leaves it behind. The raw
      socket's ``getsockname()``, and ``getpeername()`` on a raw client, report
      the private name the socket was bound with; :attr:`UnixServer.path` and
      :class:`~trionet.UnixConnection`'s ``local`` and ``peer`` report ``path``.

    Resource handling:
      The socket file is removed when shutdown starts (so new clients get
      ``FileNotFoundError`` or ``ConnectionRefusedError``) and when the server
      is cancelled; a file that another server has bound since is left alone.
      The server holds one file descriptor for the socket's directory while it
      runs, so the file is removed from the directory it was created in even if
      that directory has been renamed since.

    Cancellation:
      As :func:`~trionet.serve_tcp`: cancelling the surrounding scope stops the
      server at once and removes the socket file. Cancelled while starting, it
      leaves no file, private directory or descriptor behind (a bind already
      under way in a worker thread is waited for, not abandoned).
    """
    backlog = check_optional_count("backlog", backlog)
    if sockets is not None:
        if path is not None or mode is not None:
            raise TypeError("serve_unix takes sockets= or a path (and mode), not both")
        (adopted,) = adopt_listening_sockets(sockets, backlog=backlog, unix=True)
        name = adopted.getsockname()
        path = name if isinstance(name, str) else os.fsdecode(name)
    elif path is None:
        raise TypeError("serve_unix needs a path or sockets=")
    else:
        path = check_path(path)
        _check_mode(path, mode)
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
        observer=observer,
    )
    core: ServerCore[UnixConnection[FrameT]] = ServerCore(
        handler, options, kind="unix", describe_peer=path_text
    )
    if sockets is not None:
        sock, socket_file = adopted, None
    else:
        sock, socket_file = await open_unix_listener(path, backlog, mode)
    try:
        await _serve(core, sock, path, socket_file, task_status)
    finally:
        if socket_file is not None:
            socket_file.close()


async def _serve(
    core: ServerCore[UnixConnection[FrameT]],
    sock: trio.socket.SocketType,
    path: str,
    socket_file: SocketFile | None,
    task_status: trio.TaskStatus[UnixServer],
) -> None:
    server = UnixServer(core, path)

    def make_connection(
        stream: trio.abc.Stream,
        sock: trio.socket.SocketType,
        peer: Any,
        channel: MessageChannel[Any] | None,
        proxy: ProxyHeader | None,
    ) -> UnixConnection[FrameT]:
        return UnixConnection(stream, socket=sock, peer=peer, local=path, channel=channel,
                              server=server)

    await core.run(
        [sock],
        make_connection,
        server,
        task_status,
        listening=path,
        on_listeners_closed=None if socket_file is None else socket_file.remove,
    )


open_unix_server = server_context(serve_unix, UnixServer, "open_unix_server", """\
    Run a Unix domain socket server for the duration of an ``async with`` block.

    ::

        async with trionet.open_unix_server(echo, "/run/app.sock") as server:
            ...  # the server runs here, in a nursery of its own

    It takes the arguments of :func:`{serve}` (without ``task_status``), with
    the same defaults and meanings, and behaves as
    :func:`~trionet.open_tcp_server`:

{args}

    Yields:
      The :class:`UnixServer`, listening.

    Raises:
      As :func:`~trionet.open_tcp_server`.

    Cancellation:
      As :func:`~trionet.open_tcp_server`.
    """)
