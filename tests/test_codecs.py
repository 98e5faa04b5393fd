"""The framing codecs, through the public API: ``LengthPrefixed``, ``Varint``, ``Delimited``...

The codec modules themselves (their exports, that they import no trio, their
docstring examples) are checked in ``test_sansio_internals.py``.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
import pickle
import traceback
import tracemalloc
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import TypeAlias

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trionet import (
    DEFAULT_MAX_FRAME_SIZE,
    DEFAULT_MAX_LINE_SIZE,
    Codec,
    Decoder,
    Delimited,
    FrameTooLarge,
    FramingError,
    InvalidMessage,
    LengthPrefixed,
    Lines,
    Netstring,
    ProtocolError,
    Varint,
)

#: What a decoder's feed() takes.
Buffer: TypeAlias = bytes | bytearray | memoryview

KiB = 1024
MiB = 1024 * KiB
GiB = 1024 * MiB
CHUNK = 64 * KiB  # what MessageChannel reads at a time


CODECS: list[Codec] = [
    *(
        LengthPrefixed(width, byteorder=order)
        for width in (1, 2, 4, 8)
        for order in ("big", "little")
    ),
    LengthPrefixed(2, max_size=40),
    Varint(),
    Varint(max_size=40),
    Delimited(),
    Delimited(b"\r\n"),
    Delimited(b"--", max_size=40),  # can overlap the end of a message
    Delimited(b"\x00", max_size=1),
    Lines(),
    Lines(newline=b"\r\n", max_size=40),
    Netstring(),
    Netstring(max_size=40),
]


def is_valid(codec: Codec, message: bytes) -> bool:
    """The messages each codec can frame, stated independently of the encoders."""
    if len(message) > codec.max_size:
        return False
    if isinstance(codec, Delimited):
        return (message + codec.delimiter).find(codec.delimiter) == len(message)
    if isinstance(codec, Lines):
        return b"\r" not in message and b"\n" not in message
    return True


# Delimiter fragments make collisions with the framing likely.
PIECES = [b"a", b"-", b"\r", b"\n", b"\r\n", b"\x00", b":", b",", b"7", b"\x80", b"\xff"]
fragments = st.lists(st.sampled_from(PIECES), max_size=16).map(b"".join)
# Over 512 bytes: fed in small pieces, such frames accumulate in a bytearray.
large_messages = st.binary(min_size=520, max_size=600)


def messages_for(codec: Codec) -> st.SearchStrategy[list[bytes]]:
    options = [st.binary(max_size=min(codec.max_size, 48)), fragments]
    if codec.max_size >= 600:
        options.append(large_messages)
    message = st.one_of(options).filter(lambda m: is_valid(codec, m))
    return st.lists(message, max_size=8)


def encode_all(codec: Codec, messages: list[bytes]) -> bytes:
    return b"".join(codec.encode(message) for message in messages)


def feed_and_drain(decoder: Decoder, chunks: Iterable[Buffer]) -> list[bytes]:
    """Feed chunks as MessageChannel does: after each one, take every whole frame."""
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            assert type(frame) is bytes
            frames.append(frame)
    return frames


def drain(decoder: Decoder) -> list[bytes]:
    return feed_and_drain(decoder, [b""])


def varint(value: int) -> bytes:
    """``value`` as a base-128 varint (LEB128), written out independently of the encoder."""
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def split(data: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(cuts), len(data)]
    return [data[start:stop] for start, stop in itertools.pairwise(bounds)]


@contextmanager
def traced_peak() -> Iterator[Callable[[], int]]:
    """Measure the peak of Python allocations made inside the block, in bytes."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        start = tracemalloc.get_traced_memory()[0]
        yield lambda: tracemalloc.get_traced_memory()[1] - start
    finally:
        tracemalloc.stop()


# -- any chunking of a valid stream decodes to the messages --------------------

