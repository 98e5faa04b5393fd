"""MessageChannel: framing over trio streams, and what cancellation leaves behind."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from trionet import (
    DEFAULT_ABORT_TIMEOUT,
    FrameTimeout,
    FrameTooLarge,
    IncompleteFrame,
    LengthPrefixed,
    Lines,
    MessageChannel,
    Netstring,
    ProtocolError,
)
from trionet.testing import VirtualNetwork

from .conftest import tcp_stream_pair


def frame(payload: bytes) -> bytes:
    return LengthPrefixed().encode(payload)


class CountingStream(trio.abc.Stream):
    """A stream wrapper that counts calls, to observe how the channel uses it."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.receive_calls = 0
        self.send_calls = 0

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        self.send_calls += 1
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        self.receive_calls += 1
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


# ----------------------------------------------------------------------------- receive


async def test_many_frames_are_parsed_from_one_read() -> None:
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(right)
    channel = MessageChannel(counting)
    await left.send_all(b"".join(frame(b"m%d" % i) for i in range(1000)))
    received = [await channel.receive() for _ in range(1000)]
    assert received == [b"m%d" % i for i in range(1000)]
    assert counting.receive_calls == 1


async def test_cancelled_receive_keeps_partial_frame(autojump_clock: trio.testing.MockClock) -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    whole = frame(b"a frame that arrives in two halves")
    await left.send_all(whole[:10])
    with trio.move_on_after(1) as scope:
        await channel.receive()
    assert scope.cancelled_caught
    assert channel.statistics().buffered_bytes == 10
    await left.send_all(whole[10:])
    assert await channel.receive() == b"a frame that arrives in two halves"
    assert channel.statistics().buffered_bytes == 0


async def test_cancelled_receive_with_frame_buffered_keeps_the_frame() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    await left.send_all(frame(b"one") + frame(b"two"))
    assert await channel.receive() == b"one"
    with trio.CancelScope() as scope:
        scope.cancel()
        await channel.receive()
    assert scope.cancelled_caught
    assert await channel.receive() == b"two"


async def test_end_of_stream_at_boundary_is_end_of_channel_and_repeats() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    await left.send_all(frame(b"last"))
    await left.aclose()
    assert await channel.receive() == b"last"
    for _ in range(2):
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()


async def test_end_of_stream_mid_frame_is_incomplete_frame_after_earlier_frames() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    await left.send_all(frame(b"whole") + frame(b"cut short")[:7])
    await left.aclose()
    assert await channel.receive() == b"whole"
    for _ in range(2):
        with pytest.raises(IncompleteFrame) as info:
            await channel.receive()
        assert info.value.buffered == 7
        assert isinstance(info.value, trio.BrokenResourceError)


async def test_oversized_header_raises_frame_too_large_after_earlier_frames() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, LengthPrefixed(max_size=1024))
    await left.send_all(frame(b"fine") + (2**32 - 1).to_bytes(4, "big") + b"x" * 100)
    assert await channel.receive() == b"fine"
    for _ in range(2):
        with pytest.raises(FrameTooLarge) as info:
            await channel.receive()
        assert info.value.size == 2**32 - 1
        assert info.value.offset == 8


async def test_protocol_error_surfaces_from_receive() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, Netstring())
    await left.send_all(Netstring().encode(b"ok") + b"1x")
    assert await channel.receive() == b"ok"
    with pytest.raises(ProtocolError) as info:
        await channel.receive()
    assert info.value.offset == 6


async def test_two_concurrent_receives_raise_busy() -> None:
    _, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            await channel.receive()
        nursery.cancel_scope.cancel()


async def test_async_iteration_ends_at_end_of_channel() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, Lines())
    await left.send_all(b"alpha\r\nbeta\ngamma\n")
    await left.aclose()
    assert [message async for message in channel] == [b"alpha", b"beta", b"gamma"]


async def test_receive_nowait_returns_buffered_frames_then_would_block() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()
    await left.send_all(frame(b"one") + frame(b"two") + frame(b"thr")[:3])
    assert await channel.receive() == b"one"
    assert channel.receive_nowait() == b"two"
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()
    await left.aclose()
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()  # the end of the stream has not been read yet
    with pytest.raises(IncompleteFrame):
        await channel.receive()
    with pytest.raises(IncompleteFrame):
        channel.receive_nowait()


