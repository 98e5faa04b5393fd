"""A server with every default bounds what a peer can hold (issue 15.4).

Silent connections are closed after ``DEFAULT_IDLE_TIMEOUT``, a started frame
must finish within ``DEFAULT_FRAME_TIMEOUT``, a TLS handshake within
``DEFAULT_TLS_HANDSHAKE_TIMEOUT``, and at most ``DEFAULT_MAX_PENDING_HANDSHAKES``
handshakes run at once. ``None`` passed explicitly still means "no limit".

On the virtual network under ``MockClock(autojump_threshold=0)``.
"""

from __future__ import annotations

import functools
import inspect
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

import trionet
from trionet import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_PENDING_HANDSHAKES,
    DEFAULT_TLS_HANDSHAKE_TIMEOUT,
    EventLog,
    FrameTimeout,
    LengthPrefixed,
    TCPConnection,
    TCPServer,
    serve_tcp,
)
from trionet.testing import VirtualNetwork

SERVER = "server.trionet.test"
pytestmark = pytest.mark.net(server=SERVER, ipv6=False, default_host="client")


def test_the_defaults_are_finite_and_documented_values() -> None:
    assert (DEFAULT_IDLE_TIMEOUT, DEFAULT_FRAME_TIMEOUT) == (600.0, 60.0)
    assert (DEFAULT_TLS_HANDSHAKE_TIMEOUT, DEFAULT_MAX_PENDING_HANDSHAKES) == (10.0, 128)
    for serve in (trionet.serve_tcp, trionet.open_tcp_server):
        defaults = {
            name: parameter.default for name, parameter in inspect.signature(serve).parameters.items()
        }
        assert defaults["idle_timeout"] == DEFAULT_IDLE_TIMEOUT
        assert defaults["frame_timeout"] == DEFAULT_FRAME_TIMEOUT
        assert defaults["tls_handshake_timeout"] == DEFAULT_TLS_HANDSHAKE_TIMEOUT
        assert defaults["max_pending_handshakes"] == DEFAULT_MAX_PENDING_HANDSHAKES


@asynccontextmanager
async def server_on(
    net: VirtualNetwork, handler: Callable[[TCPConnection], Awaitable[object]], **options: Any
) -> AsyncIterator[TCPServer]:
    async with trio.open_nursery() as nursery:
        with net.host(SERVER):
            server: TCPServer = await nursery.start(functools.partial(serve_tcp, handler, 80, **options))
        yield server
        nursery.cancel_scope.cancel()


async def closed_after(stream: trio.abc.Stream) -> float:
    """Seconds until the server closes ``stream`` (EOF or reset)."""
    start = trio.current_time()
    with trio.fail_after(10 * DEFAULT_IDLE_TIMEOUT):
        try:
            while await stream.receive_some():
                pass
        except trio.BrokenResourceError:
            pass
    return trio.current_time() - start


async def read_forever(conn: TCPConnection) -> None:
    while await conn.stream.receive_some():
        pass


async def echo(conn: TCPConnection) -> None:
    async for message in conn.channel:
        await conn.channel.send(message)


async def test_by_default_a_silent_connection_is_closed_after_the_idle_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    log = EventLog()
    async with server_on(net, read_forever, observer=log), await trio.open_tcp_stream(SERVER, 80) as silent:
        assert await closed_after(silent) == DEFAULT_IDLE_TIMEOUT
    assert [event.details["reason"] for event in log.of_kind("tcp.shed")] == ["idle_timeout"]


async def test_by_default_a_started_frame_must_finish_within_the_frame_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    errors: list[BaseException] = []

    async def handler(conn: TCPConnection) -> None:
        try:
            await conn.channel.receive()
        except FrameTimeout as exc:
            errors.append(exc)

    async with (
        server_on(net, handler, codec=LengthPrefixed()),
        await trio.open_tcp_stream(SERVER, 80) as holder,
    ):
        # Half a frame, then nothing more. The peers held 8 MiB - 1 of a
        # frame each this way, for as long as they liked.
        await holder.send_all(LengthPrefixed().encode(b"h" * 100)[:50])
        assert await closed_after(holder) == DEFAULT_FRAME_TIMEOUT
    assert [type(error) for error in errors] == [FrameTimeout]


