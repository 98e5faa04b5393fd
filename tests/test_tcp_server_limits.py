"""serve_tcp's limits: max_connections, idle_timeout, and the accept-error back-off.

Timed tests run on ``autojump_clock`` with ``net``: their loopback literals reach
the virtual network, where the mock clock cannot outrun the kernel.

Imports private ``ServerCore``, its back-off constants and ``wait_idle``: the accept
back-off is driven with a fake listener, below the public API.
"""

from __future__ import annotations

import errno
import functools
import logging
from typing import Any

import pytest
import trio
import trio.testing

from trionet import (
    EventLog,
    LengthPrefixed,
    MessageChannel,
    TCPConnection,
    TCPServer,
    open_tcp_server,
    serve_tcp,
)
from trionet._adapters.idle import IdleTrackingStream, wait_idle
from trionet._endpoints.server_core import ACCEPT_BACKOFF_INITIAL, ACCEPT_BACKOFF_MAX, ServerCore
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


async def test_wait_idle_returns_exactly_one_period_after_the_last_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    tracked = IdleTrackingStream(left)
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def chatter() -> None:
            for _ in range(3):
                await trio.sleep(1.5)
                await right.send_all(b"x")
                await tracked.receive_some(10)

        nursery.start_soon(chatter)
        await wait_idle(tracked, 2)
    assert trio.current_time() - begin == 4.5 + 2


async def test_idle_tracking_stream_passes_everything_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    tracked = IdleTrackingStream(left)
    created = tracked.last_activity
    await trio.sleep(1)
    await tracked.send_all(b"abc")
    assert tracked.last_activity == created + 1
    assert await right.receive_some(10) == b"abc"
    await tracked.wait_send_all_might_not_block()
    await tracked.send_eof()
    assert await right.receive_some(10) == b""
    await right.send_eof()
    await trio.sleep(1)
    assert await tracked.receive_some(10) == b""
    assert tracked.last_activity == created + 1  # an end of stream is not a byte
    await tracked.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await left.receive_some(1)


async def test_idle_tracking_stream_cannot_half_close_a_stream_that_cannot() -> None:
    class OneWay(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...
        async def wait_send_all_might_not_block(self) -> None: ...
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            return b""
        async def aclose(self) -> None: ...

    with pytest.raises(TypeError, match="OneWay cannot half-close"):
        await IdleTrackingStream(OneWay()).send_eof()


# -------------------------------------------------------- accept-error back-off


async def virtual_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """Two connected TCP sockets on the installed virtual network."""
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = trio.socket.socket()
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    return server, client


class FlakyListener:
    """A stand-in for a listening socket whose accept() fails with EMFILE on cue."""

    def __init__(self, script: list[str]) -> None:
        self.script = script  # "emfile", "ok", "reset"; then blocks for ever
        self.accept_times: list[float] = []
        self.pairs: list[Any] = []
        self.script_done = trio.Event()

    async def accept(self) -> tuple[trio.socket.SocketType, Any]:
        self.accept_times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if not self.script:
            self.script_done.set()
            await trio.sleep_forever()
        step = self.script.pop(0)
        if step == "emfile":
            raise OSError(errno.EMFILE, "Too many open files")
        if step == "reset":
            raise OSError(errno.ECONNABORTED, "Software caused connection abort")
        a, b = await virtual_pair()
        self.pairs.append(b)
        return a, ("127.0.0.1", 1)

    def close(self) -> None:
        for sock in self.pairs:
            sock.close()


async def run_core_on(listener: FlakyListener, log: EventLog) -> None:
    async def handler(conn: TCPConnection) -> None:
        pass

    core: ServerCore[TCPConnection] = ServerCore(
        handler, kind="tcp", describe_peer=str, codec=None, max_connections=None,
        idle_timeout=None, ssl_context=None, tls_handshake_timeout=10, strict=False,
        observer=log,
    )

    def make(stream: trio.abc.Stream, sock: Any, peer: Any, channel: Any) -> TCPConnection:
        return TCPConnection(stream, socket=sock, peer=peer, channel=channel)

    async with trio.open_nursery() as nursery:
        server = TCPServer(core, ())
        await nursery.start(
            functools.partial(core.run, [listener], make, server, listening=())  # type: ignore[list-item]
        )
        await listener.script_done.wait()
        await trio.testing.wait_all_tasks_blocked()
        await server.shutdown(grace=0)


async def test_accept_errors_back_off_from_5ms_doubling_to_1s_and_reset_after_a_success(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trionet")
    listener = FlakyListener(["emfile"] * 10 + ["ok"] + ["emfile"] * 2 + ["reset", "ok"])
    log = EventLog()
    await run_core_on(listener, log)
    delays = [event.details["delay"] for event in log.of_kind("tcp.accept_error")]
    assert delays == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 0.005, 0.01]
    assert ACCEPT_BACKOFF_INITIAL == 0.005
    assert ACCEPT_BACKOFF_MAX == 1.0
    gaps = [b - a for a, b in zip(listener.accept_times, listener.accept_times[1:], strict=False)]
    assert gaps[:10] == pytest.approx(delays[:10])
    assert gaps[13] == 0  # a connection reset before accept is skipped without delay
    assert len(log.of_kind("tcp.accept")) == 2
    warnings = [r for r in caplog.records if r.name == "trionet"]
    assert len(warnings) == 12
    assert "EMFILE" in warnings[0].getMessage()
    assert "retries in 0.005 s" in warnings[0].getMessage()
    listener.close()


async def test_an_unexpected_accept_error_is_raised() -> None:
    class Broken(FlakyListener):
        async def accept(self) -> tuple[trio.socket.SocketType, Any]:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EINVAL, "Invalid argument")

    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        await run_core_on(Broken([]), EventLog())


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
