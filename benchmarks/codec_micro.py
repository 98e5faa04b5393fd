"""Micro-benchmark of the sans-IO codecs' decoders (no I/O).

Decodes 100,000 frames of 16 bytes, fed in 64 KiB chunks as MessageChannel
feeds them, and compares each codec with a hand-written parsing loop for the
same wire format (a bytearray buffer, int.from_bytes on the header).

Run: python -m benchmarks.codec_micro [--frames N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import functools
import os
import timeit
from collections.abc import Callable

from trionet._sansio.codecs import (
    Codec,
    Delimited,
    LengthPrefixed,
    Lines,
    Netstring,
    Varint,
)

CHUNK = 64 * 1024


def raw_length_prefixed(chunks: list[bytes]) -> list[bytes]:
    """The baseline: what one would write by hand for 4-byte big-endian headers."""
    buf = bytearray()
    frames = []
    for chunk in chunks:
        buf += chunk
        pos = 0
        end = len(buf)
        while end - pos >= 4:
            size = int.from_bytes(buf[pos : pos + 4], "big")
            if end - pos - 4 < size:
                break
            frames.append(bytes(buf[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        del buf[:pos]
    return frames


def raw_delimited(chunks: list[bytes]) -> list[bytes]:
    buf = bytearray()
    frames = []
    for chunk in chunks:
        buf += chunk
        pos = 0
        while (found := buf.find(b"\n", pos)) >= 0:
            frames.append(bytes(buf[pos:found]))
            pos = found + 1
        del buf[:pos]
    return frames


def raw_lines(chunks: list[bytes]) -> list[bytes]:
    buf = bytearray()
    frames = []
    for chunk in chunks:
        buf += chunk
        pos = 0
        while (found := buf.find(b"\n", pos)) >= 0:
            end = found - 1 if found > pos and buf[found - 1] == 0x0D else found
            frames.append(bytes(buf[pos:end]))
            pos = found + 1
        del buf[:pos]
    return frames


def decode_all(codec: Codec, chunks: list[bytes]) -> list[bytes]:
    decoder = codec.decoder()
    frames = []
    for chunk in chunks:
        decoder.feed(chunk)
        while (frame := decoder.next_frame()) is not None:
            frames.append(frame)
    return frames


def rate(function: Callable[[], list[bytes]], count: int) -> float:
    return count / min(timeit.repeat(function, number=1, repeat=7))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=100_000)
    parser.add_argument("--size", type=int, default=16)
    args = parser.parse_args()
    # Printable payloads without b"\n", b"\r" or b"," so that every codec can frame them.
    messages = [os.urandom(args.size).hex()[: args.size].encode() for _ in range(args.frames)]
    codecs: list[tuple[str, Codec]] = [
        ("LengthPrefixed()", LengthPrefixed()),
        ("LengthPrefixed(1)", LengthPrefixed(1)),
        ("LengthPrefixed(8, little)", LengthPrefixed(8, byteorder="little")),
        ("Varint()", Varint()),
        ("Delimited(b'\\n')", Delimited()),
        ("Delimited(b'\\r\\n')", Delimited(b"\r\n")),
        ("Lines()", Lines()),
        ("Netstring()", Netstring()),
    ]
    baselines = {
        "LengthPrefixed()": raw_length_prefixed,
        "Delimited(b'\\n')": raw_delimited,
        "Lines()": raw_lines,
    }
    print(f"{args.frames} frames of {args.size} bytes, fed in {CHUNK // 1024} KiB chunks")
    for name, codec in codecs:
        out = bytearray()
        for message in messages:
            codec.encode_into(out, message)
        stream = bytes(out)
        chunks = [stream[i : i + CHUNK] for i in range(0, len(stream), CHUNK)]
        assert decode_all(codec, chunks) == messages
        ours = rate(functools.partial(decode_all, codec, chunks), args.frames)
        line = f"{name:28} {ours / 1e6:6.2f} M frames/s"
        baseline = baselines.get(name)
        if baseline is not None:
            assert baseline(chunks) == messages
            theirs = rate(functools.partial(baseline, chunks), args.frames)
            line += f"   hand-written loop {theirs / 1e6:6.2f} M frames/s ({ours / theirs:.2f}x)"
        print(line)
    encoder = LengthPrefixed()

    def encode_batch() -> list[bytes]:
        out = bytearray()
        for message in messages:
            encoder.encode_into(out, message)
        return [bytes(out)]

    encoding = rate(encode_batch, args.frames)
    print(f"{'LengthPrefixed().encode_into':28} {encoding / 1e6:6.2f} M frames/s")


if __name__ == "__main__":
    main()