async def test_receive_many_returns_a_burst_for_one_checkpoint() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    await left.send_all(b"".join(frame(b"%d" % i) for i in range(10)))
    assert await channel.receive_many(max_count=3) == [b"0", b"1", b"2"]
    assert await channel.receive_many() == [b"%d" % i for i in range(3, 10)]
    assert channel.statistics().messages_received == 10
    with pytest.raises(ValueError, match="max_count"):
        await channel.receive_many(max_count=0)


async def test_receive_many_delivers_frames_before_an_error_then_raises_it() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, LengthPrefixed(max_size=100))
    await left.send_all(frame(b"a") + frame(b"b") + frame(b"c" * 101))
    assert await channel.receive_many() == [b"a", b"b"]
    with pytest.raises(FrameTooLarge):
        await channel.receive_many()


async def test_receive_many_is_a_checkpoint_even_with_frames_buffered() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    await left.send_all(frame(b"kept"))
    with trio.CancelScope() as scope:
        scope.cancel()
        await channel.receive_many()
    assert scope.cancelled_caught
    assert await channel.receive_many() == [b"kept"]


async def test_closed_channel_does_not_return_buffered_frames() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right)
    await left.send_all(frame(b"one") + frame(b"two"))
    assert await channel.receive() == b"one"
    await channel.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await channel.receive()
    with pytest.raises(trio.ClosedResourceError):
        channel.receive_nowait()


# -------------------------------------------------------------------------------- send


async def test_send_cancelled_before_first_byte_writes_nothing_generic_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A lockstep stream accepts bytes only while the peer is receiving.
    left, right = trio.testing.lockstep_stream_pair()
    sender = MessageChannel(left)
    with trio.move_on_after(5) as scope:
        await sender.send(b"never sent")
    assert scope.cancelled_caught
    assert trio.current_time() == 5
    receiver = MessageChannel(right)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sender.send, b"sent")
        assert await receiver.receive() == b"sent"


async def test_send_cancelled_before_first_byte_writes_nothing_socket() -> None:
    # A kernel socketpair, so the real clock (a mock one may jump while the
    # kernel works): nothing drains the buffers, so the send blocks until cancelled.
    a, b = trio.socket.socketpair()
    with a, b, trio.fail_after(10):
        # Fill the kernel's buffers so that the next write would block.
        filler = 0
        while True:
            try:
                filler += a._sock.send(b"\0" * 65536)  # type: ignore[attr-defined]
            except BlockingIOError:
                break
        sender = MessageChannel(trio.SocketStream(a))
        with trio.move_on_after(0.05) as scope:
            await sender.send(b"never sent")
        assert scope.cancelled_caught
        remaining = filler
        while remaining:
            remaining -= len(await b.recv(min(remaining, 65536)))
        receiver = MessageChannel(trio.SocketStream(b))
        await sender.send(b"sent")
        assert await receiver.receive() == b"sent"


async def test_send_cancelled_mid_frame_finishes_frame_and_returns_socket() -> None:
    a, b = trio.socket.socketpair()
    with a, b:
        sender = MessageChannel(trio.SocketStream(a))
        receiver = MessageChannel(trio.SocketStream(b))
        payload = bytes(range(256)) * 16384  # 4 MiB: more than the kernel buffers hold
        cancelled = trio.Event()
        received: list[bytes] = []
        returned = False

        async def receive_after_the_cancel() -> None:
            await cancelled.wait()
            received.append(await receiver.receive())
            received.append(await receiver.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive_after_the_cancel)
            with trio.CancelScope() as scope:

                async def cancel_when_blocked() -> None:
                    await trio.testing.wait_all_tasks_blocked()
                    # The sender is now blocked with part of the frame written.
                    scope.cancel()
                    cancelled.set()

                async with trio.open_nursery() as inner:
                    inner.start_soon(cancel_when_blocked)
                    await sender.send(payload)
                    returned = True
                    await trio.lowlevel.checkpoint()
                    raise AssertionError("the cancellation was not delivered at the next checkpoint")
            # The frame was not whole when the cancel came; send() finished it.
            assert returned
            assert scope.cancelled_caught
            await sender.send(b"next")
        assert received == [payload, b"next"]
        assert not sender.statistics().aborted


