"""Decoders give back the memory of frames they returned (issue 14.1), and report it as ``held``."""

from __future__ import annotations

import gc
import tracemalloc

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trionet import Codec, Delimited, FrameTooLarge, LengthPrefixed, Lines, MessageChannel, Netstring, Varint

KiB = 1024
CHUNK = 64 * KiB  # what MessageChannel reads at a time
BIG = 8_000_000
LIMIT = 64 * KiB  # the bound on what an idle connection may keep

BIG_CODECS: list[Codec] = [
    LengthPrefixed(),
    LengthPrefixed(8, byteorder="little"),
    Varint(),
    Netstring(),
    Delimited(max_size=BIG),
    Delimited(b"\r\n", max_size=BIG),
    Lines(max_size=BIG),
]


def big_message() -> bytes:
    return b"x" * BIG  # no delimiter in it


def chunks_of(data: bytes, size: int) -> list[bytes]:
    return [data[i : i + size] for i in range(0, len(data), size)]


@pytest.mark.parametrize("codec", BIG_CODECS, ids=repr)
@pytest.mark.parametrize("tail", [b"", b"partial"], ids=["nothing-after", "partial-frame-after"])
def test_a_decoder_holds_under_64_kib_after_returning_an_8_mb_frame(
    codec: Codec, tail: bytes
) -> None:
    message = big_message()
    tail_bytes = codec.encode(b"next")[:-1] if tail else b""
    decoder = codec.decoder()
    frames = []
    for chunk in chunks_of(codec.encode(message) + tail_bytes, CHUNK):
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    assert frames == [message]
    assert decoder.buffered == len(tail_bytes)
    assert decoder.held < LIMIT
    # held is the truth: measured, the decoder keeps no large allocation.
    del frames, message
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        decoder.feed(codec.encode(b"next")[len(tail_bytes) :])
        assert decoder.next_frame() == b"next"
        assert decoder.next_frame() is None
        assert tracemalloc.get_traced_memory()[0] - before < LIMIT
    finally:
        tracemalloc.stop()
    assert decoder.held == 0


@pytest.mark.parametrize("codec", BIG_CODECS, ids=repr)
def test_held_is_zero_when_a_frame_consumes_the_last_byte_fed(codec: Codec) -> None:
    decoder = codec.decoder()
    assert decoder.held == 0
    decoder.feed(codec.encode_many([b"a", b"bb"]))
    assert decoder.held > 0
    assert decoder.next_frame() == b"a"
    assert decoder.held > 0  # b"bb" is still in the buffer
    assert decoder.next_frame() == b"bb"
    if isinstance(codec, (Delimited, Lines)):
        # A small bytes buffer goes at the next call (a length check per frame
        # would cost the delimiter decoders 6 % of their speed).
        assert decoder.held <= CHUNK
        assert decoder.next_frame() is None
    assert (decoder.held, decoder.buffered) == (0, 0)


@pytest.mark.parametrize("codec", BIG_CODECS, ids=repr)
def test_a_large_frame_in_one_feed_is_let_go_when_returned(codec: Codec) -> None:
    decoder = codec.decoder()
    decoder.feed(bytearray(codec.encode(b"q" * 300_000)))  # one feed, as from a large read
    assert decoder.next_frame() == b"q" * 300_000
    if isinstance(codec, (Delimited, Lines)):
        assert decoder.next_frame() is None
    assert decoder.held == 0


@pytest.mark.parametrize("codec", BIG_CODECS, ids=repr)
def test_a_long_consumed_prefix_is_given_back_before_waiting_for_more(codec: Codec) -> None:
    # 100 KiB of small frames and the start of one more, in one feed (a large read).
    frames = [b"f%05d" % i for i in range(15_000)]
    stream = codec.encode_many(frames) + codec.encode(b"unfinished")[:-2]
    decoder = codec.decoder()
    decoder.feed(stream)
    assert decoder.held == len(stream)
    received = []
    while (frame := decoder.next_frame()) is not None:
        received.append(frame)
    assert received == frames
    assert decoder.held == decoder.buffered < 32


def test_small_frames_in_one_chunk_share_it_without_copying() -> None:
    # Amortised cost: the buffer is the fed chunk itself until the last frame.
    codec = LengthPrefixed()
    chunk = codec.encode_many([b"m"] * 1000)
    decoder = codec.decoder()
    decoder.feed(chunk)
    for _ in range(999):
        assert decoder.next_frame() == b"m"
        assert decoder._buf is chunk  # type: ignore[attr-defined]
    assert decoder.next_frame() == b"m"
    assert decoder.held == 0