roundtrip_settings = settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.filter_too_much]
)


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@roundtrip_settings
@given(data=st.data())
def test_any_chunking_of_encoded_messages_decodes_to_the_same_messages(
    codec: Codec, data: st.DataObject
) -> None:
    messages = data.draw(messages_for(codec))
    stream = encode_all(codec, messages)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=20))
    kinds = itertools.cycle(data.draw(st.permutations([bytes, bytearray, memoryview])))
    chunks = [kind(chunk) for kind, chunk in zip(kinds, split(stream, cuts), strict=False)]
    drain_every = data.draw(st.integers(1, 3))  # several feeds may come between drains
    decoder = codec.decoder()
    frames = []
    for index, chunk in enumerate(chunks, 1):
        decoder.feed(chunk)
        if index % drain_every == 0:
            frames += drain(decoder)
    assert frames + drain(decoder) == messages
    assert decoder.buffered == 0
    assert decoder.offset == len(stream)


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@roundtrip_settings
@given(data=st.data())
def test_messages_fed_one_byte_at_a_time_decode_to_the_same_messages(
    codec: Codec, data: st.DataObject
) -> None:
    messages = data.draw(messages_for(codec))
    stream = encode_all(codec, messages)
    decoder = codec.decoder()
    assert feed_and_drain(decoder, (stream[i : i + 1] for i in range(len(stream)))) == messages
    assert decoder.buffered == 0
    assert decoder.offset == len(stream)


def decode_outcome(decoder: Decoder, chunks: list[bytes]) -> tuple[list[bytes], object]:
    """The frames a stream yields, then its error's type and offset (or its leftover)."""
    frames: list[bytes] = []
    fed: list[int] = []
    try:
        feed_until_error(decoder, chunks, frames, fed)
    except (FrameTooLarge, ProtocolError) as error:
        return frames, (type(error), error.offset)
    return frames, decoder.buffered


@pytest.mark.parametrize(
    "codec",
    [
        LengthPrefixed(1, max_size=20),
        Varint(max_size=20),
        Delimited(b"--", max_size=20),
        Lines(max_size=20),
        Netstring(max_size=20),
        Netstring(),
    ],
    ids=repr,
)
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_hostile_streams_yield_the_same_frames_and_error_however_they_are_chunked(
    codec: Codec, data: st.DataObject
) -> None:
    pieces = st.one_of(fragments, st.binary(max_size=30), st.just(codec.encode(b"ok")))
    stream = b"".join(data.draw(st.lists(pieces, max_size=10)))
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=10))
    whole = decode_outcome(codec.decoder(), [stream])
    assert decode_outcome(codec.decoder(), split(stream, cuts)) == whole


@pytest.mark.parametrize("codec", CODECS, ids=repr)
@settings(max_examples=60, deadline=None)
@given(message=st.one_of(st.binary(max_size=64), fragments))
def test_encode_accepts_exactly_the_messages_the_wire_format_can_frame(
    codec: Codec, message: bytes
) -> None:
    if is_valid(codec, message):
        out = bytearray(b"prefix")
        codec.encode_into(out, message)
        assert out == b"prefix" + codec.encode(message)
    else:
        with pytest.raises((InvalidMessage, FrameTooLarge)):
            codec.encode(message)


@pytest.mark.parametrize(
    "codec",
    [LengthPrefixed(), Varint(), Delimited(b"\r\n"), Lines(), Netstring()],
    ids=repr,
)
@pytest.mark.parametrize("chunk_size", [1, 7, 1000, 5000, CHUNK])
def test_large_frames_in_small_or_large_chunks_decode_whole(codec: Codec, chunk_size: int) -> None:
    messages = [bytes([65 + i]) * size for i, size in enumerate([40_000, 3, 0, 12_345, 65_536])]
    stream = encode_all(codec, messages)
    decoder = codec.decoder()
    chunks = [stream[i : i + chunk_size] for i in range(0, len(stream), chunk_size)]
    assert feed_and_drain(decoder, chunks) == messages
    assert decoder.buffered == 0


