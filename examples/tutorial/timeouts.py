"""Tutorial step 3: timeouts are cancellations, and framing must survive them.

What it teaches: in trio a timeout is a cancel scope (``trio.move_on_after``),
and it can cancel an operation half-way. Code that frames messages must then
lose nothing and corrupt nothing:

1. **Receiving.** A server sends ``hello`` and ``world`` in pieces, pausing
   100 ms between them; a client waits at most 70 ms per line. A naive line
   reader keeps the bytes it has read in a local variable: when the timeout
   cancels it half-way, they are gone, and it returns ``b'lo'`` and ``b'ld'``.
   ``MessageChannel`` keeps them in the channel, so the next ``receive()``
   continues the same line and returns ``b'hello'`` and ``b'world'``.
2. **Sending.** A client sends a 6 MiB message and is cancelled 20 ms into it.
   With ``stream.send_all`` an unknown part of the frame is on the wire, and
   the peer's framing is broken for good. ``MessageChannel.send`` finishes a
   frame it has started and returns; the cancellation takes effect at the next
   checkpoint, and the peer receives every message whole.

It runs on trionet's virtual network with trio's ``MockClock``, so every
timing is exact and the program ends at once.

Run it::

    python examples/tutorial/timeouts.py
"""

from collections.abc import Awaitable, Callable
from functools import partial

import trio
import trio.testing

import trionet
from trionet.testing import VirtualNetwork

PIECES = [b"hel", b"lo\n", b"wor", b"ld\n"]


async def trickle(conn: trionet.TCPConnection) -> None:
    """The server of part 1: each line in two pieces, 100 ms apart."""
    for piece in PIECES:
        await conn.stream.send_all(piece)
        await trio.sleep(0.1)


class NaiveLineReader:
    """How line reading often starts out, and why it breaks under timeouts."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.rest = b""

    async def receive_line(self) -> bytes:
        buffer = self.rest
        while b"\n" not in buffer:
            buffer += await self.stream.receive_some()  # a cancel here loses `buffer`
        line, _, self.rest = buffer.partition(b"\n")
        return line


async def read_two_lines(name: str, receive_line: Callable[[], Awaitable[bytes]]) -> None:
    start = trio.current_time()
    lines = 0
    while lines < 2:
        with trio.move_on_after(0.07):
            line = await receive_line()
            lines += 1
            print(f"  {trio.current_time() - start:.2f}s  {name} got {line!r}")
            continue
        print(f"  {trio.current_time() - start:.2f}s  {name} timed out; tries again")


async def count_messages(conn: trionet.TCPConnection) -> None:
    """The server of part 2: reports each message it receives, or how framing broke."""
    try:
        async for message in conn.channel:
            print(f"  server received a message of {len(message)} bytes")
    except (trionet.FramingError, trio.BrokenResourceError) as error:
        print(f"  server: the framing broke: {error!r}")


async def main() -> None:
    net = VirtualNetwork()
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.005)
    with net.install(default_host="client"):
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                lines: trionet.TCPServer = await nursery.start(trionet.serve_tcp, trickle, 7)
                frames: trionet.TCPServer = await nursery.start(
                    partial(trionet.serve_tcp, count_messages, 8, codec=trionet.LengthPrefixed())
                )
            print("1. Receiving: a line at most every 70 ms, pieces 100 ms apart\n")
            async with await trionet.connect_tcp("server", lines.port) as conn:
                await read_two_lines("naive reader  ", NaiveLineReader(conn.stream).receive_line)
            print()
            async with await trionet.connect_tcp("server", lines.port,
                                                 codec=trionet.Lines()) as conn:
                await read_two_lines("MessageChannel", conn.channel.receive)

            big = bytes(6 * 1024 * 1024)
            print("\n2. Sending: a 6 MiB message, cancelled after 20 ms, then b'ping'\n")
            print("  with stream.send_all():")
            async with await trionet.connect_tcp("server", frames.port) as conn:
                with trio.move_on_after(0.02):
                    await conn.stream.send_all(trionet.LengthPrefixed().encode(big))
                await conn.stream.send_all(trionet.LengthPrefixed().encode(b"ping"))
                await trio.sleep(1)
            await trio.sleep(0.1)
            print("  with MessageChannel.send():")
            async with await trionet.connect_tcp("server", frames.port,
                                                 codec=trionet.LengthPrefixed()) as conn:
                with trio.move_on_after(0.02) as scope:
                    await conn.channel.send(big)
                    print("  send() returned: the frame had started, so it was finished")
                    await trio.lowlevel.checkpoint()  # the cancellation lands here
                print(f"  the timeout took effect at the next checkpoint: {scope.cancelled_caught}")
                await conn.channel.send(b"ping")
                await trio.sleep(1)
            nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
