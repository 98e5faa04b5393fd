"""serve_tcp's frame_timeout: a peer that trickles a message is shed; a quiet one is not.

The test runs on the virtual network (``net``): its loopback literals work there,
and ``autojump_clock`` cannot jump while bytes are still in the kernel.
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from trionet import FrameTimeout, LengthPrefixed, MessageChannel, TCPConnection, open_tcp_server
from trionet.testing import VirtualNetwork


@pytest.mark.net(default_host="client")
async def test_a_peer_trickling_one_byte_a_second_is_shed_at_the_frame_timeout(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    errors: list[BaseException] = []

    async def handler(conn: TCPConnection) -> None:
        try:
            async for message in conn.channel:
                await conn.channel.send(message)
        except FrameTimeout as exc:
            errors.append(exc)
            raise

    async with open_tcp_server(
        handler, 0, codec=LengthPrefixed(), idle_timeout=30, frame_timeout=10
    ) as server:
        async with await trio.open_tcp_stream("127.0.0.1", server.port) as slow:
            frame = LengthPrefixed().encode(b"x" * 1000)
            start = trio.current_time()
            # One byte a second keeps the connection from ever being idle. The
            # server gives up at 10 s and closes with our bytes unread, which
            # resets the connection: the next send or receive fails.
            with trio.fail_after(60):
                try:
                    for i in range(len(frame)):
                        await slow.send_all(frame[i : i + 1])
                        await trio.sleep(1)
                    while await slow.receive_some():
                        pass
                except trio.BrokenResourceError:
                    pass
            shed_after = trio.current_time() - start
        async with await trio.open_tcp_stream("::1", server.port) as good:
            channel = MessageChannel(good)
            await trio.sleep(25)  # quiet between messages: fine
            await channel.send(b"still served")
            assert await channel.receive() == b"still served"
    assert [type(error) for error in errors] == [FrameTimeout]
    assert 10 <= shed_after <= 12
    assert net.statistics().sockets == 0  # nothing left open
    # A bad peer is not a server bug: nothing above INFO.
    assert [record for record in caplog.records if record.levelno > logging.INFO] == []
