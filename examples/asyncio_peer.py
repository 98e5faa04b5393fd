"""An asyncio client that talks to a trionet server through the wire format alone.

What it teaches: trionet's codecs are wire formats, not a private protocol. This
client imports nothing from trionet (or trio): it frames messages with a 4-byte
big-endian length, or ends them with a newline, as asyncio programs usually do,
and a trionet server with ``LengthPrefixed()`` or ``Lines()`` understands it. The
same holds for Twisted's ``Int32StringReceiver`` and ``LineReceiver``, tokio's
``LengthDelimitedCodec`` and ``LinesCodec``, and Netty's length-field codecs.

Run it against trionet's echo server::

    python -m trionet serve --codec length --port 8000
    python examples/asyncio_peer.py --port 8000 hello world

    python -m trionet serve --codec lines --port 8001
    python examples/asyncio_peer.py --port 8001 --lines hello world
"""

from __future__ import annotations

import argparse
import asyncio


async def exchange_length_prefixed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, messages: list[bytes]
) -> list[bytes]:
    for message in messages:
        writer.write(len(message).to_bytes(4, "big") + message)
    await writer.drain()
    replies = []
    for _ in messages:
        size = int.from_bytes(await reader.readexactly(4), "big")
        replies.append(await reader.readexactly(size))
    return replies


async def exchange_lines(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, messages: list[bytes]
) -> list[bytes]:
    writer.write(b"".join(message + b"\n" for message in messages))
    await writer.drain()
    return [(await reader.readline()).rstrip(b"\n") for _ in messages]


async def main(args: argparse.Namespace) -> None:
    reader, writer = await asyncio.open_connection(args.host, args.port)
    exchange = exchange_lines if args.lines else exchange_length_prefixed
    try:
        replies = await asyncio.wait_for(exchange(reader, writer, [m.encode() for m in args.messages]), 10)
    finally:
        writer.close()
        await writer.wait_closed()
    for message, reply in zip(args.messages, replies, strict=True):
        print(f"asyncio sent {message!r}, trionet echoed {reply.decode()!r}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="An asyncio peer for a trionet echo server.")
    parser.add_argument("messages", nargs="*", default=["hello", "world"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--lines", action="store_true", help="newline-ended messages")
    asyncio.run(main(parser.parse_args()))
