"""Unix domain socket servers and clients: serve_unix, open_unix_server, connect_unix.

trio can connect to a Unix socket (:func:`trio.open_unix_socket`) but has no
helper to listen on one (python-trio/trio#279). These run the same server
machinery as :func:`~trionet.serve_tcp`, with the same limits, shutdown and
events (prefixed ``unix.``), and take care of the socket file: a stale file left
by a crashed server is replaced, a file in use is not, and the file is removed
when the server shuts down (unless another server has replaced it meanwhile).
The socket file is created, and its mode set, where no one else can reach it
(issue 15.1; the reasoning is in the comment above ``_handle_path``).
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import ssl
import stat
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, final

import trio

from .._adapters.channel import DEFAULT_ABORT_TIMEOUT, MessageChannel
from .._adapters.observe import Observer
from .._sansio.codecs import Codec
from .connection import UnixConnection, _path_text
from .server_base import DEFAULT_SHUTDOWN_GRACE, BaseServer, check_count, open_server
from .server_core import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    ServerCore,
)

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


def _check_mode(path: str, mode: int | None) -> None:
    if mode is None:
        return
    if isinstance(mode, bool) or not isinstance(mode, int):
        raise TypeError(f"mode must be an int (such as 0o660) or None, not {mode!r}")
    if not 0 <= mode <= 0o7777:
        raise ValueError(f"mode must be permission bits between 0 and 0o7777, not {mode!r}")
    if _is_abstract(path):
        # An abstract socket has no file, so no permissions: anyone on the machine
        # (in the same network namespace) may connect. Silently ignoring mode=
        # would hand a caller who asked for 0o600 a socket open to every user.
        raise ValueError(
            f"mode={mode:#o} cannot protect the abstract socket {path!r}: it has no file, "
            "so any local user may connect; use a socket file in a private directory, "
            "or check the peer's credentials (SO_PEERCRED) in the handler"
        )


# Where the socket file lives, and why every step goes through a directory handle.
#
# A server often runs with more privilege than the users who can write to the
# socket's directory (/tmp, a shared /run/app). Anything we do by path after
# bind() resolves the path again, and whoever can write to the directory (or to
# any directory on the path, for a symlink in it) can make it resolve elsewhere:
#
# - bind(path), then chmod(path, mode): chmod follows symlinks, so swapping the
#   fresh socket for a symlink made a root server chmod a root-only file to 0o666.
#   Between the two calls the socket also had the umask's permissions, reachable
#   by anyone.
# - stat(path), connect(path), unlink(path) for a stale socket: flipping a
#   directory symlink between them made a root server delete a regular file.
#
# So (issue 15.1):
#
# 1. The parent directory is opened once (O_DIRECTORY; O_PATH on Linux) and every later step names
#    the file relative to that handle (the *at() system calls: dir_fd=), so
#    renaming or re-pointing anything on the path no longer changes which
#    directory we act in.
# 2. The stale-socket check lstat()s (no symlink is followed: a symlink is
#    refused, as a regular file is) and probes the socket through
#    /proc/self/fd/<dir>/<name>, which names the directory by its handle (without
#    /proc, as on macOS, the probe has to use the path). The file
#    is unlinked only if a second lstat() just before shows the same (st_dev,
#    st_ino). Someone could still swap the entry between that lstat() and the
#    unlink(); but only someone who can write to that very directory, who could
#    unlink the entry themselves, so they gain nothing.
# 3. The socket is bound, chmod()ed and listening inside a fresh 0700 directory
#    that we create in the target directory (mkdir is exclusive; we check that it
#    is ours, and reach it by its handle too): nobody else can enter it, so the
#    chmod cannot be redirected and nobody can connect before the mode is set.
#    fchmod() cannot do this: on a socket it changes the socket, not its file.
# 4. The file is hard-linked into place (linkat, within one filesystem, atomic).
#    Unlike rename(), link() never replaces what is there: if a file appeared
#    since the check (another server starting at the same time), we fail with
#    EADDRINUSE, as bind() would have. Filesystems without hard links fall back
#    to rename() after one more check.
# 5. At shutdown, the file is removed through the same directory handle, and
#    only if it is still our inode.
#
# The kernel remembers the name a socket was bound with: getsockname() on the
# listening socket, and getpeername() on a raw client, report the private
# /proc/self/fd/... name, not the path. UnixServer.path and UnixConnection.local
# and .peer report the path.
#
# trio binds Unix sockets in a worker thread (the name lookup may block) that a
# cancellation waits for rather than abandons (trio.to_thread.run_sync's default).
# This matters: a bind still running after we closed the private directory's
# handle could land in whatever directory reused its number. We still create the
# socket through trio.socket, so that a custom socket factory (the virtual
# network, which refuses AF_UNIX) sees it.

# sun_path's size: 108 bytes on Linux, 104 on macOS and the BSDs.
_SUN_PATH_SIZE: Final = 108 if sys.platform.startswith("linux") else 104
# The private directory's name: a fixed prefix (so a file left by a crash is easy
# to recognise) and a random part (mkdir fails rather than reuse a name).
_PRIVATE_PREFIX: Final = ".trionet-"
# The socket's name inside the private directory.
_BIND_NAME: Final = "s"
# link() errors that mean "this filesystem has no hard links", not "refused".
_NO_HARD_LINKS: Final = frozenset(
    {errno.EPERM, errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP), errno.EXDEV}
)
_O_DIRECTORY: Final = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)
# The socket's directory: O_PATH (Linux) where there is one, as bind() needs no
# read permission on the directory (a drop box such as -wx) and neither should we.
_O_PARENT: Final = _O_DIRECTORY | getattr(os, "O_PATH", 0)


@functools.cache
def _have_proc_fd() -> bool:
    return os.path.isdir("/proc/self/fd")


def _handle_path(dir_fd: int, name: str, fallback: str) -> str:
    """A socket address for ``name`` in ``dir_fd`` that no one can redirect, if the system has one.

    Elsewhere (macOS, the BSDs; or a name too long for ``sun_path``) it is
    ``fallback``, which is looked up by name.
    """
    if _have_proc_fd():
        path = f"/proc/self/fd/{dir_fd}/{name}"
        if len(os.fsencode(path)) < _SUN_PATH_SIZE:
            return path
    return fallback


def _identity(info: os.stat_result) -> tuple[int, int]:
    return info.st_dev, info.st_ino


def _unlink_if_same(dir_fd: int, name: str, identity: tuple[int, int]) -> None:
    """Unlink ``name`` in ``dir_fd`` if it is still the file ``identity`` names."""
    try:
        if _identity(os.lstat(name, dir_fd=dir_fd)) == identity:
            os.unlink(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


async def _remove_stale_socket(dir_fd: int, name: str, path: str) -> None:
    """Remove ``name`` if it is a socket nobody listens on (left by a crashed server)."""
    try:
        info = os.lstat(name, dir_fd=dir_fd)
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(info.st_mode):
        # A symlink is refused too, whatever it points to: it is not ours to follow.
        raise OSError(errno.EADDRINUSE, f"{path!r} exists and is not a socket")
    probe = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    with probe:
        try:
            await probe.connect(_handle_path(dir_fd, name, path))
        except ConnectionRefusedError:
            _unlink_if_same(dir_fd, name, _identity(info))
            return
        except FileNotFoundError:
            return
    raise OSError(errno.EADDRINUSE, f"{path!r} is in use: a server is listening on it")


def _make_private_directory(dir_fd: int) -> tuple[str, int]:
    """Create a directory only we can enter, in ``dir_fd``; return its name and a handle."""
    for _ in range(100):
        name = _PRIVATE_PREFIX + secrets.token_hex(4)
        try:
            os.mkdir(name, 0o700, dir_fd=dir_fd)
        except FileExistsError:
            continue
        break
    else:  # pragma: no cover - 100 collisions of 32 random bits
        raise FileExistsError(errno.EEXIST, "could not name a private directory for binding")
    # Someone who can write to the directory could have swapped another in under
    # this name since: open without following a symlink, and check the owner.
    private_fd = os.open(name, _O_DIRECTORY | os.O_NOFOLLOW, dir_fd=dir_fd)
    try:
        info = os.fstat(private_fd)
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid():
            raise OSError(errno.EPERM, f"the private directory {name!r} was replaced while binding")
        os.fchmod(private_fd, 0o700)  # whatever the umask
    except BaseException:
        os.close(private_fd)
        raise
    return name, private_fd


def _remove_private_directory(dir_fd: int, name: str, private_fd: int) -> None:
    try:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(_BIND_NAME, dir_fd=private_fd)
        _rmdir_if_same(dir_fd, name, _identity(os.fstat(private_fd)))
    finally:
        os.close(private_fd)


def _rmdir_if_same(dir_fd: int, name: str, identity: tuple[int, int]) -> None:
    try:
        if _identity(os.lstat(name, dir_fd=dir_fd)) == identity:
            os.rmdir(name, dir_fd=dir_fd)
    except FileNotFoundError:
        pass


def _link_into_place(private_fd: int, dir_fd: int, name: str, path: str) -> None:
    in_use = f"{path!r} is in use: a file appeared there while the server was binding"
    try:
        os.link(_BIND_NAME, name, src_dir_fd=private_fd, dst_dir_fd=dir_fd,
                follow_symlinks=False)
    except FileExistsError:
        raise OSError(errno.EADDRINUSE, in_use) from None
    except OSError as exc:
        if exc.errno not in _NO_HARD_LINKS:
            raise
        # No hard links here: rename() would replace a file that appeared since
        # the stale check, so look once more (a narrower window, not none).
        try:
            os.lstat(name, dir_fd=dir_fd)
        except FileNotFoundError:
            os.rename(_BIND_NAME, name, src_dir_fd=private_fd, dst_dir_fd=dir_fd)
        else:
            raise OSError(errno.EADDRINUSE, in_use) from exc


async def _bind_privately(
    dir_fd: int, directory: str, name: str, path: str, backlog: int, mode: int | None
) -> tuple[trio.socket.SocketType, tuple[int, int]]:
    """Bind, chmod and listen in a private directory, then link the socket file into place."""
    private, private_fd = _make_private_directory(dir_fd)
    try:
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            address = _handle_path(
                private_fd, _BIND_NAME, os.path.join(directory, private, _BIND_NAME)
            )
            await sock.bind(address)
            try:
                info = os.lstat(_BIND_NAME, dir_fd=private_fd)
            except FileNotFoundError:
                # Bound by name (no /proc), and the name led elsewhere: someone
                # moved the private directory. Nothing of ours was touched.
                raise OSError(
                    errno.EADDRNOTAVAIL,
                    f"the directory of {path!r} changed while the server was binding",
                ) from None
            if mode is not None:
                # Only we can write in the private directory: this chmod reaches our socket.
                os.chmod(_BIND_NAME, mode, dir_fd=private_fd)
            sock.listen(backlog)
            _link_into_place(private_fd, dir_fd, name, path)
        except BaseException:
            sock.close()
            raise
    finally:
        _remove_private_directory(dir_fd, private, private_fd)
    return sock, _identity(info)


@final
class _SocketFile:
    """The socket file a server created: removed at shutdown if it is still ours."""

    __slots__ = ("_dir_fd", "_identity", "_name")

    def __init__(self, dir_fd: int, name: str, identity: tuple[int, int]) -> None:
        self._dir_fd = dir_fd
        self._name = name
        self._identity = identity

    def remove(self) -> None:
        # Only our own file: a newer server may have bound the path since.
        if self._dir_fd >= 0:
            _unlink_if_same(self._dir_fd, self._name, self._identity)

    def close(self) -> None:
        dir_fd, self._dir_fd = self._dir_fd, -1
        if dir_fd >= 0:
            os.close(dir_fd)


async def _open_unix_listener(
    path: str, backlog: int | None, mode: int | None
) -> tuple[trio.socket.SocketType, _SocketFile | None]:
    backlog = _DEFAULT_BACKLOG if backlog is None else min(backlog, _DEFAULT_BACKLOG)
    if _is_abstract(path):
        sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
        try:
            await sock.bind(path)
            sock.listen(backlog)
        except BaseException:
            sock.close()
            raise
        return sock, None
    directory, name = os.path.split(path)
    if name in ("", ".", ".."):
        raise ValueError(f"path must end with the socket file's name, not {path!r}")
    dir_fd = os.open(directory or ".", _O_PARENT)
    try:
        await _remove_stale_socket(dir_fd, name, path)
        sock, identity = await _bind_privately(dir_fd, directory, name, path, backlog, mode)
    except BaseException:
        os.close(dir_fd)
        raise
    return sock, _SocketFile(dir_fd, name, identity)


async def serve_unix(
    handler: UnixHandler,
    path: str | os.PathLike[str],
    *,
    codec: Codec | None = None,
    max_connections: int | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
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
          listens on (left by a crashed server) is replaced; anything else
          there (a regular file, a directory, a symlink, wherever it points) is
          refused and kept. On Linux, a path starting with ``"\\0"`` names an
          abstract socket, which has no file. Paths are limited to about 100
          bytes by the system (on systems without ``/proc/self/fd``, such as
          macOS, the directory's path to about 80 bytes).
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
          Not allowed with an abstract socket, which has no permissions.
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
    path = _check_path(path)
    backlog = check_count("backlog", backlog)
    _check_mode(path, mode)
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
    sock, socket_file = await _open_unix_listener(path, backlog, mode)
    try:
        await _serve(core, sock, path, socket_file, task_status)
    finally:
        if socket_file is not None:
            socket_file.close()


async def _serve(
    core: ServerCore[UnixConnection],
    sock: trio.socket.SocketType,
    path: str,
    socket_file: _SocketFile | None,
    task_status: trio.TaskStatus[UnixServer],
) -> None:
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
        [sock],
        make_connection,
        server,
        task_status,
        listening=path,
        on_listeners_closed=None if socket_file is None else socket_file.remove,
    )


@asynccontextmanager
async def open_unix_server(
    handler: UnixHandler,
    path: str | os.PathLike[str],
    *,
    codec: Codec | None = None,
    max_connections: int | None = None,
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT,
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT,
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
