"""Leaving a server: bounded by the grace, bookkeeping whatever happens, idle connections end at once.

Real loopback tests use the real clock (no MockClock over real sockets) and
bound every wait with ``fail_after``; the exact timings run on the virtual
network under MockClock.
"""

from __future__ import annotations

import functools
import os
import ssl
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing

from trionet import (
    Event,
    EventLog,
    LengthPrefixed,
    Lines,
    MessageChannel,
    TCPConnection,
    UnixConnection,
    open_tcp_server,
    open_unix_server,
    serve_tcp,
)
from trionet.testing import VirtualNetwork

from .conftest import TLS_HOSTNAME as HOSTNAME

#: A frame far larger than both sockets' buffers, so a never-reading client
#: leaves the handler blocked in the middle of it.
BIG = 6 * 1024 * 1024  # more than the 4 MiB + 128 KiB Linux buffers on loopback
KINDS = ("tcp", "tls", "unix")


class Counter:
    """An observer that counts accepts and closes, and wakes a test at a count."""

    def __init__(self, kind: str) -> None:
        self.prefix = "unix" if kind == "unix" else "tcp"
        self.log = EventLog()
        self.accepted = 0
        self.closed = 0
        self._wanted = 0
        self._reached = trio.Event()

    def __call__(self, event: Event) -> None:
        self.log(event)
        if event.kind == f"{self.prefix}.accept":
            self.accepted += 1
        elif event.kind == f"{self.prefix}.closed":
            self.closed += 1

    def kinds(self, suffix: str) -> list[Event]:
        return self.log.of_kind(f"{self.prefix}.{suffix}")


class Setup:
    """One server kind (plain TCP, TLS, Unix) with a client that can connect to it."""

    def __init__(self, kind: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext], path: str):
        self.kind = kind
        self.server_context, self.client_context = contexts
        self.path = path

    def open(self, handler: Callable[[Any], Awaitable[object]], **options: Any
             ) -> AbstractAsyncContextManager[Any]:
        if self.kind == "unix":
            return open_unix_server(handler, self.path, **options)
        if self.kind == "tls":
            options["ssl_context"] = self.server_context
        return open_tcp_server(handler, 0, host="127.0.0.1", **options)

    async def connect(self, server: Any) -> trio.abc.Stream:
        if self.kind == "unix":
            return await trio.open_unix_socket(self.path)
        tcp = await trio.open_tcp_stream("127.0.0.1", server.port)
        if self.kind == "tcp":
            return tcp
        tls = trio.SSLStream(tcp, self.client_context, server_hostname=HOSTNAME)
        try:
            await tls.do_handshake()
        except BaseException:
            await trio.aclose_forcefully(tcp)
            raise
        return tls


@pytest.fixture(params=KINDS)
def setup(request: pytest.FixtureRequest, contexts: tuple[ssl.SSLContext, ssl.SSLContext]
          ) -> Any:
    with tempfile.TemporaryDirectory() as directory:
        yield Setup(request.param, contexts, os.path.join(directory, "s.sock"))


@asynccontextmanager
async def clients(setup: Setup, server: Any, count: int) -> AsyncIterator[list[trio.abc.Stream]]:
    streams = [await setup.connect(server) for _ in range(count)]
    try:
        yield streams
    finally:
        with trio.CancelScope(shield=True):  # also when the test's scope is cancelled
            for stream in streams:
                await trio.aclose_forcefully(stream)


def assert_every_connection_counted(server: Any, counter: Counter, accepted: int) -> None:
    stats = server.statistics()
    assert stats.connections_active == 0
    assert stats.connections_accepted == accepted
    assert counter.accepted == accepted
    assert counter.closed == accepted  # exactly one close event each


# ----------------------------------------------- a shutdown takes its grace, no more


@pytest.mark.parametrize("grace", [0, 0.5])
async def test_shutdown_with_a_client_that_never_reads_ends_within_the_grace_plus_one_second(
    setup: Setup, grace: float, no_fd_leak: None
) -> None:
    # Before: the stuck frame held the shutdown for abort_timeout (10 s) more.
    counter = Counter(setup.kind)
    sending = trio.Event()

    async def stream_forever(conn: TCPConnection | UnixConnection) -> None:
        while True:
            sending.set()
            await conn.channel.send(b"x" * BIG)

    streams: list[trio.abc.Stream] = []
    with trio.fail_after(grace + 8):
        try:
            async with setup.open(
                stream_forever, codec=LengthPrefixed(), observer=counter, shutdown_grace=grace
            ) as server:
                streams.append(await setup.connect(server))  # open until the server is gone
                await sending.wait()
                await trio.testing.wait_all_tasks_blocked()  # blocked mid-frame
                begin = trio.current_time()
            elapsed = trio.current_time() - begin
        finally:
            for stream in streams:
                await trio.aclose_forcefully(stream)
    assert elapsed < grace + 1, f"shutdown(grace={grace}) took {elapsed:.2f} s"
    assert_every_connection_counted(server, counter, 1)
    assert server.statistics().handler_errors == 0  # the reset is not the handler's fault
    assert len(counter.kinds("shutdown.grace_expired")) == 1


