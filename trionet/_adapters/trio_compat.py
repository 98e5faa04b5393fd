"""trionet's reaches into trio's private internals, kept in one place.

:class:`~trionet.MessageChannel`'s socket fast path (docs/design/fast-path.rst)
calls the non-blocking :class:`socket.socket` under a :class:`trio.socket.SocketType`
directly, to pay one trio schedule point per message instead of trio's wrappers'
two. trio has no public way to get that socket: its implementation class
``trio._socket._SocketType`` keeps it in ``_sock``. (And a connection's typed
``ssl_object`` is the :class:`ssl.SSLObject` a :class:`trio.SSLStream` keeps
in ``_ssl_object``.) Everything that knows this is here;
``tests/test_channel_fastpath.py`` and ``tests/test_server_shape.py`` fail
loudly if a trio release moves them, and until this module is fixed the
channel falls back to trio's public socket methods (correct, only slower) and
``ssl_object`` is ``None``.
"""

from __future__ import annotations

import socket as _stdlib_socket
import ssl

import trio

__all__ = ["ssl_object_of", "stdlib_socket_of"]

_TrioSocketType: type | None
try:
    from trio._socket import _SocketType
except ImportError:  # pragma: no cover - a trio that reorganised its internals
    _TrioSocketType = None
else:
    _TrioSocketType = _SocketType


def stdlib_socket_of(sock: trio.socket.SocketType) -> _stdlib_socket.socket | None:
    """The non-blocking stdlib socket under a trio socket, or ``None``.

    ``None`` for sockets that are not trio's own (the virtual network's, a custom
    socket factory's), and whenever trio's internals do not look as expected: the
    caller then uses the trio socket's public methods.
    """
    if _TrioSocketType is None or type(sock) is not _TrioSocketType:
        return None
    raw = getattr(sock, "_sock", None)
    if type(raw) is not _stdlib_socket.socket:
        return None
    if raw.fileno() != sock.fileno() or raw.getblocking():
        return None
    return raw


def ssl_object_of(stream: trio.SSLStream[trio.abc.Stream]) -> ssl.SSLObject | None:
    """The :class:`ssl.SSLObject` under a :class:`trio.SSLStream`, or ``None``.

    trio forwards its methods (``getpeercert``...) but types none of them and
    has no public attribute for the object itself; it keeps it in
    ``_ssl_object``. ``None`` if a trio release moves it (the caller then has
    nothing to offer, which its documentation says).
    """
    sslobj = getattr(stream, "_ssl_object", None)
    return sslobj if isinstance(sslobj, ssl.SSLObject) else None