CODECS: list[Codec] = [
    LengthPrefixed(1),
    LengthPrefixed(2, byteorder="little"),
    LengthPrefixed(),
    Varint(),
    Netstring(),
    Delimited(b"--", max_size=40_000),
    Lines(max_size=40_000),
]

sizes = st.lists(st.sampled_from([0, 1, 5, 200, 255, 600, 20_000, 40_000]), max_size=8)


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_any_chunking_gives_the_same_frames_and_held_stays_bounded(
    codec: Codec, data: st.DataObject
) -> None:
    messages = [b"z" * min(size, codec.max_size) for size in data.draw(sizes)]
    stream = codec.encode_many(messages)
    cut_size = data.draw(st.sampled_from([1, 7, 1000, 17_000, CHUNK, 200_000]))
    decoder = codec.decoder()
    frames: list[bytes] = []
    largest_chunk = 0
    for chunk in chunks_of(stream, cut_size):
        largest_chunk = max(largest_chunk, len(chunk))
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
        # Between feeds the decoder holds the unfinished frame (growing by up
        # to 1/8 as a bytearray does) or, when that is short, at most the
        # consumed prefix in front of it (< 16 KiB) plus the last chunk.
        bound = max(decoder.buffered * 9 // 8 + 64, 16 * KiB + largest_chunk + decoder.buffered)
        assert decoder.held <= bound
    assert frames == messages
    assert (decoder.buffered, decoder.held, decoder.offset) == (0, 0, len(stream))


# -- the messages of FrameTooLarge for delimiter codecs (issue 12.4) -----------------


def decode_all(codec: Codec, chunks: list[bytes]) -> list[bytes]:
    decoder = codec.decoder()
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    return frames


def test_lines_says_at_least_for_a_line_whose_end_has_not_arrived() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        decode_all(Lines(max_size=1024), chunks_of(b"y" * 100_000, CHUNK))
    error = caught.value
    assert (error.size, error.max_size, error.offset, error.at_least) == (CHUNK, 1024, 0, True)
    assert str(error) == "frame of at least 65536 bytes at stream offset 0 exceeds max_size=1024"


@pytest.mark.parametrize(
    ("codec", "stream", "text", "at_least"),
    [
        (Lines(max_size=3), b"ab\nabcdef", "frame of at least 6 bytes at stream offset 3", True),
        (Lines(max_size=3), b"abcdef\n", "frame of 6 bytes at stream offset 0", False),
        (Delimited(b";", max_size=3), b"abcdef", "frame of at least 6 bytes", True),
        (Delimited(b";", max_size=3), b"abcdef;", "frame of 6 bytes", False),
        (Netstring(max_size=99), b"1000", "frame of at least 100 bytes", True),
        (Netstring(max_size=99), b"100:", "frame of 100 bytes", False),
    ],
    ids=repr,
)
def test_frame_too_large_says_at_least_only_when_the_size_is_a_lower_bound(
    codec: Codec, stream: bytes, text: str, at_least: bool
) -> None:
    with pytest.raises(FrameTooLarge) as caught:
        decode_all(codec, [stream])
    assert text in str(caught.value)
    assert caught.value.at_least is at_least


def test_encoders_report_exact_sizes() -> None:
    with pytest.raises(FrameTooLarge) as caught:
        Lines(max_size=3).encode(b"abcd")
    assert (str(caught.value), caught.value.at_least) == ("frame of 4 bytes exceeds max_size=3", False)


# -- through MessageChannel ------------------------------------------------------------


@pytest.mark.parametrize("codec", [LengthPrefixed(), Varint(), Lines(max_size=BIG)], ids=repr)
async def test_a_message_channel_holds_under_64_kib_after_an_8_mb_message(codec: Codec) -> None:
    left, right = trio.testing.memory_stream_pair()
    sender, receiver = MessageChannel(left, codec), MessageChannel(right, codec)
    message = big_message()
    async with sender, receiver, trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, message)
        assert await receiver.receive() == message
        decoder = receiver._decoder
        assert decoder.held < LIMIT
        statistics = receiver.statistics()
        assert statistics.buffered_bytes == 0
        if hasattr(statistics, "held_bytes"):
            assert statistics.held_bytes == decoder.held
        # A receive that then waits (the idle state) holds nothing at all.
        nursery.start_soon(receiver.receive)
        await trio.testing.wait_all_tasks_blocked()
        assert decoder.held == 0
        nursery.cancel_scope.cancel()