# -- wire formats ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("codec", "message", "frame"),
    [
        (LengthPrefixed(), b"hi", b"\x00\x00\x00\x02hi"),
        (LengthPrefixed(1), b"hi", b"\x02hi"),
        (LengthPrefixed(2, byteorder="little"), b"hi", b"\x02\x00hi"),
        (LengthPrefixed(8), b"", b"\x00" * 8),
        (Varint(), b"hi", b"\x02hi"),
        (Varint(), b"x" * 300, b"\xac\x02" + b"x" * 300),
        (Delimited(), b"hi", b"hi\n"),
        (Delimited(b"\r\n"), b"", b"\r\n"),
        (Lines(), b"hi", b"hi\n"),
        (Lines(newline=b"\r\n"), b"hi", b"hi\r\n"),
        (Netstring(), b"hello world!", b"12:hello world!,"),
        (Netstring(), b"", b"0:,"),
    ],
    ids=repr,
)
def test_encode_writes_the_documented_wire_format(
    codec: Codec, message: bytes, frame: bytes
) -> None:
    assert codec.encode(message) == frame
    assert codec.encode(bytearray(message)) == frame
    assert codec.encode(memoryview(message)) == frame
    assert type(codec.encode(bytearray(message))) is bytes
    out = bytearray(b"..")
    codec.encode_into(out, memoryview(message))
    assert out == b".." + frame


def test_encode_counts_bytes_not_items_of_a_memoryview() -> None:
    view = memoryview(bytes(8)).cast("I")  # two 4-byte items
    assert LengthPrefixed().encode(view) == b"\x00\x00\x00\x08" + bytes(8)


def test_length_prefixed_matches_tokio_and_twisted_int32_framing() -> None:
    # Int32StringReceiver / LengthDelimitedCodec: "!I" length, then the payload.
    assert LengthPrefixed().encode(b"abc") == (3).to_bytes(4, "big") + b"abc"


def test_varint_decoder_accepts_non_minimal_varints_up_to_10_bytes() -> None:
    decoder = Varint().decoder()
    decoder.feed(b"\x82\x00hi" + b"\x80" * 9 + b"\x00")
    assert drain(decoder) == [b"hi", b""]


@pytest.mark.parametrize(
    ("line", "payload"),
    [
        (b"a\r\n", b"a"),
        (b"a\n", b"a"),
        (b"\r\n", b""),
        (b"a\r\r\n", b"a\r"),
        (b"a\rb\n", b"a\rb"),
    ],
)
def test_lines_decoder_strips_one_carriage_return_before_the_newline(
    line: bytes, payload: bytes
) -> None:
    decoder = Lines().decoder()
    decoder.feed(line)
    assert drain(decoder) == [payload]


def test_empty_line_at_the_start_of_a_chunk_ending_in_carriage_return_is_empty() -> None:
    decoder = Lines().decoder()
    decoder.feed(b"\nab\r")
    assert drain(decoder) == [b""]
    assert decoder.buffered == 3


def test_lines_decoder_keeps_a_carriage_return_at_the_end_of_a_chunk_pending() -> None:
    decoder = Lines().decoder()
    assert feed_and_drain(decoder, [b"ab\r", b"\nc\r"]) == [b"ab"]
    assert decoder.buffered == 2


# -- malformed input -------------------------------------------------------------


def feed_until_error(
    decoder: Decoder, chunks: list[bytes], frames: list[bytes], fed: list[int]
) -> None:
    """Feed and drain until the decoder raises, noting the frames and bytes fed so far."""
    for chunk in chunks:
        fed.append(len(chunk))
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)


