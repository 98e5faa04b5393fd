"""MessageChannel over every kind of stream: the conformance suite, TLS, and asyncio peers."""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Awaitable, Callable

import pytest
import trio
import trio.testing

from trionet import LengthPrefixed, MessageChannel
from trionet.testing import check_message_channel

from .conftest import TLS_HOSTNAME, tcp_stream_pair


async def memory_pair() -> tuple[MessageChannel, MessageChannel]:
    left, right = trio.testing.memory_stream_pair()
    return MessageChannel(left), MessageChannel(right)


async def lockstep_pair() -> tuple[MessageChannel, MessageChannel]:
    left, right = trio.testing.lockstep_stream_pair()
    return MessageChannel(left), MessageChannel(right)


async def tcp4_pair() -> tuple[MessageChannel, MessageChannel]:
    a, b = await tcp_stream_pair("127.0.0.1")
    return MessageChannel(a), MessageChannel(b)


async def tcp6_pair() -> tuple[MessageChannel, MessageChannel]:
    a, b = await tcp_stream_pair("::1")
    return MessageChannel(a), MessageChannel(b)


async def unix_pair() -> tuple[MessageChannel, MessageChannel]:
    a, b = trio.socket.socketpair()
    return MessageChannel(trio.SocketStream(a)), MessageChannel(trio.SocketStream(b))


def tls_pair_maker(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], hostname: str = TLS_HOSTNAME
) -> Callable[[], Awaitable[tuple[MessageChannel, MessageChannel]]]:
    server_context, client_context = contexts

    async def tls_pair() -> tuple[MessageChannel, MessageChannel]:
        a, b = await tcp_stream_pair()
        client = trio.SSLStream(a, client_context, server_hostname=hostname)
        server = trio.SSLStream(b, server_context, server_side=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(client.do_handshake)
            nursery.start_soon(server.do_handshake)
        return MessageChannel(client), MessageChannel(server)

    return tls_pair


@pytest.mark.usefixtures("no_fd_leak")
@pytest.mark.parametrize(
    "make_pair", [memory_pair, lockstep_pair, tcp4_pair, tcp6_pair, unix_pair]
)
async def test_channel_contracts_hold_over(
    make_pair: Callable[[], Awaitable[tuple[MessageChannel, MessageChannel]]],
) -> None:
    await check_message_channel(make_pair)


@pytest.mark.usefixtures("no_fd_leak")
async def test_channel_contracts_hold_over_tls(contexts: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    await check_message_channel(tls_pair_maker(contexts))


async def test_tls_with_wrong_hostname_fails_the_handshake(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext],
) -> None:
    server_context, client_context = contexts
    a, b = await tcp_stream_pair()
    client = trio.SSLStream(a, client_context, server_hostname="wrong.example")
    server = trio.SSLStream(b, server_context, server_side=True)
    async def server_handshake() -> None:
        with contextlib.suppress(trio.BrokenResourceError):
            await server.do_handshake()

    async with a, b, trio.open_nursery() as nursery:
        nursery.start_soon(server_handshake)
        with pytest.raises(trio.BrokenResourceError) as info:
            await client.do_handshake()
        nursery.cancel_scope.cancel()
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)
    assert "wrong.example" in str(info.value.__cause__)


async def test_conformance_suite_detects_a_channel_that_loses_messages(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Lossy:
        def __init__(self, inner: MessageChannel) -> None:
            self.inner = inner
            self.count = 0

        async def send(self, value: bytes) -> None:
            self.count += 1
            if self.count != 3:
                await self.inner.send(value)
            else:
                await trio.lowlevel.checkpoint()

        async def send_many(self, values: list[bytes]) -> None:
            await self.inner.send_many(values[:-1])

        async def receive(self) -> bytes:
            return await self.inner.receive()

        async def aclose(self) -> None:
            await self.inner.aclose()

    async def lossy_pair() -> tuple[Lossy, Lossy]:
        a, b = await memory_pair()
        return Lossy(a), Lossy(b)

    with pytest.raises(AssertionError, match="round trip: no progress within 60 seconds"):
        await check_message_channel(lossy_pair)  # type: ignore[arg-type]


# ------------------------------------------------------------------- asyncio interop


async def asyncio_echo_server(ready: Callable[[int], None], count: int) -> None:
    """An asyncio server that echoes `count` length-prefixed messages, then closes."""
    done = asyncio.Event()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        for _ in range(count):
            header = await reader.readexactly(4)
            payload = await reader.readexactly(int.from_bytes(header, "big"))
            writer.write(header + payload[::-1])
            await writer.drain()
        writer.close()
        await writer.wait_closed()
        done.set()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    async with server:
        ready(server.sockets[0].getsockname()[1])
        await asyncio.wait_for(done.wait(), 30)


async def asyncio_client(port: int, messages: list[bytes]) -> list[bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    replies = []
    for message in messages:
        writer.write(len(message).to_bytes(4, "big") + message)
        await writer.drain()
        header = await reader.readexactly(4)
        replies.append(await reader.readexactly(int.from_bytes(header, "big")))
    writer.close()
    await writer.wait_closed()
    return replies


MESSAGES = [b"", b"hello", bytes(range(256)) * 300, b"x" * 70_000]


async def test_asyncio_server_and_trionet_client_exchange_length_prefixed_messages() -> None:
    port_sent: trio.MemorySendChannel[int]
    port_sent, port_received = trio.open_memory_channel[int](1)
    token = trio.lowlevel.current_trio_token()

    def ready(port: int) -> None:
        trio.from_thread.run_sync(port_sent.send_nowait, port, trio_token=token)

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(
                trio.to_thread.run_sync, asyncio.run, asyncio_echo_server(ready, len(MESSAGES))
            )
            port = await port_received.receive()
            async with MessageChannel(await trio.open_tcp_stream("127.0.0.1", port)) as channel:
                for message in MESSAGES:
                    await channel.send(message)
                    assert await channel.receive() == message[::-1]
                with pytest.raises(trio.EndOfChannel):
                    await channel.receive()


async def test_trionet_server_and_asyncio_client_exchange_length_prefixed_messages() -> None:
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]

    async def echo_reversed(stream: trio.SocketStream) -> None:
        async with MessageChannel(stream, LengthPrefixed()) as channel:
            async for message in channel:
                await channel.send(message[::-1])

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(trio.serve_listeners, echo_reversed, listeners)
            replies = await trio.to_thread.run_sync(asyncio.run, asyncio_client(port, MESSAGES))
            nursery.cancel_scope.cancel()
    assert replies == [message[::-1] for message in MESSAGES]
