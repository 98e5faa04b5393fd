"""A Unix server's socket file: created, and removed, where no one else can redirect it.

A stale file left by a crashed server is replaced, a file in use is not, and
the file is removed when the server shuts down (unless another server has
replaced it meanwhile). The socket file is created, and its mode set, where no
one else can reach it (issue 15.1; the reasoning is in the comment below).
``unix.py`` runs the server on the socket this opens.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import secrets
import stat
import sys
from typing import Final, final

import trio

__all__ = ["SocketFile", "check_path", "is_abstract", "open_unix_listener"]

# Linux caps listen()'s backlog at net.core.somaxconn; asking for more is harmless
# (see trio.open_tcp_listeners).
_DEFAULT_BACKLOG: Final = 0xFFFF


def is_abstract(path: str) -> bool:
    """Whether ``path`` names a Linux abstract socket (a leading NUL), which has no file."""
    return path.startswith("\0")


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
class SocketFile:
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


async def open_unix_listener(
    path: str, backlog: int | None, mode: int | None
) -> tuple[trio.socket.SocketType, SocketFile | None]:
    """Bind and listen on ``path`` as the comment above says; the file is ``None`` if abstract.

    The caller owns the socket and the :class:`SocketFile` (its directory handle):
    it calls ``remove()`` when the server stops listening, and ``close()`` at the end.
    """
    backlog = _DEFAULT_BACKLOG if backlog is None else min(backlog, _DEFAULT_BACKLOG)
    if is_abstract(path):
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
    return sock, SocketFile(dir_fd, name, identity)


def check_path(path: str | os.PathLike[str]) -> str:
    """The path of a Unix socket as text, checked (``"\\0name"``: a Linux abstract socket)."""
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"path must be a str or an os.PathLike of str, not {path!r}")
    if not text:
        # trio's bind() would fail with an IndexError, connect() with EINVAL.
        raise ValueError("path must not be empty: give the socket file's path "
                         "(or \"\\0name\" for a Linux abstract socket)")
    return text
