"""A conformance check for codecs and their decoders: check_codec.

A decoder is fed by a stream, and a stream splits bytes wherever it likes: a
header in two reads, a frame's last byte with the next frame's first. Most
decoder bugs live at those seams, and in what a decoder holds before it checks
a size. :func:`check_codec` feeds a codec's frames in every way a stream could
deliver them and says what went wrong.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable, Sequence
from typing import Any

from .._sansio.codecs import Codec, Decoder
from .._sansio.errors import FrameTooLarge, FramingError, InvalidMessage
from .._sansio.framing import FrameT

__all__ = ["check_codec"]

# Bytes of framing (headers, delimiters, trailers) a decoder may hold beyond
# max_size before it must have refused an oversized frame.
_FRAMING_ALLOWANCE = 64
_RANDOM_ROUNDS = 20


def check_codec(
    codec: Codec[FrameT],
    messages: Iterable[FrameT],
    *,
    frames: Iterable[bytes] | None = None,
    oversized: bytes | None = None,
    seed: int = 0,
) -> None:
    """Check that ``codec``'s decoder gets ``messages`` back however the stream splits them.

    The frames of ``messages`` (``codec.encode`` of each, or ``frames`` for a
    codec that only decodes) are joined into one stream, which is fed to fresh
    decoders: whole; split in two at every byte boundary; a byte at a time; and
    in random chunks (``seed``). Each time, every message must come out, in
    order and intact, and nothing may be left over (``buffered`` 0, ``offset``
    the stream's length): a decoder that drops bytes after a frame, or splits a
    header wrongly, fails. Keep the messages small: the splits cost the square
    of the stream's length.

    Then, the size limit: the start of a frame larger than ``codec.max_size``
    is fed a byte at a time, and :exc:`~trionet.FrameTooLarge` must come before
    the decoder holds more than ``max_size`` plus a few bytes of framing, that
    is, from the header, or as soon as a delimiter search passes the limit;
    never after buffering the payload. The oversized frame is ``oversized`` if
    given, else it is encoded by a copy of ``codec`` with a larger
    ``max_size`` (for a dataclass codec with such a field, as the built-in ones
    are); give a codec with a small ``max_size`` so that this stays quick.

    Raises:
      AssertionError: A check failed; the message says which, and how the
          stream was split.
      TypeError: ``frames`` and ``messages`` differ in length.
    """
    expected: list[Any] = list(messages)
    wire = [codec.encode(message) for message in expected] if frames is None else [
        bytes(frame) for frame in frames
    ]
    if len(wire) != len(expected):
        raise TypeError(f"{len(wire)} frames for {len(expected)} messages")
    stream = b"".join(wire)
    _check_splits(codec, stream, expected)
    rng = random.Random(seed)
    for round_number in range(_RANDOM_ROUNDS if len(stream) > 1 else 0):
        cuts = sorted(rng.sample(range(1, len(stream)), min(len(stream) - 1, rng.randint(1, 8))))
        _check_chunks(codec, stream, expected, cuts, f"random chunks (seed {seed}, round {round_number})")
    if oversized is None:
        oversized = _oversized_frame(codec)
    if oversized is not None:
        _check_limit(codec, oversized)


def _drain(decoder: Decoder[Any], into: list[Any]) -> None:
    while (frame := decoder.next_frame()) is not None:
        into.append(frame)


def _check_chunks(
    codec: Codec[Any], stream: bytes, expected: list[Any], cuts: Sequence[int], how: str
) -> None:
    decoder = codec.decoder()
    received: list[Any] = []
    start = 0
    for cut in [*cuts, len(stream)]:
        try:
            decoder.feed(stream[start:cut])
            _drain(decoder, received)
        except FramingError as exc:
            raise AssertionError(
                f"{type(codec).__name__}: fed in {how} (cuts at {list(cuts)[:12]}), the decoder "
                f"raised {exc!r} after {len(received)} of {len(expected)} messages"
            ) from exc
        start = cut
    if received != expected:
        missing = len(expected) - len(received)
        first_wrong = next((i for i, (a, b) in enumerate(zip(received, expected, strict=False)) if a != b),
                           min(len(received), len(expected)))
        raise AssertionError(
            f"{type(codec).__name__}: fed in {how} (cuts at {list(cuts)[:12]}), the decoder "
            f"returned {len(received)} messages for {len(expected)} ({missing:+d} missing); "
            f"message {first_wrong} is {received[first_wrong:first_wrong + 1]!r}, expected "
            f"{expected[first_wrong:first_wrong + 1]!r}"
        )
    if decoder.buffered or decoder.offset != len(stream):
        raise AssertionError(
            f"{type(codec).__name__}: fed in {how}, the decoder holds {decoder.buffered} bytes "
            f"and reports offset {decoder.offset} after the last frame of a {len(stream)}-byte stream"
        )


def _check_splits(codec: Codec[Any], stream: bytes, expected: list[Any]) -> None:
    _check_chunks(codec, stream, expected, [], "one piece")
    for cut in range(1, len(stream)):
        _check_chunks(codec, stream, expected, [cut], "two pieces")
    _check_chunks(codec, stream, expected, range(1, len(stream)), "single bytes")


def _oversized_frame(codec: Codec[Any]) -> bytes | None:
    # A frame twice as large as the codec allows, encoded by a relaxed copy: a
    # decoder that buffers a payload before it checks the size holds all of it.
    size = 2 * codec.max_size + 2 * _FRAMING_ALLOWANCE
    try:
        relaxed = dataclasses.replace(codec, max_size=size)  # type: ignore[type-var]
    except (TypeError, ValueError):  # not a dataclass with max_size, or a header too narrow
        return None
    try:
        return relaxed.encode(b"x" * size)
    except (FrameTooLarge, InvalidMessage, TypeError):  # or a codec whose messages are not bytes
        return None


def _check_limit(codec: Codec[Any], oversized: bytes) -> None:
    decoder = codec.decoder()
    bound = codec.max_size + _FRAMING_ALLOWANCE
    for fed in range(1, len(oversized) + 1):
        try:
            decoder.feed(oversized[fed - 1:fed])
            if decoder.next_frame() is not None:
                raise AssertionError(
                    f"{type(codec).__name__}: a frame larger than max_size={codec.max_size} was "
                    "returned instead of raising FrameTooLarge"
                )
        except FrameTooLarge:
            return
        if fed > bound:
            raise AssertionError(
                f"{type(codec).__name__}: {fed} bytes of a frame larger than "
                f"max_size={codec.max_size} were fed and no FrameTooLarge yet: the decoder "
                "buffers the payload before it checks the size (check it on the header)"
            )
    raise AssertionError(
        f"{type(codec).__name__}: a frame larger than max_size={codec.max_size} was fed "
        "whole and no FrameTooLarge was raised"
    )
