"""serve_tcp's limits: max_connections and idle_timeout.

Timed tests run on ``autojump_clock`` with ``net``: their loopback literals reach
the virtual network, where the mock clock cannot outrun the kernel.

Through the public API. The accept-error back-off (driven with a fake listener,
below the public API), ``IdleTrackingStream`` and ``wait_idle`` are tested in
``test_adapter_internals.py``; a server really out of descriptors in
``test_tcp_server_emfile.py``.
"""

from __future__ import annotations

import functools

import pytest
import trio
import trio.testing

from trionet import (
    EventLog,
    LengthPrefixed,
    MessageChannel,
    TCPConnection,
    open_tcp_server,
    serve_tcp,
)
from trionet.testing import VirtualNetwork

pytestmark = pytest.mark.net(default_host="client")

# ------------------------------------------------------------ max_connections


async def test_max_connections_ten_with_fifty_clients_runs_at_most_ten_handlers_and_serves_all(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    running = 0
    most = 0
    served: list[bytes] = []
    log = EventLog()

    async def handler(conn: TCPConnection) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            message = await conn.channel.receive()
            await trio.sleep(1)
            await conn.channel.send(message)
        finally:
            running -= 1

    async def client(number: int) -> None:
        host = "127.0.0.1" if number % 2 else "::1"
        stream = await trio.open_tcp_stream(host, server.port)  # never refused
        async with MessageChannel(stream, LengthPrefixed()) as channel:
            await channel.send(b"%d" % number)
            served.append(await channel.receive())

    async with open_tcp_server(
        handler, 0, codec=LengthPrefixed(), max_connections=10, observer=log
    ) as server:
        begin = trio.current_time()
        async with trio.open_nursery() as nursery:
            for number in range(50):
                nursery.start_soon(client, number)
            await trio.testing.wait_all_tasks_blocked()
            stats = server.statistics()
            assert stats.connections_active == 10
            assert not stats.accepting
        elapsed = trio.current_time() - begin
    assert most == 10
    assert sorted(served) == sorted(b"%d" % n for n in range(50))
    assert elapsed == pytest.approx(5)  # five waves of ten, one second each
    assert log.of_kind("tcp.paused")[0].details == {"active": 10, "limit": 10}
    assert log.of_kind("tcp.resumed")
    assert server.statistics().connections_accepted == 50
    assert net.statistics().sockets == 0  # nothing left open


async def test_at_the_limit_new_clients_wait_in_the_backlog_and_are_not_refused(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    release = trio.Event()
    order: list[int] = []

    async def handler(conn: TCPConnection) -> None:
        order.append(int(await conn.channel.receive()))
        await release.wait()

    async with open_tcp_server(
        handler, 0, host="127.0.0.1", codec=LengthPrefixed(), max_connections=1
    ) as server:
        channels = []
        for number in range(3):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            channel = MessageChannel(stream, LengthPrefixed())
            await channel.send(b"%d" % number)
            channels.append(channel)
            await trio.testing.wait_all_tasks_blocked()
        assert order == [0]
        assert server.connection_count == 1
        release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert order == [0, 1, 2]
        for channel in channels:
            await channel.aclose()


# --------------------------------------------------------------- idle_timeout


async def test_an_idle_client_is_disconnected_at_the_timeout_exactly(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    log = EventLog()
    handler_cancelled = False

    async def handler(conn: TCPConnection) -> None:
        nonlocal handler_cancelled
        try:
            async for message in conn.channel:
                await conn.channel.send(message)
        except trio.Cancelled:
            handler_cancelled = True
            raise

    async with open_tcp_server(
        handler, 0, codec=LengthPrefixed(), idle_timeout=7, observer=log
    ) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with MessageChannel(stream, LengthPrefixed()) as channel:
            await channel.send(b"one")
            assert await channel.receive() == b"one"
            last = trio.current_time()
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()
            assert trio.current_time() - last == 7
    assert handler_cancelled
    (shed,) = log.of_kind("tcp.shed")
    assert shed.details["reason"] == "idle_timeout"
    assert server.statistics().connections_shed == 1
    assert server.statistics().handler_errors == 0
    assert net.statistics().sockets == 0  # nothing left open


async def test_an_active_client_is_not_disconnected(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_tcp_server(echo_channel, 0, codec=LengthPrefixed(), idle_timeout=5) as server:
        stream = await trio.open_tcp_stream("::1", server.port)
        async with MessageChannel(stream, LengthPrefixed()) as channel:
            begin = trio.current_time()
            for number in range(20):  # 20 x 4.9 s: far past the timeout in total
                await trio.sleep(4.9)
                await channel.send(b"%d" % number)
                assert await channel.receive() == b"%d" % number
            assert trio.current_time() - begin == pytest.approx(98)
        assert server.statistics().connections_shed == 0


async def test_bytes_sent_by_the_server_alone_keep_a_connection_alive(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def ticker(conn: TCPConnection) -> None:
        for _ in range(10):
            await trio.sleep(3)
            await conn.stream.send_all(b".")

    async with open_tcp_server(ticker, 0, host="127.0.0.1", idle_timeout=4) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            received = b""
            while chunk := await stream.receive_some():
                received += chunk
            assert received == b"." * 10
        assert server.statistics().connections_shed == 0


async def test_the_idle_clock_starts_at_accept_for_a_client_that_never_sends(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async with open_tcp_server(echo_channel, 0, codec=LengthPrefixed(), idle_timeout=2.5) as server:
        begin = trio.current_time()
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as stream:
            assert await stream.receive_some() == b""
            assert trio.current_time() - begin == 2.5


async def echo_channel(conn: TCPConnection) -> None:
    async for message in conn.channel:
        await conn.channel.send(message)


# ------------------------------------------------ max_connections, two listeners


async def test_max_connections_with_two_listeners_never_exceeds_the_limit(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    running = 0
    most = 0

    async def handler(conn: TCPConnection) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        await trio.sleep(1)
        running -= 1

    async with trio.open_nursery() as nursery:
        server = await nursery.start(functools.partial(serve_tcp, handler, 0, max_connections=3))
        streams = []
        for number in range(12):
            streams.append(
                await trio.open_tcp_stream("127.0.0.1" if number % 2 else "::1", server.port)
            )
        await trio.sleep(10)
        assert most == 3
        assert server.statistics().connections_accepted == 12
        for stream in streams:
            await stream.aclose()
        server.shutdown_nowait(grace=0)
