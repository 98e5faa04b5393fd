"""The client side of TLS, for connect_tcp and connect_unix: one handshake, errors that say why."""

from __future__ import annotations

import ssl

import trio

__all__ = ["handshake_error", "start_tls"]


async def start_tls(
    stream: trio.abc.Stream,
    context: ssl.SSLContext,
    server_hostname: str | None,
    handshake_timeout: float,
    where: object,
) -> trio.SSLStream[trio.abc.Stream]:
    """Run TLS over ``stream`` and complete the handshake within ``handshake_timeout``.

    ``where`` (the peer's address or path) is named in the error.

    Raises:
      trio.BrokenResourceError: The handshake failed; the message says why and
          ``__cause__`` is the :exc:`ssl.SSLError`.
      trio.TooSlowError: The handshake took longer than ``handshake_timeout``.
    """
    tls = trio.SSLStream(stream, context, server_hostname=server_hostname)
    try:
        with trio.fail_after(handshake_timeout):
            await tls.do_handshake()
    except trio.BrokenResourceError as exc:
        raise handshake_error(where, exc) from exc.__cause__ or exc
    return tls


def handshake_error(where: object, error: trio.BrokenResourceError) -> trio.BrokenResourceError:
    """A TLS handshake failure whose message says why (trio's has none: it is in __cause__)."""
    cause = error.__cause__
    if isinstance(cause, ssl.SSLCertVerificationError) and cause.verify_message:
        reason = f"certificate verify failed: {cause.verify_message}"
    elif isinstance(cause, ssl.SSLError) and cause.reason:
        reason = str(cause.reason).replace("_", " ").lower()
    elif cause is not None:
        reason = str(cause) or type(cause).__name__
    else:
        reason = str(error) or "the peer closed the connection"
    return trio.BrokenResourceError(f"TLS handshake with {where} failed: {reason}")
