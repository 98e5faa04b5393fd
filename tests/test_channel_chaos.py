"""MessageChannel under random cancellations on both sides, over real loopback TCP."""

from __future__ import annotations

import random
import zlib

import pytest
import trio

from trionet import LengthPrefixed, MessageChannel

from .conftest import tcp_stream_pair

MESSAGES = 10_000


def make_message(rng: random.Random, index: int) -> bytes:
    # Mostly small messages, with some large enough to block mid-frame.
    size = rng.choice((0, 1, 16, 200, 4096)) if rng.random() < 0.97 else rng.randrange(65536, 1 << 20)
    body = rng.randbytes(size)
    return index.to_bytes(4, "big") + zlib.crc32(body).to_bytes(4, "big") + body


def check_intact(message: bytes) -> int:
    index = int.from_bytes(message[:4], "big")
    assert zlib.crc32(message[8:]) == int.from_bytes(message[4:8], "big"), f"message {index} corrupted"
    return index


@pytest.mark.slow
@pytest.mark.usefixtures("no_fd_leak")
@pytest.mark.parametrize("seed", [1, 2])
async def test_random_cancellations_lose_or_duplicate_no_message(seed: int) -> None:
    rng = random.Random(seed)
    client, server = await tcp_stream_pair()
    codec = LengthPrefixed(max_size=2 << 20)
    sender, receiver = MessageChannel(client, codec), MessageChannel(server, codec)
    sent: list[int] = []
    received: list[int] = []
    cancelled_sends = cancelled_receives = 0

    async def send_all_messages() -> None:
        nonlocal cancelled_sends
        for index in range(MESSAGES):
            message = make_message(rng, index)
            with trio.move_on_after(rng.choice((0, 0.0001, 0.001, 1))) as scope:
                await sender.send(message)
                # No checkpoint between a returning send() and this line.
                sent.append(index)
            cancelled_sends += scope.cancelled_caught
        await sender.send_eof()

    async def receive_all_messages() -> None:
        nonlocal cancelled_receives
        while True:
            with trio.move_on_after(rng.choice((0, 0.0001, 0.001, 1))) as scope:
                try:
                    message = await receiver.receive()
                except trio.EndOfChannel:
                    return
                received.append(check_intact(message))
            cancelled_receives += scope.cancelled_caught

    with trio.fail_after(120):
        async with client, server, trio.open_nursery() as nursery:
            nursery.start_soon(send_all_messages)
            nursery.start_soon(receive_all_messages)

    assert received == sent
    assert not sender.statistics().aborted
    # The run really exercised both kinds of cancellation.
    assert cancelled_sends > 100
    assert cancelled_receives > 100
    assert 0 < len(sent) < MESSAGES