@pytest.mark.net(default_host="client")
async def test_send_cancelled_mid_frame_aborts_after_abort_timeout_socket(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    client, server = await tcp_stream_pair()  # over the virtual network's loopback
    async with client, server:
        sender = MessageChannel(client, abort_timeout=3)
        payload = b"x" * (8 << 20)
        with trio.move_on_after(1):
            with pytest.raises(trio.BrokenResourceError, match=r"abort_timeout=3\.0s"):
                await sender.send(payload)
        # Cancelled at 1 s, then 3 s of grace for the peer that never reads.
        assert trio.current_time() == pytest.approx(4)
        assert sender.statistics().aborted
        with pytest.raises(trio.BrokenResourceError):
            await sender.send(b"after the abort")
        # The peer sees part of the frame, then an error: never a second frame.
        receiver = MessageChannel(server, LengthPrefixed(max_size=16 << 20))
        with pytest.raises(trio.BrokenResourceError):
            await receiver.receive()


async def test_send_cancelled_mid_frame_finishes_frame_generic_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = MessageChannel(left)
    payload = b"y" * 200_000
    received = bytearray()
    returned = False
    async with trio.open_nursery() as nursery:
        with trio.CancelScope() as scope:

            async def read_some_then_cancel_then_read_the_rest() -> None:
                received.extend(await right.receive_some(1000))
                scope.cancel()
                while len(received) < len(frame(payload)):
                    received.extend(await right.receive_some())

            nursery.start_soon(read_some_then_cancel_then_read_the_rest)
            await sender.send(payload)
            returned = True
            await trio.lowlevel.checkpoint()
            raise AssertionError("the cancellation was not delivered")
    assert returned
    assert scope.cancelled_caught
    assert bytes(received) == frame(payload)
    assert not sender.statistics().aborted


async def test_send_cancelled_mid_frame_aborts_generic_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = MessageChannel(left, abort_timeout=2)
    received = bytearray()

    async def peer_reads_one_piece() -> None:
        received.extend(await right.receive_some(1000))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer_reads_one_piece)
        with trio.move_on_after(1):
            with pytest.raises(trio.BrokenResourceError, match=r"abort_timeout=2\.0s"):
                await sender.send(b"z" * 200_000)
    assert trio.current_time() == pytest.approx(3)
    assert sender.statistics().aborted
    # The stream was closed: the peer sees at most this frame, then the end.
    while data := await right.receive_some():
        received.extend(data)
    assert frame(b"z" * 200_000).startswith(received)
    with pytest.raises(trio.BrokenResourceError):
        await sender.send(b"after the abort")


