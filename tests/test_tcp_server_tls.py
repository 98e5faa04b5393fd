"""serve_tcp with ssl_context: round trips, certificate errors and the handshake timeout.

Tests timed on ``autojump_clock`` take ``net``: the same loopback literals, on the
virtual network (a mock clock must not jump while a kernel delivers bytes).
"""

from __future__ import annotations

import logging
import ssl

import pytest
import trio
import trio.testing

from trionet import Event, EventLog, LengthPrefixed, MessageChannel, TCPConnection, open_tcp_server
from trionet.testing import VirtualNetwork

from .conftest import TLS_HOSTNAME as HOSTNAME
from .conftest import trionet_records


class Waiter:
    """An observer that records events and lets a test wait for one kind."""

    def __init__(self) -> None:
        self.log = EventLog()
        self.seen: dict[str, trio.Event] = {}

    def __call__(self, event: Event) -> None:
        self.log(event)
        self.seen.setdefault(event.kind, trio.Event()).set()

    async def wait_for(self, kind: str) -> None:
        with trio.fail_after(5):
            await self.seen.setdefault(kind, trio.Event()).wait()


async def echo(conn: TCPConnection) -> None:
    async for message in conn.channel:
        await conn.channel.send(message)


async def tls_client(
    port: int, client_context: ssl.SSLContext, hostname: str = HOSTNAME, host: str = "127.0.0.1"
) -> trio.SSLStream[trio.SocketStream]:
    tcp = await trio.open_tcp_stream(host, port)
    stream = trio.SSLStream(tcp, client_context, server_hostname=hostname)
    try:
        await stream.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return stream


async def test_tls_round_trip_with_a_codec_over_both_families(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    server_context, client_context = contexts
    async with open_tcp_server(echo, 0, codec=LengthPrefixed(), ssl_context=server_context) as server:
        for host in ("127.0.0.1", "::1"):
            stream = await tls_client(server.port, client_context, host=host)
            async with MessageChannel(stream, LengthPrefixed()) as channel:
                for size in (0, 1, 1000, 100_000):
                    await channel.send(b"s" * size)
                    assert await channel.receive() == b"s" * size
        assert server.statistics().handshake_failures == 0


async def test_the_handler_sees_a_tls_stream_and_the_close_is_orderly(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts
    kinds: list[str] = []

    async def hello(conn: TCPConnection) -> None:
        kinds.append(type(conn.stream).__name__)
        await conn.stream.send_all(b"hello over tls")

    async with (
        open_tcp_server(hello, 0, host="127.0.0.1", ssl_context=server_context) as server,
        await tls_client(server.port, client_context) as stream,
    ):
        received = b""
        # close_notify arrives: an orderly end, not BrokenResourceError.
        while chunk := await stream.receive_some():
            received += chunk
    assert received == b"hello over tls"
    assert kinds == ["SSLStream"]


async def test_a_wrong_hostname_fails_with_a_clear_error_and_the_handler_never_runs(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="trionet")
    server_context, client_context = contexts
    ran = False
    waiter = Waiter()

    async def handler(conn: TCPConnection) -> None:
        nonlocal ran
        ran = True

    async with open_tcp_server(
        handler, 0, host="127.0.0.1", ssl_context=server_context, observer=waiter
    ) as server:
        with pytest.raises(trio.BrokenResourceError) as info:
            await tls_client(server.port, client_context, hostname="wrong.trionet.test")
        cause = info.value.__cause__
        assert isinstance(cause, ssl.SSLCertVerificationError)
        assert "wrong.trionet.test" in str(cause)
        # The server notices the aborted handshake once the client is gone.
        await waiter.wait_for("tcp.closed")
    assert not ran
    assert server.statistics().handshake_failures == 1
    assert server.statistics().handler_errors == 0
    levels = [r.levelno for r in trionet_records(caplog)]
    assert levels == [logging.INFO]


@pytest.mark.net(default_host="client")
async def test_a_client_that_never_starts_the_handshake_is_shed_at_the_timeout(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    net: VirtualNetwork,
    autojump_clock: trio.testing.MockClock,
) -> None:
    server_context, _ = contexts
    log = EventLog()
    async with open_tcp_server(
        echo, 0, host="127.0.0.1", ssl_context=server_context, tls_handshake_timeout=3,
        observer=log,
    ) as server:
        begin = trio.current_time()
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as silent:
            assert await silent.receive_some() == b""
            assert trio.current_time() - begin == 3
    (shed,) = log.of_kind("tcp.shed")
    assert shed.details["reason"] == "tls_handshake_timeout"
    assert server.statistics().connections_shed == 1


async def test_plain_tcp_to_a_tls_server_is_a_handshake_failure_not_a_handler_error(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, _ = contexts
    waiter = Waiter()
    async with open_tcp_server(
        echo, 0, host="127.0.0.1", ssl_context=server_context, observer=waiter
    ) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            await stream.send_all(b"GET / HTTP/1.0\r\n\r\n")
            with trio.fail_after(5):
                while await stream.receive_some():
                    pass
        await waiter.wait_for("tcp.closed")
        assert server.statistics().handshake_failures == 1
        assert server.statistics().handler_errors == 0


@pytest.mark.net(default_host="client")
async def test_tls_with_idle_timeout_sheds_an_idle_client(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    net: VirtualNetwork,
    autojump_clock: trio.testing.MockClock,
) -> None:
    server_context, client_context = contexts
    async with open_tcp_server(
        echo, 0, codec=LengthPrefixed(), ssl_context=server_context, idle_timeout=10
    ) as server:
        stream = await tls_client(server.port, client_context)
        async with MessageChannel(stream, LengthPrefixed()) as channel:
            await channel.send(b"ping")
            assert await channel.receive() == b"ping"
            last = trio.current_time()
            with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):
                await channel.receive()
            assert trio.current_time() - last == 10
