"""trionet.testing.check_codec: passes every built-in codec, catches the decoder bugs of the seams."""

from __future__ import annotations

import struct
from collections.abc import Iterable
from dataclasses import dataclass

import pytest

import trionet
from trionet import FrameTooLarge
from trionet.testing import check_codec

MESSAGES = [b"", b"a", b"hello, world", bytes(range(40)), b"\n;:,"]
TEXT = [b"", b"a", b"hello, world", b"no delimiter in here"]


@pytest.mark.parametrize(
    ("codec", "messages"),
    [
        (trionet.LengthPrefixed(max_size=64), MESSAGES),
        (trionet.LengthPrefixed(1, max_size=64), MESSAGES),
        (trionet.LengthPrefixed(2, byteorder="little", max_size=64), MESSAGES),
        (trionet.Varint(max_size=64), MESSAGES),
        (trionet.Netstring(max_size=64), MESSAGES),
        (trionet.Lines(max_size=64), TEXT),
        (trionet.Delimited(b"\r\n", max_size=64), TEXT),
        (trionet.Delimited(b"\x00", max_size=64), TEXT),
    ],
    ids=repr,
)
def test_every_built_in_codec_passes(codec: trionet.Codec, messages: list[bytes]) -> None:
    check_codec(codec, messages)


# Three decoders with the bugs check_codec is for, on a 2-byte length prefix.


class _Decoder:
    def __init__(self, max_size: int) -> None:
        self.max_size = max_size
        self.buffer = b""
        self.consumed = 0

    def feed(self, data: bytes) -> None:
        self.buffer += bytes(data)

    @property
    def buffered(self) -> int:
        return len(self.buffer)

    @property
    def offset(self) -> int:
        return self.consumed

    @property
    def held(self) -> int:
        return len(self.buffer)

    def take(self, end: int) -> None:
        self.consumed += end
        self.buffer = self.buffer[end:]


class CorrectDecoder(_Decoder):
    def next_frame(self) -> bytes | None:
        if len(self.buffer) < 2:
            return None
        (size,) = struct.unpack_from("!H", self.buffer)
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        if len(self.buffer) < 2 + size:
            return None
        frame = self.buffer[2:2 + size]
        self.take(2 + size)
        return frame


class SplitHeaderDecoder(_Decoder):
    # Reads the length from as much of the header as is there: the first byte
    # of a split header is taken for the whole of it.
    def next_frame(self) -> bytes | None:
        if not self.buffer:
            return None
        header = self.buffer[:2]
        size = int.from_bytes(header, "big")
        if len(self.buffer) < len(header) + size:
            return None
        frame = self.buffer[len(header):len(header) + size]
        self.take(len(header) + size)
        return frame


class LateLimitDecoder(_Decoder):
    # Checks the size only once the whole frame is in: a peer announcing a
    # large frame makes it buffer all of it first.
    def next_frame(self) -> bytes | None:
        if len(self.buffer) < 2:
            return None
        (size,) = struct.unpack_from("!H", self.buffer)
        if len(self.buffer) < 2 + size:
            return None
        if size > self.max_size:
            raise FrameTooLarge(size, self.max_size)
        frame = self.buffer[2:2 + size]
        self.take(2 + size)
        return frame


class DroppingDecoder(_Decoder):
    # Forgets what came after a frame in the same chunk.
    def next_frame(self) -> bytes | None:
        frame = CorrectDecoder.next_frame(self)  # type: ignore[arg-type]
        if frame is not None:
            self.consumed += len(self.buffer)
            self.buffer = b""
        return frame


@dataclass(frozen=True)
class TwoByteLength:
    decoder_type: type[_Decoder] = CorrectDecoder
    max_size: int = 64

    def encode(self, message: bytes) -> bytes:
        if len(message) > 65535:
            raise FrameTooLarge(len(message), self.max_size)
        return struct.pack("!H", len(message)) + bytes(message)

    def encode_into(self, out: bytearray, message: bytes) -> None:
        out += self.encode(message)

    def encode_many(self, messages: Iterable[bytes]) -> bytes:
        return b"".join(map(self.encode, messages))

    def decoder(self) -> _Decoder:
        return self.decoder_type(self.max_size)


def test_a_correct_decoder_of_ones_own_passes() -> None:
    check_codec(TwoByteLength(), MESSAGES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("decoder", "complaint"),
    [
        (SplitHeaderDecoder, "two pieces"),
        (LateLimitDecoder, "buffers the payload before it checks the size"),
        (DroppingDecoder, "missing"),
    ],
)
def test_each_seam_bug_is_caught_and_named(decoder: type[_Decoder], complaint: str) -> None:
    with pytest.raises(AssertionError, match=complaint):
        check_codec(TwoByteLength(decoder), MESSAGES)  # type: ignore[arg-type]


def test_a_decode_only_codec_is_checked_on_the_frames_given() -> None:
    frames = [struct.pack("!H", len(message)) + message for message in MESSAGES]
    codec = TwoByteLength()
    check_codec(codec, MESSAGES, frames=frames)  # type: ignore[arg-type]
    with pytest.raises(AssertionError):
        check_codec(codec, MESSAGES, frames=[frame + b"!" for frame in frames])  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="frames for"):
        check_codec(codec, MESSAGES, frames=frames[:2])  # type: ignore[arg-type]
