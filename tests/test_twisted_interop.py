"""trionet's codecs against Twisted's own protocols, in a Twisted process (docs/howto/interop.rst).

Each test starts a Twisted server (its reactor, in a child process, on
127.0.0.1 and a port the system picks, which it prints) built on one of
Twisted's framing receivers, and talks to it with a trionet client using the
codec the interop how-to pairs with it. Every step is bounded by ``TIMEOUT``.
"""

from __future__ import annotations

import signal
import sys
import textwrap

import pytest
import trio

import trionet

from .processes import running

pytest.importorskip("twisted")

TIMEOUT = 20

SERVER = textwrap.dedent(
    """
    import sys
    from twisted.internet import protocol, reactor
    from twisted.protocols import basic

    class Int32Echo(basic.Int32StringReceiver):
        def stringReceived(self, data):
            self.sendString(data)

    class NetstringEcho(basic.NetstringReceiver):
        def stringReceived(self, data):
            self.sendString(data)

    class LineEcho(basic.LineOnlyReceiver):
        delimiter = b"\\n"
        def lineReceived(self, line):
            self.sendLine(line.upper())

    kind = {"int32": Int32Echo, "netstring": NetstringEcho, "lines": LineEcho}[sys.argv[1]]
    port = reactor.listenTCP(0, protocol.ServerFactory.forProtocol(kind), interface="127.0.0.1")
    print(port.getHost().port, flush=True)
    reactor.run()
    """
)

MESSAGES = [b"hello", b"", b"\x00\r\n:,binary", bytes(range(256)) * 300]


@pytest.mark.parametrize(
    ("kind", "codec"),
    [("int32", trionet.LengthPrefixed(max_size=99_999)), ("netstring", trionet.Netstring(max_size=99_999))],
    ids=["Int32StringReceiver", "NetstringReceiver"],
)
async def test_a_trionet_client_echoes_through_twisteds_framing(
    kind: str, codec: trionet.Codec[bytes]
) -> None:
    with trio.fail_after(TIMEOUT):
        async with running([sys.executable, "-c", SERVER, kind]) as server:
            port = int(await server.stdout.next())
            async with await trionet.connect_tcp("127.0.0.1", port, codec=codec) as conn:
                for message in MESSAGES:
                    await conn.channel.send(message)
                    assert await conn.channel.receive() == message
                # Pipelined: Twisted splits the stream into the same frames.
                await conn.channel.send_many(MESSAGES)
                for message in MESSAGES:
                    assert await conn.channel.receive() == message
            await server.stop(signal.SIGTERM)  # SIGINT may be ignored, as by a parent that ignores it


async def test_lines_match_twisteds_line_only_receiver() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([sys.executable, "-c", SERVER, "lines"]) as server:
            port = int(await server.stdout.next())
            async with await trionet.connect_tcp("127.0.0.1", port, codec=trionet.Lines()) as conn:
                await conn.channel.send_many([b"one", b"two words", b""])
                replies = [await conn.channel.receive() for _ in range(3)]
            assert replies == [b"ONE", b"TWO WORDS", b""]
            await server.stop(signal.SIGTERM)  # SIGINT may be ignored, as by a parent that ignores it


async def _send_then_receive(channel: trionet.MessageChannel[bytes], message: bytes) -> bytes:
    await channel.send(message)
    return await channel.receive()


async def test_twisteds_int32_limit_is_what_the_how_to_says() -> None:
    # Int32StringReceiver.MAX_LENGTH is 99,999: a longer frame makes Twisted
    # drop the connection, which LengthPrefixed(max_size=99_999) refuses to send.
    with trio.fail_after(TIMEOUT):
        async with running([sys.executable, "-c", SERVER, "int32"]) as server:
            port = int(await server.stdout.next())
            codec = trionet.LengthPrefixed(max_size=99_999)
            async with await trionet.connect_tcp("127.0.0.1", port, codec=codec) as conn:
                with pytest.raises(trionet.FrameTooLarge):
                    await conn.channel.send(bytes(100_000))
                await conn.channel.send(bytes(99_999))  # the largest both accept
                assert len(await conn.channel.receive()) == 99_999
            unlimited = trionet.LengthPrefixed()
            async with await trionet.connect_tcp("127.0.0.1", port, codec=unlimited) as conn:
                # Twisted hangs up once it reads the header: the rest of the
                # frame may still be on its way (EPIPE), or the reply is EOF.
                with pytest.raises((trio.EndOfChannel, trio.BrokenResourceError)):
                    await _send_then_receive(conn.channel, bytes(100_000))
            await server.stop(signal.SIGTERM)  # SIGINT may be ignored, as by a parent that ignores it
