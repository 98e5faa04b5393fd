"""``python -m trionet bench``: a quick loopback benchmark of framed messages.

Self-contained (the package does not import the repository's ``benchmarks/``,
which is not installed): client and server are two tasks of one trio loop on
TCP loopback, so a row measures trionet's whole cost per message, sending and
receiving, without the kernel's cross-process wake-ups. ``python -m
benchmarks.framed_echo`` in a checkout is the careful version, with repeated
runs and comparisons against hand-written framing and asyncio.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Final

import trio

from .. import MessageChannel, TCPConnection, connect_tcp, serve_tcp
from .common import EXIT_OK, make_codec

__all__ = ["main", "run_bench"]

PAYLOAD_SIZES: Final = (64, 4096)
DEFAULT_CODECS: Final = ("lines", "length")
#: Frames handed to one ``send_many`` in the streaming rows.
BATCH: Final = 64


@dataclass(frozen=True)
class Row:
    scenario: str
    codec: str
    size: int
    messages: int
    seconds: float

    def cells(self) -> list[str]:
        rate = self.messages / self.seconds if self.seconds > 0 else float("inf")
        megabytes = rate * self.size / 1e6
        size = f"{self.size} B" if self.size < 1024 else f"{self.size // 1024} KiB"
        return [self.scenario, self.codec, size, f"{self.messages:,}", f"{rate:,.0f}", f"{megabytes:,.1f}"]


async def _serve(conn: TCPConnection) -> None:
    # The first message names the scenario: echo every message, or count them
    # all and answer the count once the client has sent its end of stream.
    channel = conn.channel
    mode = await channel.receive()
    if mode == b"echo":
        async for message in channel:
            await channel.send(message)
        return
    count = 0
    try:
        while True:
            count += len(await channel.receive_many())
    except trio.EndOfChannel:
        await channel.send(b"%d" % count)


async def _round_trips(channel: MessageChannel, payload: bytes, seconds: float) -> tuple[int, float]:
    await channel.send(b"echo")
    start = trio.current_time()
    deadline = start + seconds
    count = 0
    while trio.current_time() < deadline:
        await channel.send(payload)
        if await channel.receive() != payload:
            raise AssertionError("the echo differs from what was sent")
        count += 1
    return count, trio.current_time() - start


async def _stream(channel: MessageChannel, payload: bytes, seconds: float) -> tuple[int, float]:
    await channel.send(b"count")
    batch = [payload] * BATCH
    start = trio.current_time()
    deadline = start + seconds
    count = 0
    while trio.current_time() < deadline:
        await channel.send_many(batch)
        count += BATCH
    await channel.send_eof()
    counted = int(await channel.receive())
    if counted != count:
        raise AssertionError(f"sent {count} messages, the server counted {counted}")
    return count, trio.current_time() - start


Scenario = Callable[[MessageChannel, bytes, float], Awaitable[tuple[int, float]]]
SCENARIOS: Final[dict[str, Scenario]] = {"round trip": _round_trips, "stream": _stream}


async def run_bench(codecs: list[str], seconds: float, say: Callable[[str], None] = print) -> list[Row]:
    """Measure each scenario, codec and payload size; print the table through ``say``."""
    rows: list[Row] = []
    for codec_name in codecs:
        codec = make_codec(codec_name, None)
        async with trio.open_nursery() as nursery:
            server = await nursery.start(partial(serve_tcp, _serve, 0, host="127.0.0.1", codec=codec))
            for scenario, measure in SCENARIOS.items():
                for size in PAYLOAD_SIZES:
                    async with await connect_tcp("127.0.0.1", server.port, codec=codec) as conn:
                        count, elapsed = await measure(conn.channel, b"x" * size, seconds)
                    rows.append(Row(scenario, codec_name, size, count, elapsed))
            nursery.cancel_scope.cancel()
    header = ["scenario", "codec", "payload", "messages", "msgs/s", "MB/s"]
    table = [header] + [row.cells() for row in rows]
    widths = [max(len(line[column]) for line in table) for column in range(len(header))]
    for number, line in enumerate(table):
        say("  ".join(
            cell.ljust(width) if column < 3 else cell.rjust(width)
            for column, (cell, width) in enumerate(zip(line, widths, strict=True))
        ).rstrip())
        if number == 0:
            say("  ".join("-" * width for width in widths))
    return rows


async def main(args: argparse.Namespace) -> int:
    """``python -m trionet bench``."""
    codecs = args.codecs or list(DEFAULT_CODECS)

    def say(line: str) -> None:
        print(line, flush=True)

    say(f"trionet bench: MessageChannel over TCP loopback (127.0.0.1), {args.seconds:g} s per row")
    say(f"client and server are tasks of one trio {trio.__version__} loop; "
        f"{platform.python_implementation()} {platform.python_version()}")
    say(f"round trip: send one message, wait for its echo; stream: send_many of {BATCH} "
        "messages, the server counts")
    say("")
    await run_bench(codecs, args.seconds, say)
    return EXIT_OK
