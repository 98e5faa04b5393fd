"""Slow-loris peers over TLS, and frame_timeout's clock (issue 15.3).

Under TLS a peer can trickle one TLS record a byte at a time: no application byte
reaches the channel until the record is whole, so a frame_timeout that starts at
the frame's first application byte never starts, and an idle timeout that counts
raw bytes never fires. The server counts progress above TLS instead, and bytes
of an incomplete record are a started frame.

Everything runs on the virtual network under ``MockClock(autojump_threshold=0)``:
the trickles last minutes of virtual time and take milliseconds.
"""

from __future__ import annotations

import functools
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress

import pytest
import trio
import trio.testing

from trionet import (
    EventLog,
    FrameTimeout,
    LengthPrefixed,
    MessageChannel,
    TCPConnection,
    TCPServer,
    serve_tcp,
)
from trionet.testing import VirtualNetwork

from .conftest import TLS_HOSTNAME

# The server host is named after the test certificate; tasks are the client's.
pytestmark = pytest.mark.net(server=TLS_HOSTNAME, ipv6=False, default_host="client")

Contexts = tuple[ssl.SSLContext, ssl.SSLContext]
FRAME_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0


class Trickle(trio.abc.Stream):
    """A transport stream whose sends can be held back and dribbled out.

    ``send_all`` passes bytes on whole, except while ``trickle`` is set: then it
    sends ``first`` bytes at once and the rest one byte each ``interval``
    seconds. It is what a slow-loris TLS client puts under its SSLStream.
    """

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.trickle = False
        self.first = 0
        self.interval = 1.0
        self.started: float | None = None

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        data = bytes(data)
        if not self.trickle:
            await self.inner.send_all(data)
            return
        self.started = trio.current_time()
        if self.first:
            await self.inner.send_all(data[: self.first])
            await trio.sleep(self.interval)
        for i in range(self.first, len(data)):
            await self.inner.send_all(data[i : i + 1])
            await trio.sleep(self.interval)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def tls_server(
    net: VirtualNetwork,
    server_context: ssl.SSLContext,
    handler: Callable[[TCPConnection], Awaitable[object]],
    **options: object,
) -> AsyncIterator[TCPServer]:
    async with trio.open_nursery() as nursery:
        with net.host(TLS_HOSTNAME):
            server: TCPServer = await nursery.start(
                functools.partial(serve_tcp, handler, 443, ssl_context=server_context, **options)
            )
        yield server
        nursery.cancel_scope.cancel()


async def tls_client(client_context: ssl.SSLContext) -> tuple[trio.SSLStream[Trickle], Trickle]:
    tcp = await trio.open_tcp_stream(TLS_HOSTNAME, 443)
    transport = Trickle(tcp)
    stream = trio.SSLStream(transport, client_context, server_hostname=TLS_HOSTNAME)
    await stream.do_handshake()
    return stream, transport


async def wait_closed(transport: Trickle) -> float:
    """Read the raw transport (skipping session tickets) until the server closes it; return when."""
    try:
        while await transport.inner.receive_some():
            pass
    except trio.BrokenResourceError:
        pass
    return trio.current_time()


async def until_shed(transport: Trickle, send: Callable[[], Awaitable[object]]) -> float:
    """Run ``send`` (which trickles through ``transport``) until the server closes the
    connection; return the seconds from the first trickled byte to the close."""
    closed_at = 0.0

    async def watch() -> None:
        nonlocal closed_at
        closed_at = await wait_closed(transport)
        nursery.cancel_scope.cancel()

    with trio.fail_after(600):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watch)
            with suppress(trio.BrokenResourceError):
                await send()
            await trio.sleep_forever()  # the watcher ends it
    assert transport.started is not None
    return closed_at - transport.started


async def trickle_until_shed(stream: trio.SSLStream[Trickle], transport: Trickle, data: bytes) -> float:
    return await until_shed(transport, functools.partial(stream.send_all, data))


async def trickle_raw_until_shed(transport: Trickle, wire: bytes) -> float:
    return await until_shed(transport, functools.partial(transport.send_all, wire))


