"""The options of a server, checked once: StreamServerOptions, UDPServerOptions.

:func:`~trionet.serve_tcp`, :func:`~trionet.serve_unix` and
:func:`~trionet.serve_udp` take these as keyword arguments (their signatures
are the public, documented form) and pack them into one frozen options object,
which checks every value as it is built. The machinery that runs the server
(``server_core.py``, ``udp_server_core.py``) reads the checked values from it
and from nowhere else; the ``open_*_server`` functions are derived from the
``serve_*`` ones (:func:`~trionet._endpoints.server_base.server_context`), so
no option is restated anywhere.
"""

from __future__ import annotations

import ssl
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any, Final, final

from .._adapters.channel import DEFAULT_ABORT_TIMEOUT
from .._adapters.observe import Observer
from .._adapters.udp_receive import Datagram
from .._sansio.codecs import Codec
from .._sansio.validate import check_count, check_grace, check_optional_count, check_positive, check_timeout

__all__ = [
    "DEFAULT_FRAME_TIMEOUT",
    "DEFAULT_MAX_CONCURRENCY",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_MAX_PENDING_HANDSHAKES",
    "DEFAULT_SHUTDOWN_GRACE",
    "DEFAULT_TLS_HANDSHAKE_TIMEOUT",
    "PROXY_HEADER_TIMEOUT",
    "RequestKey",
    "StreamServerOptions",
    "UDPServerOptions",
]

RequestKey = Callable[[Datagram], Hashable | None]

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
# trionet's choice: a load balancer sends its PROXY protocol header at once, in
# the connection's first segment; a peer that has not sent it after as long as a
# TLS handshake may take is not one.
PROXY_HEADER_TIMEOUT: Final = 10.0
# trionet's choice: enough UDP handlers in flight to hide the latency of a
# database or upstream call per request, few enough that a flood cannot make
# the server hold unbounded work (each worker is one trio task).
DEFAULT_MAX_CONCURRENCY: Final = 100


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class StreamServerOptions:
    """What a TCP or Unix server was asked for, each value checked.

    The fields are the keyword options of :func:`~trionet.serve_tcp`, with the
    same names and defaults, and documented there. Building one raises
    :exc:`TypeError` or :exc:`ValueError` for a value of the wrong type or out
    of range, before any socket is opened.
    """

    codec: Codec[Any] | None = None
    max_connections: int | None = None
    idle_timeout: float | None = DEFAULT_IDLE_TIMEOUT
    frame_timeout: float | None = DEFAULT_FRAME_TIMEOUT
    abort_timeout: float = DEFAULT_ABORT_TIMEOUT
    ssl_context: ssl.SSLContext | None = None
    tls_handshake_timeout: float = DEFAULT_TLS_HANDSHAKE_TIMEOUT
    max_pending_handshakes: int | None = DEFAULT_MAX_PENDING_HANDSHAKES
    end_idle_on_shutdown: bool = True
    strict: bool = False
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    proxy_protocol: bool = False
    observer: Observer | None = None

    def __post_init__(self) -> None:
        checked = {
            "proxy_protocol": bool(self.proxy_protocol),
            "max_connections": check_optional_count("max_connections", self.max_connections),
            "idle_timeout": check_timeout("idle_timeout", self.idle_timeout),
            "frame_timeout": check_timeout("frame_timeout", self.frame_timeout),
            "abort_timeout": check_positive("abort_timeout", self.abort_timeout),
            "tls_handshake_timeout": check_positive("tls_handshake_timeout", self.tls_handshake_timeout),
            "max_pending_handshakes": check_optional_count(
                "max_pending_handshakes", self.max_pending_handshakes
            ),
            "end_idle_on_shutdown": bool(self.end_idle_on_shutdown),
            "strict": bool(self.strict),
            "shutdown_grace": check_grace("shutdown_grace", self.shutdown_grace),
        }
        if self.ssl_context is not None and not isinstance(self.ssl_context, ssl.SSLContext):
            raise TypeError(f"ssl_context must be an ssl.SSLContext or None, not {self.ssl_context!r}")
        for name, value in checked.items():
            object.__setattr__(self, name, value)



@final
@dataclass(frozen=True, slots=True, kw_only=True)
class UDPServerOptions:
    """What a UDP server was asked for, each value checked.

    The fields are the keyword options of :func:`~trionet.serve_udp` that the
    worker pool reads, with the same names and defaults, and documented there
    (the reply cache's and the endpoint's options are checked where they are
    used: :class:`~trionet._sansio.replies.ReplyCache` and
    :func:`~trionet.open_udp_endpoint`).
    """

    max_concurrency: int = DEFAULT_MAX_CONCURRENCY
    request_key: RequestKey | None = None
    strict: bool = False
    shutdown_grace: float = DEFAULT_SHUTDOWN_GRACE
    observer: Observer | None = None

    def __post_init__(self) -> None:
        if self.request_key is not None and not callable(self.request_key):
            raise TypeError(f"request_key must be a callable or None, not {self.request_key!r}")
        object.__setattr__(self, "max_concurrency", check_count("max_concurrency", self.max_concurrency))
        object.__setattr__(self, "strict", bool(self.strict))
        object.__setattr__(self, "shutdown_grace", check_grace("shutdown_grace", self.shutdown_grace))