async def test_send_deadline_on_generic_stream_counts_abort_timeout_from_the_deadline(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.lockstep_stream_pair()
    sender = MessageChannel(left, abort_timeout=2)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(right.receive_some, 10)
        with trio.move_on_after(5), pytest.raises(trio.BrokenResourceError):
            await sender.send(b"z" * 200_000)
    assert trio.current_time() == pytest.approx(7)


async def test_twenty_concurrent_senders_never_interleave(
    tcp_pair: tuple[trio.SocketStream, trio.SocketStream],
) -> None:
    a, b = tcp_pair
    sender, receiver = MessageChannel(a), MessageChannel(b)
    per_task = 50

    async def send_from(task: int) -> None:
        for i in range(per_task):
            await sender.send(bytes([task]) * (1 + (task * 7919 + i * 104729) % 70_000))

    counts = [0] * 20
    async with trio.open_nursery() as nursery:
        for task in range(20):
            nursery.start_soon(send_from, task)
        for _ in range(20 * per_task):
            message = await receiver.receive()
            task = message[0]
            assert message == bytes([task]) * (1 + (task * 7919 + counts[task] * 104729) % 70_000)
            counts[task] += 1
    assert counts == [per_task] * 20


async def test_send_many_writes_once() -> None:
    left, right = trio.testing.memory_stream_pair()
    counting = CountingStream(left)
    sender = MessageChannel(counting)
    await sender.send_many([b"a", b"bb", b"ccc"] * 100)
    assert counting.send_calls == 1
    assert sender.statistics().messages_sent == 300
    receiver = MessageChannel(right)
    assert [await receiver.receive() for _ in range(300)] == [b"a", b"bb", b"ccc"] * 100


async def test_unencodable_message_raises_before_anything_is_written() -> None:
    left, right = trio.testing.memory_stream_pair()
    sender = MessageChannel(left, LengthPrefixed(max_size=10))
    with pytest.raises(FrameTooLarge):
        await sender.send_many([b"fine", b"much too large"])
    await sender.send(b"ok")
    assert await MessageChannel(right).receive() == b"ok"


async def test_send_eof_ends_the_peers_channel(tcp_pair: tuple[trio.SocketStream, trio.SocketStream]) -> None:
    a, b = tcp_pair
    sender, receiver = MessageChannel(a), MessageChannel(b)
    await sender.send(b"bye")
    await sender.send_eof()
    await sender.send_eof()
    with pytest.raises(trio.ClosedResourceError):
        await sender.send(b"too late")
    assert await receiver.receive() == b"bye"
    with pytest.raises(trio.EndOfChannel):
        await receiver.receive()
    # The other direction still works after a half-close.
    await receiver.send(b"still open")
    assert await sender.receive() == b"still open"


async def test_send_eof_on_a_stream_without_half_close_is_a_type_error() -> None:
    left, _ = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match="cannot half-close"):
        await MessageChannel(CountingStream(left)).send_eof()


def test_constructor_rejects_bad_arguments() -> None:
    left, _ = trio.testing.memory_stream_pair()
    with pytest.raises(TypeError, match=r"trio\.abc\.Stream"):
        MessageChannel(object())  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="read_size"):
        MessageChannel(left, read_size=0)
    with pytest.raises(ValueError, match="abort_timeout"):
        MessageChannel(left, abort_timeout=0)
    assert DEFAULT_ABORT_TIMEOUT > 0


# ------------------------------------------------------------------------ frame_timeout


async def test_frame_timeout_sheds_a_peer_that_trickles_a_frame(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, frame_timeout=5)
    whole = frame(b"x" * 100)

    async def trickle() -> None:
        for i in range(len(whole)):  # one byte a second: never idle, never done
            await left.send_all(whole[i : i + 1])
            await trio.sleep(1)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        with pytest.raises(FrameTimeout) as info:
            await channel.receive()
        assert trio.current_time() == pytest.approx(5)
        assert info.value.buffered == 5
        assert isinstance(info.value, trio.BrokenResourceError)
        with pytest.raises(FrameTimeout):
            await channel.receive()
        nursery.cancel_scope.cancel()


async def test_frame_timeout_does_not_limit_the_wait_between_frames(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, frame_timeout=5)

    async def send_slowly_between_frames() -> None:
        await left.send_all(frame(b"first") + frame(b"second")[:3])
        await trio.sleep(4)
        await left.send_all(frame(b"second")[3:])
        await trio.sleep(100)  # idle between frames: allowed
        await left.send_all(frame(b"third")[:2])
        await trio.sleep(4.5)
        await left.send_all(frame(b"third")[2:])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(send_slowly_between_frames)
        assert await channel.receive() == b"first"
        assert await channel.receive() == b"second"
        assert await channel.receive() == b"third"
    assert trio.current_time() == pytest.approx(108.5)


async def test_frame_timeout_delivers_complete_frames_before_failing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, frame_timeout=1)
    await left.send_all(frame(b"complete") + frame(b"never finished")[:6])
    assert await channel.receive() == b"complete"
    with pytest.raises(FrameTimeout):
        await channel.receive()
    with pytest.raises(ValueError, match="frame_timeout"):
        MessageChannel(right, frame_timeout=0)


# ---- the activity hook -----------------------------------------------------------


class Tracker:
    """An ActivityTracker of the test's own: any object with the two attributes."""

    def __init__(self) -> None:
        self.last_activity = -1.0
        self.sending = 0
        self.sending_seen: list[int] = []