MALFORMED = [
    # codec, stream, frames returned first, error, its offset, bytes after which the
    # error is certain (and raised when fed one byte at a time), words in the message
    (
        LengthPrefixed(max_size=10),
        b"\0\0\0\x01a\0\0\0\x0b",
        [b"a"],
        FrameTooLarge,
        5,
        9,
        "11 bytes",
    ),
    (LengthPrefixed(8), b"\0\0\0\x01\0\0\0\0", [], FrameTooLarge, 0, 8, "4294967296 bytes"),
    (LengthPrefixed(1, max_size=3), b"\x03abc\x04", [b"abc"], FrameTooLarge, 4, 5, "max_size=3"),
    (Varint(max_size=100), b"\x01a\xe5\x00", [b"a"], FrameTooLarge, 2, 4, "of 101 bytes"),
    (Varint(max_size=1000), b"\xff\xff\x01", [], FrameTooLarge, 0, 3, "of 32767 bytes"),
    (Varint(), b"\xff" * 9 + b"\x02", [], ProtocolError, 9, 10, "exceeds 64 bits"),
    (Varint(), b"\x80" * 10 + b"\x00", [], ProtocolError, 9, 10, "within 10 bytes"),
    (Varint(), b"\x00" + b"\x80" * 10, [b""], ProtocolError, 10, 11, "within 10 bytes"),
    (Netstring(), b"3:abcX", [], ProtocolError, 5, 6, "expected b','"),
    (Netstring(), b"1:a,3:abc;", [b"a"], ProtocolError, 9, 10, "expected b','"),
    (Netstring(), b"01:a,", [], ProtocolError, 0, 2, "leading zero"),
    (Netstring(), b"0:,00:,", [b""], ProtocolError, 3, 5, "leading zero"),
    (Netstring(), b"x", [], ProtocolError, 0, 1, "expected a digit in"),
    (Netstring(), b":", [], ProtocolError, 0, 1, "expected a digit in"),
    (Netstring(), b"12a:", [], ProtocolError, 2, 3, "expected a digit or b':'"),
    (Netstring(), b"-1:", [], ProtocolError, 0, 1, "got b'-'"),
    (Netstring(max_size=99), b"2:ab,100", [b"ab"], FrameTooLarge, 5, 8, "100 bytes"),
    (Netstring(), b"9999999:", [], FrameTooLarge, 0, 7, "9999999 bytes"),
    (Lines(max_size=5), b"12345\n123456\n", [b"12345"], FrameTooLarge, 6, 12, "max_size=5"),
    (Lines(max_size=5), b"123456", [], FrameTooLarge, 0, 6, "6 bytes"),
    (Lines(max_size=5), b"12345\r\n12345\rx", [b"12345"], FrameTooLarge, 7, 14, "7 bytes"),
    (Lines(max_size=5), b"1234567", [], FrameTooLarge, 0, 6, "max_size=5"),
    (Delimited(b"\r\n", max_size=4), b"abcde", [], FrameTooLarge, 0, 5, "5 bytes"),
    (Delimited(b"\r\n", max_size=4), b"abcd\rx", [], FrameTooLarge, 0, 6, "6 bytes"),
    (Delimited(b"||", max_size=2), b"ab||abc||", [b"ab"], FrameTooLarge, 4, 7, "3 bytes"),
]