async def test_passing_none_means_no_limit(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async with server_on(
        net, echo, codec=LengthPrefixed(), idle_timeout=None, frame_timeout=None
    ) as server:
        async with (
            await trio.open_tcp_stream(SERVER, 80) as silent,
            await trio.open_tcp_stream(SERVER, 80) as holder,
        ):
            await holder.send_all(LengthPrefixed().encode(b"h" * 100)[:50])
            await trio.sleep(10 * DEFAULT_IDLE_TIMEOUT)
            assert server.connection_count == 2
            await holder.send_all(LengthPrefixed().encode(b"h" * 100)[50:])
            assert await holder.receive_some() == LengthPrefixed().encode(b"h" * 100)
            await silent.send_all(LengthPrefixed().encode(b"s"))
            assert await silent.receive_some() == LengthPrefixed().encode(b"s")
        assert server.statistics().connections_shed == 0


# -------------------------------------------------------------------- TLS


@pytest.fixture
def server_context(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> ssl.SSLContext:
    return contexts[0]


async def test_by_default_a_silent_tls_client_is_shed_after_the_handshake_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, server_context: ssl.SSLContext
) -> None:
    log = EventLog()
    async with (
        server_on(net, read_forever, ssl_context=server_context, observer=log),
        await trio.open_tcp_stream(SERVER, 80) as silent,
    ):
        assert await closed_after(silent) == DEFAULT_TLS_HANDSHAKE_TIMEOUT
    assert [event.details["reason"] for event in log.of_kind("tcp.shed")] == ["tls_handshake_timeout"]


async def test_by_default_at_most_128_tls_handshakes_are_pending(
    net: VirtualNetwork,
    autojump_clock: trio.testing.MockClock,
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    # 2,000 silent clients cost 51.5 KiB each while their handshake was pending:
    # now the 129th waits in the kernel's backlog until a handshake ends.
    server_context, client_context = contexts
    count = DEFAULT_MAX_PENDING_HANDSHAKES + 1
    async with server_on(net, echo, codec=LengthPrefixed(), ssl_context=server_context) as server:
        silent = [await trio.open_tcp_stream(SERVER, 80) for _ in range(count)]
        await trio.sleep(1)
        assert server.connection_count == DEFAULT_MAX_PENDING_HANDSHAKES
        assert not server.statistics().accepting
        # A client that wants to talk is accepted as soon as a slot frees: the
        # silent ones are shed at the handshake timeout.
        async with trio.open_nursery() as nursery:
            nursery.start_soon(functools.partial(closed_after, silent[-1]))
            tcp = await trio.open_tcp_stream(SERVER, 80)
            good = trio.SSLStream(tcp, client_context, server_hostname="server.trionet.test")
            started = trio.current_time()
            channel = trionet.MessageChannel(good, LengthPrefixed())
            await channel.send(b"hello")
            assert await channel.receive() == b"hello"
            assert trio.current_time() - started <= 2 * DEFAULT_TLS_HANDSHAKE_TIMEOUT
            await channel.aclose()
        for stream in silent:
            await stream.aclose()
        assert server.statistics().connections_shed == count


async def test_max_pending_handshakes_none_means_no_cap(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, server_context: ssl.SSLContext
) -> None:
    count = DEFAULT_MAX_PENDING_HANDSHAKES + 10
    async with server_on(
        net, echo, ssl_context=server_context, max_pending_handshakes=None
    ) as server:
        silent = [await trio.open_tcp_stream(SERVER, 80) for _ in range(count)]
        await trio.sleep(1)
        assert server.connection_count == count
        for stream in silent:
            await stream.aclose()


async def test_max_pending_handshakes_is_checked() -> None:
    with pytest.raises(ValueError, match="max_pending_handshakes"):
        await serve_tcp(echo, 0, host="127.0.0.1", max_pending_handshakes=0)
    with pytest.raises(TypeError, match="max_pending_handshakes"):
        await serve_tcp(echo, 0, host="127.0.0.1", max_pending_handshakes=True)


@pytest.mark.parametrize(
    "entry", [trionet.serve_tcp, trionet.open_tcp_server, trionet.serve_unix, trionet.open_unix_server]
)
def test_every_stream_server_entry_point_has_the_same_finite_defaults(
    entry: Callable[..., Any],
) -> None:
    # serve_unix once passed idle_timeout=None and frame_timeout=None itself.
    parameters = inspect.signature(entry).parameters
    assert parameters["idle_timeout"].default == DEFAULT_IDLE_TIMEOUT
    assert parameters["frame_timeout"].default == DEFAULT_FRAME_TIMEOUT
    assert parameters["tls_handshake_timeout"].default == DEFAULT_TLS_HANDSHAKE_TIMEOUT