class Recorder:
    def __init__(self) -> None:
        self.errors: list[BaseException] = []
        self.messages: list[bytes] = []

    async def echo(self, conn: TCPConnection) -> None:
        try:
            async for message in conn.channel:
                self.messages.append(message)
                await conn.channel.send(message)
        except FrameTimeout as exc:
            self.errors.append(exc)
            raise


async def test_a_tls_peer_trickling_one_record_is_shed_at_the_frame_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, contexts: Contexts
) -> None:
    # The attack: one 16 KiB TLS record at 1 byte/s. Before the fix it
    # stayed connected for as long as it kept trickling (each raw byte reset the
    # idle timer; no application byte started the frame timer).
    server_context, client_context = contexts
    recorder = Recorder()
    log = EventLog()
    async with tls_server(
        net, server_context, recorder.echo, codec=LengthPrefixed(),
        idle_timeout=IDLE_TIMEOUT, frame_timeout=FRAME_TIMEOUT, observer=log,
    ):
        stream, transport = await tls_client(client_context)
        transport.trickle = True
        frame = LengthPrefixed().encode(b"x" * 16000)  # one full TLS record
        shed_after = await trickle_until_shed(stream, transport, frame)
    assert FRAME_TIMEOUT <= shed_after <= FRAME_TIMEOUT + 1
    assert [type(error) for error in recorder.errors] == [FrameTimeout]
    assert recorder.messages == []


async def test_the_frame_clock_starts_at_the_first_byte_of_a_record_sent_with_the_previous_one(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, contexts: Contexts
) -> None:
    server_context, client_context = contexts
    recorder = Recorder()
    async with tls_server(
        net, server_context, recorder.echo, codec=LengthPrefixed(),
        idle_timeout=IDLE_TIMEOUT, frame_timeout=FRAME_TIMEOUT,
    ):
        stream, transport = await tls_client(client_context)
        first_record = await encrypt(stream, transport, LengthPrefixed().encode(b"a" * 100))
        # Now: that record whole plus 3 bytes of the next, at once; then the next
        # record at one byte each 5 s (so a raw byte arrives every 5 s).
        second_record = await encrypt(stream, transport, LengthPrefixed().encode(b"b" * 16000))
        transport.trickle = True
        transport.interval = 5.0
        transport.first = len(first_record) + 3
        shed_after = await trickle_raw_until_shed(transport, first_record + second_record)
    assert recorder.messages == [b"a" * 100]
    assert [type(error) for error in recorder.errors] == [FrameTimeout]
    # The clock started with those 3 bytes, not 5 s later with the next one.
    assert FRAME_TIMEOUT <= shed_after <= FRAME_TIMEOUT + 1


async def encrypt(stream: trio.SSLStream[Trickle], transport: Trickle, data: bytes) -> bytes:
    """The bytes ``stream.send_all(data)`` puts on the wire, captured instead of sent."""
    captured: list[bytes] = []
    real_send = transport.inner.send_all

    async def capture(chunk: bytes | bytearray | memoryview) -> None:
        captured.append(bytes(chunk))

    transport.inner.send_all = capture  # type: ignore[method-assign]
    try:
        await stream.send_all(data)
    finally:
        transport.inner.send_all = real_send  # type: ignore[method-assign]
    return b"".join(captured)


async def test_without_a_codec_a_tls_peer_trickling_a_record_is_shed_at_the_idle_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, contexts: Contexts
) -> None:
    # A handler of the raw SSLStream has no frames: there the idle timeout counts
    # whole TLS records, so a record trickled for ever is no progress.
    server_context, client_context = contexts
    received: list[bytes] = []

    async def read(conn: TCPConnection) -> None:
        while data := await conn.stream.receive_some():
            received.append(bytes(data))

    log = EventLog()
    async with tls_server(net, server_context, read, idle_timeout=IDLE_TIMEOUT, observer=log):
        stream, transport = await tls_client(client_context)
        transport.trickle = True
        shed_after = await trickle_until_shed(stream, transport, b"x" * 16000)
    assert received == []
    assert IDLE_TIMEOUT - 1 <= shed_after <= IDLE_TIMEOUT + 1
    assert [event.details["reason"] for event in log.of_kind("tcp.shed")] == ["idle_timeout"]