@pytest.mark.parametrize(
    ("codec", "stream", "frames", "error", "offset", "known_after", "words"), MALFORMED, ids=repr
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_malformed_input_raises_at_the_offending_offset_after_earlier_frames(
    codec: Codec,
    stream: bytes,
    frames: list[bytes],
    error: type[FrameTooLarge | ProtocolError],
    offset: int,
    known_after: int,
    words: str,
    bytewise: bool,
) -> None:
    decoder = codec.decoder()
    chunks = [stream[i : i + 1] for i in range(len(stream))] if bytewise else [stream]
    returned: list[bytes] = []
    fed: list[int] = []
    with pytest.raises(error, match=words) as caught:
        feed_until_error(decoder, chunks, returned, fed)
    assert returned == frames
    assert isinstance(caught.value, (FrameTooLarge, ProtocolError))
    assert caught.value.offset == offset
    assert sum(fed) == (known_after if bytewise else len(stream))


def test_frame_too_large_names_the_announced_size_and_the_limit() -> None:
    decoder = LengthPrefixed(max_size=10).decoder()
    decoder.feed(b"\x00\x00\x01\x00")
    with pytest.raises(FrameTooLarge) as caught:
        decoder.next_frame()
    assert (caught.value.size, caught.value.max_size, caught.value.offset) == (256, 10, 0)


def test_a_line_exactly_max_size_long_is_accepted_with_either_line_ending() -> None:
    decoder = Lines(max_size=5).decoder()
    assert feed_and_drain(decoder, [b"12345\r", b"\n12345", b"\n"]) == [b"12345", b"12345"]


def test_a_delimiter_that_may_still_complete_at_max_size_is_waited_for() -> None:
    decoder = Delimited(b"aba", max_size=3).decoder()
    assert feed_and_drain(decoder, [b"xyzab"]) == []  # b"xyz" + b"aba" is still possible
    assert feed_and_drain(decoder, [b"a"]) == [b"xyz"]


@pytest.mark.parametrize(
    ("codec", "bad"),
    [
        (LengthPrefixed(1, max_size=2), b"\x05"),
        (Varint(), b"\x80" * 11),
        (Delimited(b";", max_size=2), b"toolong;"),
        (Lines(max_size=2), b"toolong\n"),
        (Netstring(), b"x"),
    ],
    ids=repr,
)
def test_decoding_errors_are_sticky_and_drop_the_buffer(codec: Codec, bad: bytes) -> None:
    good = codec.encode(b"ok")
    decoder = codec.decoder()
    decoder.feed(good + bad + good)
    assert decoder.next_frame() == b"ok"
    with pytest.raises(FramingError) as caught:
        decoder.next_frame()
    first = caught.value
    for _ in range(3):
        with pytest.raises(FramingError) as again:
            decoder.next_frame()
        assert again.value is first
        with pytest.raises(FramingError) as again:
            decoder.feed(good)
        assert again.value is first
    assert len(list(traceback.walk_tb(first.__traceback__))) < 5  # does not grow
    assert decoder.buffered == 0
    assert decoder.offset == len(good)


# -- buffered and offset ---------------------------------------------------------


def test_buffered_counts_bytes_not_yet_returned_and_offset_counts_consumed_bytes() -> None:
    decoder = LengthPrefixed(2).decoder()
    assert (decoder.buffered, decoder.offset) == (0, 0)
    decoder.feed(b"\x00\x03ab")
    assert decoder.next_frame() is None
    assert (decoder.buffered, decoder.offset) == (4, 0)
    decoder.feed(b"c\x00")
    assert decoder.next_frame() == b"abc"
    assert (decoder.buffered, decoder.offset) == (1, 5)
    assert decoder.next_frame() is None
    decoder.feed(b"\x00")
    assert decoder.next_frame() == b""
    assert (decoder.buffered, decoder.offset) == (0, 7)
    decoder.feed(b"")
    assert (decoder.buffered, decoder.offset) == (0, 7)


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_offsets_stay_absolute_across_many_feeds(codec: Codec) -> None:
    message = b"m" * min(codec.max_size, 300)
    frame = codec.encode(message)
    decoder = codec.decoder()
    for count in range(1, 50):
        decoder.feed(frame[:5])
        decoder.feed(frame[5:])
        assert decoder.next_frame() == message
        assert (decoder.offset, decoder.buffered) == (count * len(frame), 0)


def test_fed_bytearray_is_copied_so_the_caller_may_reuse_it() -> None:
    decoder = Lines().decoder()
    buffer = bytearray(b"abc\n")
    decoder.feed(buffer)
    buffer[:] = b"xyz\n"
    assert decoder.next_frame() == b"abc"


@pytest.mark.parametrize(
    "codec", [Delimited(max_size=32 * MiB), Lines(max_size=32 * MiB)], ids=repr
)
def test_delimiter_search_resumes_where_it_stopped_so_decoding_is_linear(codec: Codec) -> None:
    # Searching each time from the start of the line would scan O(n^2) bytes when
    # a long line arrives in small chunks. The decoder keeps where the last search
    # stopped: after each chunk, every byte but the last few (which may begin a
    # delimiter) is behind the search position, so no byte is searched twice.
    chunk = b"x" * (4 * KiB)
    decoder = codec.decoder()
    fed = 0
    for _ in range(1024):
        decoder.feed(chunk)
        fed += len(chunk)
        assert decoder.next_frame() is None
        unsearched = fed - decoder._search  # type: ignore[attr-defined]
        assert 0 <= unsearched < 2, f"search restarted: {unsearched} bytes left to search again"
    decoder.feed(b"\n")
    assert decoder.next_frame() == b"x" * (4 * MiB)


# -- memory bounds against hostile peers -------------------------------------------


def feed_until_frame_too_large(decoder: Decoder, chunks: Iterable[bytes]) -> tuple[int | None, int]:
    """Feed and drain as MessageChannel does until FrameTooLarge: (its offset, bytes fed)."""
    fed = 0

    def feed_all() -> None:
        nonlocal fed
        for chunk in chunks:
            fed += len(chunk)
            decoder.feed(chunk)
            while decoder.next_frame() is not None:
                pass

    with pytest.raises(FrameTooLarge) as caught:
        feed_all()
    assert caught.value.size > caught.value.max_size
    return caught.value.offset, fed


@pytest.mark.parametrize(
    ("codec", "header"),
    [
        (LengthPrefixed(8, max_size=MiB), (4 * GiB).to_bytes(8, "big")),
        (LengthPrefixed(4, max_size=MiB), b"\xff\xff\xff\xff"),
        (LengthPrefixed(4), b"\xff\xff\xff\xff"),
        (LengthPrefixed(8), (4 * GiB).to_bytes(8, "big")),
        (LengthPrefixed(8, byteorder="little"), (4 * GiB).to_bytes(8, "little")),
    ],
    ids=repr,
)
def test_header_announcing_4_gib_is_rejected_before_payload_is_buffered(
    codec: Codec, header: bytes
) -> None:
    payload = bytes(CHUNK)
    decoder = codec.decoder()
    with traced_peak() as peak:
        for byte in header[:-1]:
            decoder.feed(bytes([byte]))
            assert decoder.next_frame() is None
        decoder.feed(header[-1:])
        with pytest.raises(FrameTooLarge) as caught:
            decoder.next_frame()
        for _ in range(64):  # the peer keeps sending; none of it is kept
            with pytest.raises(FrameTooLarge):
                decoder.feed(payload)
            assert decoder.buffered == 0
        assert peak() < codec.max_size + CHUNK
    assert caught.value.size >= 4 * GiB - 1
    assert caught.value.offset == 0


def test_header_announcing_4_gib_after_good_frames_in_one_chunk_is_rejected() -> None:
    codec = LengthPrefixed(8, max_size=MiB)
    good = codec.encode(b"a") + codec.encode(b"b")
    chunk = (good + (4 * GiB).to_bytes(8, "big") + bytes(CHUNK))[:CHUNK]
    decoder = codec.decoder()
    with traced_peak() as peak:
        decoder.feed(chunk)
        assert decoder.next_frame() == b"a"
        assert decoder.next_frame() == b"b"
        with pytest.raises(FrameTooLarge) as caught:
            decoder.next_frame()
        assert peak() < codec.max_size + CHUNK
    assert caught.value.offset == len(good)


# The decoder must examine max_size bytes, plus up to one chunk that arrived
# together with them; a growing bytearray over-allocates by up to 1/8 (CPython's
# bytearray_resize), and a few KiB go to small objects.
def delimiter_search_bound(max_size: int) -> int:
    return (max_size + CHUNK) * 9 // 8 + 16 * KiB


@pytest.mark.parametrize(
    "codec",
    [
        Delimited(max_size=MiB),
        Delimited(b"\r\n", max_size=MiB),
        Lines(max_size=MiB),
        Lines(),
        Delimited(),
    ],
    ids=repr,
)
def test_delimiter_never_sent_is_rejected_after_max_size_with_bounded_memory(
    codec: Codec,
) -> None:
    chunk = b"x" * CHUNK  # allocated outside the measurement, as a socket's buffer
    decoder = codec.decoder()
    with traced_peak() as peak:
        offset, fed = feed_until_frame_too_large(decoder, itertools.repeat(chunk, 256))
        assert peak() < delimiter_search_bound(codec.max_size)
    assert offset == 0
    assert fed <= codec.max_size + CHUNK + 1


@pytest.mark.parametrize(
    ("codec", "header", "announced"),
    [
        (Varint(max_size=MiB), b"\xff\xff\xff\xff\x0f", 2**32 - 1),
        (Varint(), b"\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", 2**64 - 1),
        (Netstring(max_size=MiB), b"4294967296:", None),
        (Netstring(), b"4294967296:", None),
    ],
    ids=repr,
)
def test_header_too_large_is_rejected_before_any_payload_is_buffered(
    codec: Codec, header: bytes, announced: int | None
) -> None:
    # A varint header (at most 10 bytes) is read to its end so that the error
    # names the announced size; a netstring's digits may go on for ever, so it
    # is rejected once the digits read so far exceed max_size ("at least").
    payload = bytes(CHUNK)
    decoder = codec.decoder()
    with traced_peak() as peak:
        frames: list[bytes] = []
        with pytest.raises(FrameTooLarge) as caught:
            feed_until_error(decoder, [bytes([byte]) for byte in header], frames, [])
        assert frames == []
        for _ in range(64):  # the peer keeps sending; none of it is kept
            with pytest.raises(FrameTooLarge):
                decoder.feed(payload)
        assert peak() < codec.max_size + CHUNK
    error = caught.value
    assert error.offset == 0
    if announced is not None:
        assert (error.size, error.at_least) == (announced, False)
        assert (decoder.offset, decoder.buffered) == (0, 0)
        assert f"frame of {announced} bytes" in str(error)
    else:
        assert error.at_least
        assert error.size > codec.max_size
        assert f"frame of at least {error.size} bytes" in str(error)
        assert str(error.size) in header.decode()  # the digits seen so far


@pytest.mark.parametrize(
    ("max_size", "size"),
    [(1, 2), (127, 128), (300, 301), (MiB, MiB + 1), (8 * MiB, 8 * MiB + 1), (8 * MiB, 2**64 - 1)],
)
@pytest.mark.parametrize("bytewise", [False, True], ids=["whole", "bytewise"])
def test_varint_frame_too_large_reports_the_announced_size(
    max_size: int, size: int, bytewise: bool
) -> None:
    header = varint(size)
    decoder = Varint(max_size=max_size).decoder()
    decoder.feed(b"\x01a")
    assert decoder.next_frame() == b"a"
    chunks = [header[i : i + 1] for i in range(len(header))] if bytewise else [header]
    frames: list[bytes] = []
    with pytest.raises(FrameTooLarge) as caught:
        feed_until_error(decoder, chunks, frames, [])
    assert frames == []
    error = caught.value
    assert (error.size, error.max_size, error.offset, error.at_least) == (size, max_size, 2, False)
    assert str(error) == f"frame of {size} bytes at stream offset 2 exceeds max_size={max_size}"


def test_varint_a_size_just_within_max_size_is_decoded() -> None:
    assert varint(300) == Varint(max_size=300).encode(bytes(300))[:2]  # the oracle is the encoder's
    decoder = Varint(max_size=300).decoder()
    decoder.feed(varint(300) + bytes(300))
    assert decoder.next_frame() == bytes(300)


# -- encoding errors -----------------------------------------------------------------


@pytest.mark.parametrize(
    "codec",
    [
        LengthPrefixed(1),
        LengthPrefixed(max_size=5),
        Varint(max_size=5),
        Delimited(max_size=5),
        Lines(max_size=5),
        Netstring(max_size=5),
    ],
    ids=repr,
)
def test_encoding_a_message_over_max_size_raises_frame_too_large_without_offset(
    codec: Codec,
) -> None:
    message = b"m" * (codec.max_size + 1)
    with pytest.raises(FrameTooLarge) as caught:
        codec.encode(message)
    assert (caught.value.size, caught.value.max_size, caught.value.offset) == (
        codec.max_size + 1,
        codec.max_size,
        None,
    )
    out = bytearray(b"kept")
    with pytest.raises(FrameTooLarge):
        codec.encode_into(out, message)
    assert out == b"kept"
    codec.encode(message[:-1])  # exactly max_size is fine


@pytest.mark.parametrize(
    ("codec", "message"),
    [
        (Delimited(), b"a\nb"),
        (Delimited(b"\r\n"), b"\r\n"),
        (Delimited(b"--"), b"ends with -"),  # would decode as b"ends with "
        (Delimited(b"abab"), b"xab"),
        (Lines(), b"a\nb"),
        (Lines(), b"a\r"),
        (Lines(), b"a\rb"),
        (Lines(newline=b"\r\n"), b"\n"),
    ],
    ids=repr,
)
def test_encoding_a_message_containing_the_delimiter_raises_invalid_message(
    codec: Codec, message: bytes
) -> None:
    with pytest.raises(InvalidMessage) as caught:
        codec.encode(message)
    assert isinstance(caught.value, ValueError)
    out = bytearray()
    with pytest.raises(InvalidMessage):
        codec.encode_into(out, memoryview(message))
    assert out == b""


# -- construction ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "words"),
    [
        (lambda: LengthPrefixed(3), "width must be 1, 2, 4 or 8"),  # type: ignore[arg-type]
        (lambda: LengthPrefixed(True), "width"),  # type: ignore[arg-type]
        (lambda: LengthPrefixed(byteorder="middle"), "byteorder"),  # type: ignore[arg-type]
        (lambda: LengthPrefixed(max_size=0), "at least 1"),
        (lambda: LengthPrefixed(max_size=-5), "at least 1"),
        (lambda: LengthPrefixed(1, max_size=256), "1-byte length header can express"),
        (lambda: LengthPrefixed(2, max_size=65536), "2-byte length header"),
        (lambda: LengthPrefixed(4, max_size=2**32), "4-byte length header"),
        (lambda: Varint(max_size=0), "at least 1"),
        (lambda: Varint(max_size=2**64), "64-bit varint"),
        (lambda: Delimited(b""), "must not be empty"),
        (lambda: Delimited(max_size=0), "at least 1"),
        (lambda: Lines(newline=b"\r"), "newline"),
        (lambda: Lines(newline=b"\n\r"), "newline"),
        (lambda: Lines(max_size=-1), "at least 1"),
        (lambda: Netstring(max_size=0), "at least 1"),
    ],
)
def test_constructor_rejects_bad_arguments_with_a_clear_value_error(
    make: Callable[[], Codec], words: str
) -> None:
    with pytest.raises(ValueError, match=words):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda: LengthPrefixed(max_size=1.5),  # type: ignore[arg-type]
        lambda: Varint(max_size=True),
        lambda: Delimited("\n"),  # type: ignore[arg-type]
        lambda: LengthPrefixed(4, "little"),  # type: ignore[call-arg]
        lambda: Lines(10),  # type: ignore[call-arg]
    ],
)
def test_constructor_rejects_wrong_types_and_positional_options(
    make: Callable[[], Codec],
) -> None:
    with pytest.raises(TypeError):
        make()


