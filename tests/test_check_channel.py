"""check_message_channel catches the faults it exists for, and fits its messages to the codec."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trionet import Codec, Delimited, LengthPrefixed, Lines, MessageChannel, Netstring, Varint
from trionet.testing import check_message_channel


class Wrapper:
    """A channel that forwards to a MessageChannel; subclasses add one fault."""

    def __init__(self, inner: MessageChannel) -> None:
        self.inner = inner

    @property
    def codec(self) -> Codec:
        return self.inner.codec

    async def send(self, value: bytes) -> None:
        await self.inner.send(value)

    async def send_many(self, values: list[bytes]) -> None:
        await self.inner.send_many(values)

    async def receive(self) -> bytes:
        return await self.inner.receive()

    async def aclose(self) -> None:
        await self.inner.aclose()


class LosesFrameTakenBeforeCancel(Wrapper):
    async def receive(self) -> bytes:
        frame = await self.inner.receive()
        await trio.lowlevel.checkpoint()  # a cancel here loses the frame taken
        return frame


class WritesHalfAFrameAroundACheckpoint(Wrapper):
    def __init__(self, inner: MessageChannel) -> None:
        super().__init__(inner)
        self.lock = trio.Lock()  # frames of concurrent senders do not interleave

    async def send(self, value: bytes) -> None:
        frame = self.inner.codec.encode(value)
        stream = self.inner.stream
        half = len(frame) // 2
        async with self.lock:
            await stream.send_all(frame[:half])
            await trio.lowlevel.checkpoint()  # a cancel here leaves half a frame on the wire
            await stream.send_all(frame[half:])


class ReordersTheFirstTwo(Wrapper):
    def __init__(self, inner: MessageChannel) -> None:
        super().__init__(inner)
        self.held: list[bytes] = []
        self.swapped = False

    async def receive(self) -> bytes:
        if self.held:
            await trio.lowlevel.checkpoint()
            return self.held.pop()
        if not self.swapped:
            self.swapped = True
            self.held.append(await self.inner.receive())
        return await self.inner.receive()  # the second frame before the first


def maker(wrapper: type[Wrapper], codec: Codec | None = None):  # type: ignore[no-untyped-def]
    async def make_pair() -> tuple[Wrapper, Wrapper]:
        left, right = trio.testing.memory_stream_pair()
        return wrapper(MessageChannel(left, codec)), wrapper(MessageChannel(right, codec))

    return make_pair


@pytest.mark.parametrize(
    ("wrapper", "contract"),
    [
        (LosesFrameTakenBeforeCancel, "cancelled receive with frames buffered loses nothing: "),
        (WritesHalfAFrameAroundACheckpoint, "send cancelled in flight is whole or nothing: "),
        (ReordersTheFirstTwo, "round trip: send_many: messages were not received whole and in order"),
    ],
    ids=lambda value: getattr(value, "__name__", "contract"),
)
async def test_the_check_fails_with_an_assertion_error_naming_the_contract(
    autojump_clock: trio.testing.MockClock, wrapper: type[Wrapper], contract: str
) -> None:
    with pytest.raises(AssertionError) as caught:
        await check_message_channel(maker(wrapper), codec=LengthPrefixed())
    assert type(caught.value) is AssertionError  # not an ExceptionGroup
    assert str(caught.value).startswith(contract)


async def test_a_channel_error_inside_a_scenario_becomes_one_assertion_error(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class Raises(Wrapper):
        async def receive(self) -> bytes:
            await self.inner.receive()
            raise trio.BrokenResourceError("boom")

    with pytest.raises(AssertionError, match=r"^round trip: the channel raised BrokenResourceError: boom"):
        await check_message_channel(maker(Raises))


BUILT_IN: list[Codec] = [
    LengthPrefixed(),
    LengthPrefixed(1),
    LengthPrefixed(2),
    LengthPrefixed(8, byteorder="little"),
    LengthPrefixed(max_size=99_999),
    LengthPrefixed(max_size=1),
    Varint(),
    Varint(max_size=1),
    Delimited(),
    Delimited(b"\r\n"),
    Delimited(b"\x00", max_size=1),
    Lines(),
    Lines(max_size=1),
    Netstring(),
    Netstring(max_size=1),
]


@pytest.mark.parametrize("codec", BUILT_IN, ids=repr)
async def test_message_channel_passes_with_every_built_in_codec(
    autojump_clock: trio.testing.MockClock, codec: Codec
) -> None:
    await check_message_channel(maker(Wrapper, codec))  # the codec is found on the channel


async def test_message_channel_passes_over_lockstep_streams_with_lines(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def make_pair() -> tuple[MessageChannel, MessageChannel]:
        left, right = trio.testing.lockstep_stream_pair()
        return MessageChannel(left, Lines()), MessageChannel(right, Lines())

    await check_message_channel(make_pair)


async def test_explicit_messages_are_used(autojump_clock: trio.testing.MockClock) -> None:
    seen: set[bytes] = set()

    class Records(Wrapper):
        async def receive(self) -> bytes:
            frame = await self.inner.receive()
            seen.add(frame)
            return frame

    await check_message_channel(maker(Records), messages=[b"PING", b"PONG"])
    assert seen == {b"PING", b"PONG"}
    with pytest.raises(ValueError, match="must not be empty"):
        await check_message_channel(maker(Records), messages=[])


async def test_a_one_way_pair_passes_with_bidirectional_false_and_fails_clearly_without(
    autojump_clock: trio.testing.MockClock,
) -> None:
    class OneWay(Wrapper):
        # b cannot send: like a codec that only one side can encode.
        async def send(self, value: bytes) -> None:
            if self.inner is one_way_receivers[-1]:
                await trio.sleep_forever()
            await self.inner.send(value)

    one_way_receivers: list[MessageChannel] = []

    async def make_pair() -> tuple[OneWay, OneWay]:
        left, right = trio.testing.memory_stream_pair()
        b = MessageChannel(right)
        one_way_receivers.append(b)
        return OneWay(MessageChannel(left)), OneWay(b)

    await check_message_channel(make_pair, bidirectional=False)
    with pytest.raises(AssertionError, match=r"^round trip: no progress within 5 seconds"):
        await check_message_channel(make_pair, scenario_timeout=5)