async def test_a_tls_peer_quiet_between_frames_is_served(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, contexts: Contexts
) -> None:
    server_context, client_context = contexts
    recorder = Recorder()
    async with tls_server(
        net, server_context, recorder.echo, codec=LengthPrefixed(),
        idle_timeout=IDLE_TIMEOUT, frame_timeout=FRAME_TIMEOUT,
    ):
        stream, _ = await tls_client(client_context)
        channel = MessageChannel(stream, LengthPrefixed())
        for size in (10, 100_000, 0):  # 100,000 bytes: seven records
            await channel.send(b"q" * size)
            assert await channel.receive() == b"q" * size
            await trio.sleep(IDLE_TIMEOUT - 5)  # longer than frame_timeout: not a frame
    assert recorder.errors == []


async def test_a_tls_frame_sent_record_by_record_within_the_timeout_is_received(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, contexts: Contexts
) -> None:
    server_context, client_context = contexts
    recorder = Recorder()
    async with tls_server(
        net, server_context, recorder.echo, codec=LengthPrefixed(),
        idle_timeout=IDLE_TIMEOUT, frame_timeout=FRAME_TIMEOUT,
    ):
        stream, _ = await tls_client(client_context)
        frame = LengthPrefixed().encode(b"r" * 40_000)
        for start in range(0, len(frame), 16_000):  # a record each 4 s: 8 s in all
            await stream.send_all(frame[start : start + 16_000])
            await trio.sleep(4)
        channel = MessageChannel(stream, LengthPrefixed())
        assert await channel.receive() == b"r" * 40_000
    assert recorder.errors == []


# ------------------------------------------------ the clock of frame_timeout


async def plain_server(
    net: VirtualNetwork, handler: Callable[[TCPConnection], Awaitable[object]], nursery: trio.Nursery
) -> TCPServer:
    with net.host(TLS_HOSTNAME):
        server: TCPServer = await nursery.start(
            functools.partial(
                serve_tcp, handler, 80, codec=LengthPrefixed(), idle_timeout=IDLE_TIMEOUT,
                frame_timeout=FRAME_TIMEOUT,
            )
        )
    return server


async def test_a_handler_that_polls_receive_does_not_stretch_the_frame_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock,
) -> None:
    # frame_timeout counts wall-clock time from the frame's first byte, not only
    # the time spent waiting in receive(): a handler that waits in turns (here
    # half of the time) does not give a trickler twice as long.
    errors: list[BaseException] = []

    async def polling(conn: TCPConnection) -> None:
        try:
            while True:
                with trio.move_on_after(1):
                    await conn.channel.receive()
                await trio.sleep(1)
        except FrameTimeout as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        await plain_server(net, polling, nursery)
        stream = await trio.open_tcp_stream(TLS_HOSTNAME, 80)
        transport = Trickle(stream)
        transport.trickle = True
        shed_after = await trickle_raw_until_shed(transport, LengthPrefixed().encode(b"p" * 1000))
        nursery.cancel_scope.cancel()
    assert [type(error) for error in errors] == [FrameTimeout]
    assert FRAME_TIMEOUT <= shed_after <= FRAME_TIMEOUT + 2


async def test_bytes_that_arrived_while_the_handler_was_away_finish_the_frame(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock,
) -> None:
    # A slow handler must not shed a good peer: the rest of the frame arrived
    # (2 s after its start) while the handler was busy for 20 s, past the frame's
    # deadline; the next receive reads it and returns the frame.
    received: list[bytes] = []
    errors: list[BaseException] = []

    async def slow(conn: TCPConnection) -> None:
        try:
            with trio.move_on_after(1):
                received.append(await conn.channel.receive())
            await trio.sleep(20)
            received.append(await conn.channel.receive())
        except FrameTimeout as exc:
            errors.append(exc)

    async with trio.open_nursery() as nursery:
        server = await plain_server(net, slow, nursery)
        async with await trio.open_tcp_stream(TLS_HOSTNAME, 80) as stream:
            frame = LengthPrefixed().encode(b"s" * 1000)
            await stream.send_all(frame[:500])
            await trio.sleep(2)
            await stream.send_all(frame[500:])
            while server.connection_count:
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    assert errors == []
    assert received == [b"s" * 1000]
