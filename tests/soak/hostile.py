"""Hostile input: byte streams built to break framing, thrown at a real server.

Each codec has a hypothesis strategy of hostile streams (:func:`hostile_streams`):
random bytes, headers announcing frames over ``max_size``, truncated frames,
delimiters past the limit, varints that never end, malformed netstrings, each
after zero or more valid frames. :func:`attack` opens a
:func:`~trionet.serve_tcp` server over loopback whose handler records the frames
it receives and how its channel ended, connects one client per stream, sends
the stream and half-closes, and checks:

* each connection ends with the error the codec documents for its bytes:
  :exc:`trio.EndOfChannel`, :exc:`~trionet.IncompleteFrame`,
  :exc:`~trionet.FrameTooLarge` or :exc:`~trionet.ProtocolError`, at the same
  stream offset as the sans-IO decoder finds it, after exactly the frames the
  decoder returns before it;
* a well-behaved client is served after every few hostile ones;
* nothing is logged above WARNING because of a bad peer;
* (when traced) the peak of Python allocations stays within a bound derived
  from ``max_size``, the channel's read size and the connections open at once.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import trio
from hypothesis import strategies as st

from trionet import (
    DEFAULT_READ_SIZE,
    Codec,
    Delimited,
    FrameTooLarge,
    FramingError,
    IncompleteFrame,
    LengthPrefixed,
    Lines,
    MessageChannel,
    Netstring,
    ProtocolError,
    TCPConnection,
    Varint,
    open_tcp_server,
)

from .common import LOOPBACK_V4, capture_logs, count_tasks, open_fd_count, trace_peak_memory

__all__ = [
    "CODECS",
    "AttackReport",
    "Ending",
    "Hostile",
    "attack",
    "expected_outcome",
    "flood_streams",
    "hostile_streams",
    "memory_bound",
]

#: The limit of the codecs under attack: small, so that hypothesis reaches it.
MAX_SIZE: Final = 1024

#: One codec of each kind, as the server under attack is configured.
CODECS: Final[dict[str, Codec]] = {
    "LengthPrefixed": LengthPrefixed(max_size=MAX_SIZE),
    "Varint": Varint(max_size=MAX_SIZE),
    "Delimited": Delimited(b"\r\n", max_size=MAX_SIZE),
    "Lines": Lines(max_size=MAX_SIZE),
    "Netstring": Netstring(max_size=MAX_SIZE),
}

# What a connection's channel can end with, per the MessageChannel documentation.
DOCUMENTED_ENDINGS: Final[tuple[type[BaseException], ...]] = (
    trio.EndOfChannel, IncompleteFrame, FrameTooLarge, ProtocolError
)

# Per traced connection: the decoder's buffer (up to max_size plus one read) may
# be copied once while a read is appended to it, and one read is in flight.
_COPIES_PER_BYTE: Final = 3
# Per connection besides the buffers: tasks, socket objects, a TCPConnection.
_PER_CONNECTION_OVERHEAD: Final = 64 * 1024
# trio's run loop, the server, the log records and tracemalloc's own traces.
_FIXED_OVERHEAD: Final = 4 * 1024 * 1024


@dataclass(frozen=True)
class Hostile:
    """One hostile byte stream.

    Attributes:
      kind: What it attacks ("random", "oversized header", "truncated", ...).
      data: The bytes the client sends before half-closing.
      ending: The exception its construction guarantees, or ``None`` when any
          documented one may come (random bytes).
    """

    kind: str
    data: bytes
    ending: type[BaseException] | None


def memory_bound(max_size: int, connections: int) -> int:
    """The most Python memory a server may hold for ``connections`` hostile peers."""
    per_connection = _COPIES_PER_BYTE * (max_size + DEFAULT_READ_SIZE) + _PER_CONNECTION_OVERHEAD
    return connections * per_connection + _FIXED_OVERHEAD


def expected_outcome(codec: Codec, data: bytes) -> tuple[list[bytes], BaseException]:
    """What the sans-IO decoder makes of ``data`` followed by the end of the stream."""
    decoder = codec.decoder()
    decoder.feed(data)
    frames: list[bytes] = []
    for _ in range(len(data) + 1):  # every frame consumes at least one byte
        try:
            frame = decoder.next_frame()
        except FramingError as exc:
            return frames, exc
        if frame is None:
            break
        frames.append(frame)
    if decoder.buffered:
        return frames, IncompleteFrame(decoder.buffered)
    return frames, trio.EndOfChannel()


@dataclass(frozen=True)
class Ending:
    """How a connection's channel ended: the exception's type, offset and text.

    Kept instead of the exception itself, whose traceback would keep the
    server task's frames (and its last 64 KiB read) alive, and so distort the
    memory measured.
    """

    exc_type: type[BaseException]
    offset: int | None
    text: str

    @classmethod
    def of(cls, exc: BaseException) -> Ending:
        offset = getattr(exc, "offset", None)
        return cls(type(exc), offset if isinstance(offset, int) else None, str(exc))

    def __str__(self) -> str:
        return f"{self.exc_type.__name__}({self.text!r})"


def same_ending(seen: Ending | None, expected: BaseException) -> bool:
    """Whether an ending is the expected error at the same stream offset."""
    return (
        seen is not None
        and seen.exc_type is type(expected)
        and seen.offset == getattr(expected, "offset", None)
    )


# --------------------------------------------------------------- strategies


def _payloads(name: str) -> st.SearchStrategy[bytes]:
    payload = st.binary(max_size=64)
    if name in ("Delimited", "Lines"):
        return payload.map(lambda b: b.replace(b"\r", b"").replace(b"\n", b""))
    return payload


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _specific(name: str, codec: Codec) -> list[st.SearchStrategy[Hostile]]:
    over = st.integers(MAX_SIZE + 1, 2**32 - 1)
    junk = st.binary(max_size=2048)
    if name == "LengthPrefixed":
        return [
            st.builds(
                lambda n, tail: Hostile("oversized header", n.to_bytes(4, "big") + tail, FrameTooLarge),
                over, junk,
            ),
        ]
    if name == "Varint":
        return [
            st.builds(
                lambda n, tail: Hostile("oversized varint", _varint(n) + tail, FrameTooLarge),
                st.integers(MAX_SIZE + 1, 2**64 - 1), junk,
            ),
            # Continuation bits with no value bits: never too large, never ending.
            st.builds(
                lambda k, tail: Hostile("endless varint", b"\x80" * k + tail, ProtocolError),
                st.integers(10, 40), junk,
            ),
            st.builds(
                lambda k: Hostile("varint cut short", b"\x80" * k, IncompleteFrame),
                st.integers(1, 9),
            ),
        ]
    if name == "Netstring":
        return [
            st.builds(
                lambda n, tail: Hostile("oversized netstring", b"%d:" % n + tail, FrameTooLarge),
                over, junk,
            ),
            st.builds(
                lambda digits, bad, tail: Hostile(
                    "netstring non-digit", digits + bytes([bad]) + tail, ProtocolError
                ),
                st.sampled_from([b"", b"1", b"12"]),
                st.integers(0, 255).filter(lambda b: not 0x30 <= b <= 0x3A),
                junk,
            ),
            st.builds(
                lambda n: Hostile("netstring leading zero", b"0%d:" % n + b"x" * n + b",", ProtocolError),
                st.integers(0, 99),
            ),
            st.builds(
                lambda payload, bad: Hostile(
                    "netstring without comma", b"%d:" % len(payload) + payload + bytes([bad]),
                    ProtocolError,
                ),
                st.binary(max_size=64), st.integers(0, 255).filter(lambda b: b != 0x2C),
            ),
        ]
    delimiter = codec.delimiter if isinstance(codec, Delimited) else b"\n"
    return [
        st.builds(
            lambda n, tail: Hostile(
                "delimiter past the limit", b"x" * n + delimiter + tail, FrameTooLarge
            ),
            st.integers(MAX_SIZE + 2, 4 * MAX_SIZE), junk,
        ),
        st.builds(
            lambda n: Hostile("no delimiter at all", b"y" * n, FrameTooLarge),
            st.integers(MAX_SIZE + 2, 4 * MAX_SIZE),
        ),
    ]


def hostile_streams(name: str) -> st.SearchStrategy[Hostile]:
    """Hostile streams for ``CODECS[name]``, each after zero to three valid frames."""
    codec = CODECS[name]
    valid = st.lists(_payloads(name), max_size=3).map(codec.encode_many)
    truncated = st.builds(
        lambda payload, cut: Hostile(
            "truncated frame", codec.encode(payload)[: max(1, cut % len(codec.encode(payload)))],
            IncompleteFrame,
        ),
        st.binary(min_size=1, max_size=MAX_SIZE).map(
            lambda b: b.replace(b"\r", b"").replace(b"\n", b"") or b"z"
        ),
        st.integers(0, 2**16),
    )
    random_bytes = st.builds(lambda data: Hostile("random bytes", data, None), st.binary(max_size=4096))
    piece = st.one_of(random_bytes, truncated, *_specific(name, codec))
    return st.builds(
        lambda prefix, hostile: Hostile(hostile.kind, prefix + hostile.data, hostile.ending),
        valid, piece,
    )


def flood_streams(name: str, count: int, size: int) -> list[Hostile]:
    """Streams of about ``size`` bytes that make a server buffer all its limits allow.

    They alternate between the largest frame the codec accepts, cut one byte
    short (the server must hold ``max_size`` bytes, then sees the end of the
    stream), and ``size`` bytes the codec must reject without buffering them: a
    header announcing too large a frame, or a line that never ends.
    """
    codec = CODECS[name]
    largest = codec.encode(bytes(codec.max_size))[:-1]
    if name == "LengthPrefixed":
        endless = (codec.max_size + 1).to_bytes(4, "big") + bytes(size)
    elif name == "Varint":
        endless = _varint(codec.max_size + 1) + bytes(size)
    elif name == "Netstring":
        endless = b"%d:" % (codec.max_size + 1) + bytes(size)
    else:
        endless = b"x" * size
    return [
        Hostile("largest frame cut short", largest, IncompleteFrame)
        if index % 2
        else Hostile("flood", endless, FrameTooLarge)
        for index in range(count)
    ]


# ------------------------------------------------------------------- attack


@dataclass
class _Seen:
    frames: list[bytes] = field(default_factory=list)
    ending: Ending | None = None


@dataclass
class AttackReport:
    """What an attack did and saw.

    Attributes:
      codec: The codec's name.
      connections: Hostile connections made.
      endings: How many connections ended with each exception type (by name).
      good_clients: Well-behaved clients served.
      peak_memory: Peak of traced allocations above the start, in bytes (0 if
          not traced).
      memory_bound: What :func:`memory_bound` allows for the attack (0 if not
          traced).
      log_levels: How many ``"trionet"`` log records each level got.
      bytes_offered: Hostile bytes the clients tried to send (the server may
          close a connection before it has read them all).
      tasks_before, tasks_after, fds_before, fds_after: Resource counts.
      seconds: Wall-clock duration.
      problems: Contract violations; empty when everything held.
    """

    codec: str
    connections: int = 0
    endings: dict[str, int] = field(default_factory=dict)
    good_clients: int = 0
    log_levels: dict[str, int] = field(default_factory=dict)
    peak_memory: int = 0
    memory_bound: int = 0
    bytes_offered: int = 0
    tasks_before: int = 0
    tasks_after: int = 0
    fds_before: int = 0
    fds_after: int = 0
    seconds: float = 0.0
    problems: list[str] = field(default_factory=list)


# Who connected from each client port, in order: a hostile stream, or None for a
# well-behaved client. A port can be reused only after the client closed the
# connection, so the server's handlers for one port start in the same order.
_Roles = dict[int, list[Hostile | None]]


async def _send_hostile(port: int, hostile: Hostile, roles: _Roles) -> None:
    """Connect, send the stream, half-close and read until the server closes."""
    stream = await trio.open_tcp_stream(LOOPBACK_V4, port)
    roles.setdefault(stream.socket.getsockname()[1], []).append(hostile)

    async def drain() -> None:
        try:
            while await stream.receive_some(65536):
                pass
        except trio.BrokenResourceError:
            pass  # a server closing with our bytes unread resets the connection

    async with stream, trio.open_nursery() as nursery:
        nursery.start_soon(drain)
        try:
            await stream.send_all(hostile.data)
            await stream.send_eof()
        except trio.BrokenResourceError:
            pass  # the server gave up on us before reading everything


async def _good_client(port: int, codec: Codec, roles: _Roles) -> bool:
    with trio.move_on_after(10):
        stream = await trio.open_tcp_stream(LOOPBACK_V4, port)
        roles.setdefault(stream.socket.getsockname()[1], []).append(None)
        async with MessageChannel(stream, codec) as channel:
            await channel.send(b"hello")
            return await channel.receive() == b"5"
    return False


async def attack(
    name: str,
    streams: Sequence[Hostile],
    *,
    concurrency: int = 1,
    good_every: int = 1,
    trace_memory: bool = False,
    time_limit: float = 120.0,
) -> AttackReport:
    """Throw ``streams`` at a server using ``CODECS[name]`` and report.

    Args:
      name: The codec, a key of :data:`CODECS`.
      streams: The hostile streams, one connection each.
      concurrency: Hostile connections open at once. With 1, each hostile
          connection has ended before the next (or a well-behaved one) starts.
      good_every: A well-behaved client is served after every this many hostile
          connections (while the others are still open), and once at the end.
      trace_memory: Measure the peak of Python allocations with tracemalloc
          and check it against :func:`memory_bound`.
      time_limit: Fail (``trio.TooSlowError``) if the attack takes longer.
    """
    codec = CODECS[name]
    report = AttackReport(codec=name, connections=len(streams))
    seen: dict[int, list[_Seen]] = {}
    roles: _Roles = {}

    async def handler(conn: TCPConnection) -> None:
        record = _Seen()
        seen.setdefault(conn.peer.port, []).append(record)
        try:
            async for frame in conn.channel:
                record.frames.append(frame)
                await conn.channel.send(b"%d" % len(frame))
            record.ending = Ending(trio.EndOfChannel, None, "")
        except BaseException as exc:
            record.ending = Ending.of(exc)
            raise

    async def good(port: int) -> None:
        if await _good_client(port, codec, roles):
            report.good_clients += 1
        else:
            report.problems.append("a well-behaved client was not served")

    limiter = trio.CapacityLimiter(concurrency)

    async def one(port: int, hostile: Hostile, token: object) -> None:
        try:
            report.bytes_offered += len(hostile.data)
            await _send_hostile(port, hostile, roles)
        finally:
            limiter.release_on_behalf_of(token)

    report.fds_before = open_fd_count()
    report.tasks_before = count_tasks()
    started = time.perf_counter()
    with capture_logs() as logs, trio.fail_after(time_limit):
        async with open_tcp_server(handler, 0, host=LOOPBACK_V4, codec=codec) as server:
            with contextlib.ExitStack() as tracing:
                memory = tracing.enter_context(trace_peak_memory()) if trace_memory else None
                async with trio.open_nursery() as nursery:
                    for index, hostile in enumerate(streams):
                        token = object()
                        await limiter.acquire_on_behalf_of(token)
                        if concurrency == 1:
                            await one(server.port, hostile, token)
                        else:
                            nursery.start_soon(one, server.port, hostile, token)
                        if (index + 1) % good_every == 0:
                            await good(server.port)
            if memory is not None:
                report.peak_memory = memory.growth
                report.memory_bound = memory_bound(codec.max_size, concurrency + 1)
            await good(server.port)
    report.seconds = time.perf_counter() - started
    report.tasks_after = count_tasks()
    report.fds_after = open_fd_count()
    for _, level, _ in logs.records:
        report.log_levels[level] = report.log_levels.get(level, 0) + 1
    _check(report, codec, roles, seen, logs.above(logging.WARNING))
    return report


def _check(
    report: AttackReport,
    codec: Codec,
    roles: _Roles,
    seen: dict[int, list[_Seen]],
    loud: list[str],
) -> None:
    problems = report.problems
    for port, who in sorted(roles.items()):
        served = seen.get(port, [])
        if len(served) != len(who):
            problems.append(f"port {port}: {len(who)} connections, {len(served)} handlers")
            continue
        for hostile, record in zip(who, served, strict=True):
            if hostile is None:
                continue
            frames, expected = expected_outcome(codec, hostile.data)
            ending = record.ending
            name = "nothing" if ending is None else ending.exc_type.__name__
            report.endings[name] = report.endings.get(name, 0) + 1
            if ending is None or not issubclass(ending.exc_type, DOCUMENTED_ENDINGS):
                problems.append(f"{hostile.kind}: the connection ended with {ending}")
            elif not same_ending(ending, expected):
                problems.append(
                    f"{hostile.kind} {hostile.data[:40]!r}...: the connection ended with "
                    f"{ending}, the decoder expects {expected!r}"
                )
            promised = hostile.ending
            if promised is not None and (ending is None or not issubclass(ending.exc_type, promised)):
                problems.append(
                    f"{hostile.kind} {hostile.data[:40]!r}...: expected {promised.__name__}, "
                    f"got {ending}"
                )
            if record.frames != frames:
                problems.append(
                    f"{hostile.kind}: the handler received {len(record.frames)} frames, "
                    f"the decoder finds {len(frames)}"
                )
    if report.memory_bound and report.peak_memory > report.memory_bound:
        problems.append(
            f"peak memory {report.peak_memory} bytes exceeds the bound {report.memory_bound}"
        )
    problems.extend(f"logged for a bad peer: {line}" for line in loud)
    if report.tasks_after != report.tasks_before:
        problems.append(f"tasks: {report.tasks_before} before, {report.tasks_after} after")
    if report.fds_after != report.fds_before:
        problems.append(f"file descriptors: {report.fds_before} before, {report.fds_after} after")