async def test_a_handler_waiting_for_a_reading_peer_keeps_its_orderly_close_at_the_grace() -> None:
    # Only connections whose send is blocked are reset; a waiting handler's
    # connection still ends with a FIN when it is cancelled.
    async def forever(conn: TCPConnection) -> None:
        await trio.sleep_forever()

    with trio.fail_after(5):
        async with open_tcp_server(forever, 0, host="127.0.0.1", shutdown_grace=0) as server:
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            await trio.testing.wait_all_tasks_blocked()
        async with stream:
            assert await stream.receive_some() == b""


@pytest.mark.net(ipv6=False)
async def test_abort_timeout_is_passed_to_each_channel(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    outcome: list[tuple[str, float]] = []

    async def cancelled_mid_frame(conn: TCPConnection) -> None:
        begin = trio.current_time()
        try:
            with trio.move_on_after(1):
                await conn.channel.send(b"x" * BIG)
        except trio.BrokenResourceError:
            outcome.append(("aborted", trio.current_time() - begin))
            raise

    with net.host("server"):
        async with open_tcp_server(cancelled_mid_frame, 7, codec=LengthPrefixed(),
                                   abort_timeout=2.5) as server:
            with net.host("client"):
                async with await trio.open_tcp_stream("10.0.0.1", 7):  # never reads
                    for _ in range(100):  # bounded
                        if outcome:
                            break
                        await trio.sleep(1)
    assert outcome == [("aborted", 3.5)]  # cancelled at 1 s, then 2.5 s to finish
    assert server.statistics().connections_active == 0


# ------------------------------------------------ bookkeeping on every way out


async def test_leaving_normally_counts_every_connection(setup: Setup, no_fd_leak: None) -> None:
    counter = Counter(setup.kind)

    async def echo(conn: TCPConnection | UnixConnection) -> None:
        async for message in conn.channel:
            await conn.channel.send(message)

    with trio.fail_after(10):
        async with setup.open(echo, codec=Lines(), observer=counter) as server, \
                clients(setup, server, 5) as streams:
            for stream in streams:
                await stream.send_all(b"hi\n")
                assert await stream.receive_some() == b"hi\n"
    assert_every_connection_counted(server, counter, 5)


async def test_a_cancelled_block_counts_every_connection(setup: Setup, no_fd_leak: None) -> None:
    # Before: aclose_forcefully raised Cancelled before the count was taken
    # down, so connections_active stayed at 5 and no close event came.
    counter = Counter(setup.kind)
    running = 0

    async def forever(conn: TCPConnection | UnixConnection) -> None:
        nonlocal running
        running += 1
        await trio.sleep_forever()

    with trio.fail_after(10):
        with trio.CancelScope() as scope:
            async with setup.open(forever, observer=counter) as server, \
                    clients(setup, server, 5):
                while running < 5:
                    await trio.testing.wait_all_tasks_blocked()
                scope.cancel()
                await trio.sleep_forever()
    assert scope.cancelled_caught
    assert_every_connection_counted(server, counter, 5)


async def test_an_expired_grace_counts_every_connection(setup: Setup, no_fd_leak: None) -> None:
    counter = Counter(setup.kind)
    running = 0

    async def forever(conn: TCPConnection | UnixConnection) -> None:
        nonlocal running
        running += 1
        await trio.sleep_forever()

    with trio.fail_after(10):
        async with setup.open(forever, observer=counter, shutdown_grace=0) as server, \
                clients(setup, server, 5):
            while running < 5:
                await trio.testing.wait_all_tasks_blocked()
    assert_every_connection_counted(server, counter, 5)
    (expired,) = counter.kinds("shutdown.grace_expired")
    assert expired.details["cancelled"] == 5


async def test_a_strict_handler_error_counts_every_connection(
    setup: Setup, no_fd_leak: None
) -> None:
    counter = Counter(setup.kind)
    running = 0

    async def fails_on_boom(conn: TCPConnection | UnixConnection) -> None:
        nonlocal running
        running += 1
        if await conn.channel.receive() == b"boom":
            raise KeyError("boom")

    with trio.fail_after(10):
        with pytest.RaisesGroup(pytest.RaisesExc(KeyError, match="boom"), flatten_subgroups=True):
            async with setup.open(fails_on_boom, codec=Lines(), strict=True,
                                  observer=counter) as server, \
                    clients(setup, server, 5) as streams:
                while running < 5:
                    await trio.testing.wait_all_tasks_blocked()
                await streams[0].send_all(b"boom\n")
                await trio.sleep_forever()
    assert_every_connection_counted(server, counter, 5)
    assert server.statistics().handler_errors == 1


@pytest.mark.net(ipv6=False)
async def test_a_tls_handshake_timeout_is_counted_as_shed_not_as_a_handshake_failure(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    net: VirtualNetwork,
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The split that docs/howto/tls.rst documents (issue 12.6), on the virtual network.
    log = EventLog()
    async def never_called(conn: TCPConnection) -> None:
        raise AssertionError("the handler ran")  # pragma: no cover

    with net.host("server"):
        async with open_tcp_server(never_called, 443, ssl_context=contexts[0],
                                   tls_handshake_timeout=3, observer=log) as server:
            with net.host("client"):
                async with await trio.open_tcp_stream("10.0.0.1", 443) as silent:
                    assert await silent.receive_some() == b""
    stats = server.statistics()
    assert (stats.connections_shed, stats.handshake_failures) == (1, 0)
    assert [e.details["reason"] for e in log.of_kind("tcp.shed")] == ["tls_handshake_timeout"]
    assert log.of_kind("tcp.handshake_failed") == []


# ------------------------------------- idle connections do not hold a shutdown

#: The virtual network for these tests: 1 ms each way, clients outside ``net.host()``.
ON_A_LAN = pytest.mark.net(ipv6=False, latency=0.001, default_host="client")


async def keep_alive_server(
    net: VirtualNetwork, idle: int, *, grace: float, busy_for: float, **options: Any
) -> tuple[float, list[str]]:
    """``idle`` keep-alive clients that got their reply, one busy request: shutdown's length."""
    seen: list[str] = []

    async def handler(conn: TCPConnection) -> None:
        async for request in conn.channel:
            if request == b"slow":
                await trio.sleep(busy_for)
            await conn.channel.send(b"re " + request)

    async def client(channel: MessageChannel, request: bytes) -> None:
        await channel.send(request)
        assert await channel.receive() == b"re " + request
        try:
            await channel.receive()
        except trio.EndOfChannel:
            seen.append("eof")
        except trio.BrokenResourceError:
            seen.append("reset")

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server = await nursery.start(functools.partial(
                serve_tcp, handler, 7, codec=LengthPrefixed(), **options))
        channels = []
        for number in range(idle):
            channel = MessageChannel(await trio.open_tcp_stream("10.0.0.1", 7), LengthPrefixed())
            channels.append(channel)
            nursery.start_soon(client, channel, b"%d" % number)
        slow = MessageChannel(await trio.open_tcp_stream("10.0.0.1", 7), LengthPrefixed())
        channels.append(slow)
        nursery.start_soon(client, slow, b"slow")
        await trio.sleep(0.1)  # every reply but the slow one is in
        assert server.connection_count == idle + 1
        begin = trio.current_time()
        await server.shutdown(grace=grace)
        elapsed = trio.current_time() - begin
    for channel in channels:
        await channel.aclose()
    assert server.statistics().connections_active == 0
    return elapsed, seen


@ON_A_LAN
async def test_shutdown_returns_when_the_busy_handler_finishes_not_at_the_grace(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    # Before: 30 s, the whole grace, for the 100 idle connections.
    elapsed, seen = await keep_alive_server(net, 100, grace=30, busy_for=5)
    assert elapsed == pytest.approx(5 - 0.1 + 0.001, abs=0.01)
    assert seen == ["eof"] * 101  # the slow client got its reply, then the end


@ON_A_LAN
async def test_end_idle_on_shutdown_false_leaves_idle_handlers_the_grace(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    elapsed, seen = await keep_alive_server(net, 3, grace=30, busy_for=5,
                                            end_idle_on_shutdown=False)
    assert elapsed == pytest.approx(30)
    assert len(seen) == 4


@ON_A_LAN
async def test_a_raw_stream_handler_can_wait_for_the_shutdown_request(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    flags: list[bool] = []

    async def handler(conn: TCPConnection) -> None:
        flags.append(conn.shutdown_requested)
        await conn.wait_shutdown_requested()
        flags.append(conn.shutdown_requested)
        await conn.stream.send_all(b"bye")

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server = await nursery.start(functools.partial(serve_tcp, handler, 7))
        async with await trio.open_tcp_stream("10.0.0.1", 7) as stream:
            await trio.sleep(1)
            begin = trio.current_time()
            await server.shutdown(grace=30)
            assert trio.current_time() - begin < 0.1
            assert await stream.receive_some() == b"bye"
    assert flags == [False, True]


@ON_A_LAN
async def test_a_client_connection_never_sees_a_shutdown_request() -> None:
    conn = TCPConnection(trio.testing.MemorySendStream(), socket=None)  # type: ignore[arg-type]
    assert not conn.shutdown_requested
    with trio.move_on_after(0.01) as scope:
        await conn.wait_shutdown_requested()
    assert scope.cancelled_caught