def test_default_limits_are_finite_and_match_the_cited_libraries() -> None:
    assert 8 * MiB == DEFAULT_MAX_FRAME_SIZE
    assert 64 * KiB == DEFAULT_MAX_LINE_SIZE
    assert [LengthPrefixed(w).max_size for w in (1, 2, 4, 8)] == [255, 65535, 8 * MiB, 8 * MiB]
    assert LengthPrefixed(1, max_size=255).max_size == 255
    assert Varint().max_size == Netstring().max_size == 8 * MiB
    assert Delimited().max_size == Lines().max_size == 64 * KiB


def test_codecs_are_immutable_comparable_and_printable() -> None:
    codec = LengthPrefixed(2, byteorder="little", max_size=100)
    with pytest.raises(AttributeError):
        codec.max_size = 5  # type: ignore[misc]
    assert codec == LengthPrefixed(2, byteorder="little", max_size=100)
    assert codec != LengthPrefixed(2, max_size=100)
    assert len({codec, LengthPrefixed(2, byteorder="little", max_size=100)}) == 1
    assert repr(codec) == "LengthPrefixed(width=2, byteorder='little', max_size=100)"
    assert repr(Delimited(b"\r\n", max_size=9)) == "Delimited(delimiter=b'\\r\\n', max_size=9)"
    assert repr(Lines()) == "Lines(max_size=65536, newline=b'\\n')"
    assert repr(Varint(max_size=9)) == "Varint(max_size=9)"
    assert repr(Netstring(max_size=9)) == "Netstring(max_size=9)"


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_codecs_pickle_copy_and_replace_like_plain_values(codec: Codec) -> None:
    assert pickle.loads(pickle.dumps(codec)) == codec
    assert copy.deepcopy(codec) == codec
    smaller = dataclasses.replace(codec, max_size=7)  # type: ignore[type-var]
    assert smaller.max_size == 7
    with pytest.raises(FrameTooLarge):
        smaller.encode(b"12345678")


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_codecs_and_their_decoders_satisfy_the_protocols(codec: Codec) -> None:
    assert isinstance(codec, Codec)
    decoder = codec.decoder()
    assert isinstance(decoder, Decoder)
    assert decoder is not codec.decoder()
    assert "offset=0" in repr(decoder)


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_encode_many_equals_the_concatenated_frames(codec: Codec) -> None:
    candidates = [b"", b"a", b"hello world", b"--x", bytes(range(200))]
    messages = [m for m in candidates if is_valid(codec, m)]
    expected = b"".join(codec.encode(m) for m in messages)
    assert codec.encode_many(messages) == expected
    assert codec.encode_many(iter(messages)) == expected


@pytest.mark.parametrize("codec", CODECS, ids=repr)
def test_encode_many_rejects_a_too_large_message(codec: Codec) -> None:
    with pytest.raises(FrameTooLarge):
        codec.encode_many([b"", b"x" * (codec.max_size + 1)])