async def _exercise_tracker(channel: MessageChannel, peer: MessageChannel, tracker: Tracker) -> None:
    await trio.sleep(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.send, b"ping")  # a lockstep stream waits for the reader
        assert await channel.receive() == b"ping"
        assert tracker.last_activity == trio.current_time()  # a message's bytes arrived
    await trio.sleep(1)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.send, b"x" * 8_000_000)  # more than the buffers (4 MiB + 128 KiB)
        await trio.testing.wait_all_tasks_blocked()
        assert tracker.sending == 1  # a send in progress, stuck on the peer
        stuck_since = tracker.last_activity
        assert stuck_since == trio.current_time()
        await trio.sleep(5)
        assert tracker.last_activity == stuck_since  # blocked is not progress
        assert len(await peer.receive()) == 8_000_000
    assert tracker.sending == 0
    assert tracker.last_activity == trio.current_time()  # the send finished now


async def test_a_channel_reports_progress_to_its_activity_tracker_over_any_stream(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.lockstep_stream_pair()  # a send waits for the reader
    tracker = Tracker()
    async with MessageChannel(left, activity=tracker) as channel, MessageChannel(right) as peer:
        await _exercise_tracker(channel, peer, tracker)


@pytest.mark.net(default_host="client")
async def test_a_channel_reports_progress_to_its_activity_tracker_over_a_socket(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock,
) -> None:
    with net.host("server"):
        listener = trio.socket.socket()
        await listener.bind(("10.0.0.1", 7))
        listener.listen()
    with listener:
        client = trio.socket.socket()
        await client.connect(("10.0.0.1", 7))
        server, _ = await listener.accept()
    tracker = Tracker()
    channel = MessageChannel(trio.SocketStream(server), activity=tracker)
    async with channel, MessageChannel(trio.SocketStream(client)) as peer:
        await _exercise_tracker(channel, peer, tracker)


# ---- detach(): a protocol switch ---------------------------------------------------

PROXY_LINE = b"PROXY TCP4 203.0.113.7 192.0.2.1 4242 80\r\n"
REQUEST = b"GET / HTTP/1.1\r\nHost: example.test\r\n\r\n"


async def test_detach_after_a_proxy_line_returns_exactly_the_requests_bytes() -> None:
    client, server = await tcp_stream_pair()
    async with client:
        await client.send_all(PROXY_LINE + REQUEST)  # one write: both arrive in one read
        channel = MessageChannel(server, Lines())
        assert await channel.receive() == PROXY_LINE.rstrip(b"\r\n")
        stream, early = channel.detach()
        assert stream is server
        assert early == REQUEST
        # The stream is the caller's now: closing the channel leaves it open.
        await channel.aclose()
        await client.send_all(b"more")
        assert await stream.receive_some() == b"more"
        await stream.aclose()


async def test_detach_over_any_stream_and_on_every_codec() -> None:
    for codec, first, rest in (
        (Lines(), b"a\n", b"b\nc"),
        (LengthPrefixed(), b"\x00\x00\x00\x01a", b"\x00\x00\x00\x05bc"),
    ):
        left, right = trio.testing.memory_stream_pair()
        await left.send_all(first + rest)
        channel = MessageChannel(right, codec)
        assert await channel.receive() == b"a"
        assert channel.detach() == (right, rest)  # a partial frame too, header included


async def test_detach_refuses_while_busy_once_closed_and_without_take_buffered() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, Lines())
    async with trio.open_nursery() as nursery:
        nursery.start_soon(channel.receive)
        await trio.testing.wait_all_tasks_blocked()
        with pytest.raises(trio.BusyResourceError):
            channel.detach()
        nursery.cancel_scope.cancel()
    channel.detach()
    with pytest.raises(trio.ClosedResourceError):
        channel.detach()
    with pytest.raises(trio.ClosedResourceError):
        await channel.receive()

    class Bare:  # a decoder of one's own, without take_buffered()
        buffered = offset = held = 0

        def feed(self, data: object) -> None: ...

        def next_frame(self) -> bytes | None:
            return None

    class BareCodec:
        def encode(self, message: bytes) -> bytes:
            return message

        def decoder(self) -> Bare:
            return Bare()

    with pytest.raises(TypeError, match="take_buffered"):
        MessageChannel(left, BareCodec()).detach()  # type: ignore[arg-type]
