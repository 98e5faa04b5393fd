"""trionet's MessageChannel over virtual TCP: whole frames through loss, jitter and partitions."""

from __future__ import annotations

import socket

import pytest
import trio
import trio.testing

from trionet import MessageChannel
from trionet.testing import VirtualNetwork, check_message_channel

from .test_vnet_tcp import fill, socket_pair

pytestmark = pytest.mark.net(seed=3, latency=0.010, jitter=0.005, loss=0.05)


async def test_framed_messages_cross_a_lossy_jittery_link_whole_and_in_order(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    messages = [b"m%d-" % i * (i % 50) for i in range(300)] + [b"x" * 500_000]

    async def handler(stream: trio.SocketStream) -> None:
        async with MessageChannel(stream) as channel:
            async for message in channel:
                await channel.send(message[::-1])

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(trio.serve_tcp, handler, 7)
        with net.host("client"):
            channel = MessageChannel(await trio.open_tcp_stream("server", 7))
        async with channel:
            nursery.start_soon(channel.send_many, messages)
            for message in messages:
                assert await channel.receive() == message[::-1]
        nursery.cancel_scope.cancel()


async def test_message_channel_conformance_over_virtual_tcp(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    ports = iter(range(1000, 2000))

    async def make_pair() -> tuple[MessageChannel, MessageChannel]:
        client, server = await socket_pair(net, next(ports))
        return MessageChannel(trio.SocketStream(client)), MessageChannel(trio.SocketStream(server))

    await check_message_channel(make_pair)


async def test_a_send_cancelled_behind_a_partition_puts_nothing_on_the_wire(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    client, server = await socket_pair(net)
    net.partition("client", "server")
    filler = await fill(client)  # the buffers are full and nothing drains them
    sender = MessageChannel(trio.SocketStream(client))
    with trio.move_on_after(5) as scope:
        await sender.send(b"cancelled")
    assert scope.cancelled_caught
    net.heal()
    raw = trio.SocketStream(server)
    skipped = 0
    while skipped < filler:  # bounded: exactly `filler` raw bytes precede the frames
        skipped += len(await raw.receive_some(filler - skipped))
    receiver = MessageChannel(raw)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, b"after")
        assert await receiver.receive() == b"after"
    assert client.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0
