"""MessageChannel's socket fast path: one schedule point per call, same guarantees.

Real loopback TCP with trio's real clock (never an autojump clock over real
sockets); waits are on events and ``wait_all_tasks_blocked``, never on sleeps.
Which path a channel took is read from its private attributes (``_raw``,
``_socket``); the helper that finds the stdlib socket, and the fast path under
the idle-tracking wrapper, are tested in ``test_adapter_internals.py``.
"""

from __future__ import annotations

import gc
import random
import socket
import zlib
from typing import Any

import pytest
import trio
import trio.testing

from trionet import LengthPrefixed, MessageChannel
from trionet.testing import VirtualNetwork

from .conftest import open_fd_count, tcp_stream_pair
from .test_vnet_tcp import socket_pair

BIG = LengthPrefixed(max_size=64 << 20)


def frame(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


class StepCounter(trio.abc.Instrument):
    """Counts how often one task is scheduled: its schedule points."""

    def __init__(self, task: trio.lowlevel.Task) -> None:
        self.task = task
        self.steps = 0

    def task_scheduled(self, task: trio.lowlevel.Task) -> None:
        if task is self.task:
            self.steps += 1


class counting_schedule_points:
    def __enter__(self) -> StepCounter:
        self.counter = StepCounter(trio.lowlevel.current_task())
        trio.lowlevel.add_instrument(self.counter)
        return self.counter

    def __exit__(self, *exc: object) -> None:
        trio.lowlevel.remove_instrument(self.counter)


async def wait_for_frames_readable(stream: trio.SocketStream, nbytes: int) -> None:
    """Wait until the kernel holds ``nbytes`` for ``stream``, without reading them."""
    raw = stream.socket._sock  # type: ignore[attr-defined]
    for _ in range(1000):
        try:
            if len(raw.recv(nbytes, socket.MSG_PEEK)) >= nbytes:
                return
        except BlockingIOError:
            pass
        await trio.lowlevel.wait_readable(raw)
    raise AssertionError(f"{nbytes} bytes never arrived")


# ------------------------------------------------------------------ the private reach


async def test_trio_still_keeps_the_stdlib_socket_where_trionet_looks() -> None:
    # If this fails, a trio release moved the stdlib socket out of
    # trio._socket._SocketType._sock: MessageChannel silently lost its fast path
    # (it falls back to trio's public socket methods). Update trionet/_adapters/trio_compat.py.
    from trio._socket import _SocketType  # noqa: F401 - must exist

    client, server = await tcp_stream_pair()
    async with client, server:
        raw = MessageChannel(client)._raw  # what trionet found in the trio socket
        assert raw is not None, "trio changed its socket internals: update trionet/_adapters/trio_compat.py"
        assert type(raw) is socket.socket
        assert raw.fileno() == client.socket.fileno()
        assert raw.getblocking() is False


async def test_virtual_sockets_keep_the_trio_socket_path(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=1)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.001)
    with net.install():
        client, server = await socket_pair(net, 9)
        a, b = MessageChannel(trio.SocketStream(client)), MessageChannel(trio.SocketStream(server))
        async with a, b:
            assert a._raw is None  # no stdlib socket inside a virtual one
            assert a._socket is client
            await a.send(b"over the virtual network")
            assert await b.receive() == b"over the virtual network"


# ------------------------------------------------------------- one schedule point


async def test_send_and_receive_take_one_schedule_point_each_on_a_socket() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client) as sender, MessageChannel(server) as receiver:
        for payload in (b"", b"x" * 16, b"y" * 4096):
            with counting_schedule_points() as counter:
                await sender.send(payload)
            assert counter.steps == 1
            await wait_for_frames_readable(server, len(payload) + 4)
            with counting_schedule_points() as counter:
                assert await receiver.receive() == payload  # bytes already in the kernel
            assert counter.steps == 1
        await sender.send_many([b"a", b"b"])
        await wait_for_frames_readable(server, 10)
        with counting_schedule_points() as counter:
            assert await receiver.receive() == b"a"  # read from the kernel
            assert await receiver.receive() == b"b"  # buffered
        assert counter.steps == 2

        async def send_later() -> None:
            await trio.testing.wait_all_tasks_blocked()
            await sender.send(b"late")

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_later)
            with counting_schedule_points() as counter:
                assert await receiver.receive() == b"late"  # waited: the wait is the one
            assert counter.steps == 1


async def test_a_cancelled_fast_path_send_sends_nothing_and_receive_loses_nothing() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client) as sender, MessageChannel(server) as receiver:
        with trio.CancelScope() as scope:
            scope.cancel()
            await sender.send(b"never")
        assert scope.cancelled_caught
        await sender.send(b"sent")
        await wait_for_frames_readable(server, 8)
        with trio.CancelScope() as scope:
            scope.cancel()
            await receiver.receive()
        assert scope.cancelled_caught
        assert await receiver.receive() == b"sent"
        assert sender.statistics().messages_sent == 1


# ------------------------------------------------------------------ contended senders


async def start_blocked_big_send(
    nursery: trio.Nursery, sender: MessageChannel, size: int = 32 << 20
) -> tuple[bytes, list[str]]:
    """A send of a frame larger than the kernel's buffers, blocked mid-frame."""
    payload = bytes(range(256)) * (size // 256)
    done: list[str] = []

    async def send_big() -> None:
        await sender.send(payload)
        done.append("big")

    nursery.start_soon(send_big)
    await trio.testing.wait_all_tasks_blocked()
    assert not done, "the frame did not block: the kernel took all of it"
    return payload, done


async def test_contended_senders_are_fifo_and_a_waiter_cancelled_in_the_queue_sends_nothing() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client, BIG) as sender, MessageChannel(server, BIG) as receiver:
        returned: list[bytes] = []
        cancelled: list[bytes] = []
        scopes: dict[bytes, trio.CancelScope] = {}

        async def send_queued(message: bytes) -> None:
            with trio.CancelScope() as scope:
                scopes[message] = scope
                await sender.send(message)
                returned.append(message)
            if scope.cancelled_caught:
                cancelled.append(message)

        async with trio.open_nursery() as nursery:
            payload, done = await start_blocked_big_send(nursery, sender)
            for message in (b"first", b"second", b"third", b"fourth"):
                nursery.start_soon(send_queued, message)
                await trio.testing.wait_all_tasks_blocked()
            assert sender.statistics().tasks_waiting_send == 4
            scopes[b"second"].cancel()
            await trio.testing.wait_all_tasks_blocked()
            assert cancelled == [b"second"]
            assert sender.statistics().tasks_waiting_send == 3
            received = [await receiver.receive() for _ in range(4)]
        assert received[0] == payload
        assert received[1:] == [b"first", b"third", b"fourth"]
        assert done == ["big"]
        assert returned == [b"first", b"third", b"fourth"]
        assert sender.statistics().tasks_waiting_send == 0


async def test_a_waiter_handed_the_channel_writes_even_if_cancelled_after_the_handover() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client, BIG) as sender, MessageChannel(server, BIG) as receiver:
        async with trio.open_nursery() as nursery:
            payload, _ = await start_blocked_big_send(nursery, sender)
            results: list[str] = []

            async def send_queued() -> None:
                with trio.CancelScope() as scope:
                    await sender.send(b"queued")
                    results.append("returned")
                    await trio.lowlevel.checkpoint()
                results.append("cancelled" if scope.cancelled_caught else "not cancelled")

            nursery.start_soon(send_queued)
            await trio.testing.wait_all_tasks_blocked()
            assert await receiver.receive() == payload
            assert await receiver.receive() == b"queued"
        assert results == ["returned", "not cancelled"]


# -------------------------------------------------------------------- aclose wakes


async def test_aclose_from_another_task_wakes_a_blocked_fast_path_receiver() -> None:
    client, server = await tcp_stream_pair()
    async with client:
        receiver = MessageChannel(server)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_close_when_blocked, receiver)
            with pytest.raises(trio.ClosedResourceError):
                await receiver.receive()


async def _close_when_blocked(channel: MessageChannel) -> None:
    await trio.testing.wait_all_tasks_blocked()
    await channel.aclose()


async def test_aclose_from_another_task_wakes_a_sender_blocked_mid_frame_and_one_queued() -> None:
    client, server = await tcp_stream_pair()
    async with server:
        sender = MessageChannel(client, BIG)
        errors: list[str] = []

        async def send_and_record(message: bytes) -> None:
            try:
                await sender.send(message)
            except trio.ClosedResourceError:
                errors.append(message.decode()[:6])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(send_and_record, b"big..." + b"x" * (32 << 20))
            await trio.testing.wait_all_tasks_blocked()
            nursery.start_soon(send_and_record, b"queued")
            await trio.testing.wait_all_tasks_blocked()
            await sender.aclose()
        assert errors == ["big...", "queued"]


# ---------------------------------------------------------------- the slow path


async def test_a_send_that_finds_the_socket_buffer_full_waits_cancellably_and_then_completes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The kernel's buffers are filled through the raw socket by a peer that does
    # not read (default buffer sizes), with whole 1000-byte frames; the kernel
    # may take only part of the last one, which is finished once the peer reads.
    # Linux may still open its window a little after the fill (it collapses the
    # receive queue, or grows the send buffer), so that the channel's send finds
    # room: the precondition did not hold, and the scenario runs again on a new
    # connection (a few attempts at most; the first one almost always holds).
    first_results: list[int] = []
    original = MessageChannel._send_raw_nowait
    senders: list[MessageChannel] = []

    def recording(channel: MessageChannel, sock: socket.socket, data: bytes | bytearray | memoryview) -> int:
        sent = original(channel, sock, data)
        if channel in senders:
            first_results.append(sent)
        return sent

    # The channel has __slots__: the method is patched on the class.
    monkeypatch.setattr(MessageChannel, "_send_raw_nowait", recording)
    for _attempt in range(5):
        first_results.clear()
        if await _send_into_a_full_buffer(senders, first_results):
            return
        assert first_results[0] > 0  # it found room: no cancellation to test
    raise AssertionError("the kernel made room in the buffers after the fill in every attempt")


async def _send_into_a_full_buffer(senders: list[MessageChannel], first_results: list[int]) -> bool:
    """Fill the buffers, then send and cancel once blocked; False if the send found room after all."""
    client, server = await tcp_stream_pair()
    async with MessageChannel(client) as sender, MessageChannel(server) as receiver:
        senders[:] = [sender]
        raw = client.socket._sock  # type: ignore[attr-defined]
        filler = frame(b"f" * 996)
        fillers = 0
        rest = b""
        for _ in range(1_000_000):
            try:
                sent = raw.send(filler)
            except BlockingIOError:
                break
            fillers += 1
            if sent < len(filler):
                rest = filler[sent:]
                break
        else:
            raise AssertionError("the socket buffers never filled")
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_blocked)
                await sender.send(b"never sent")
        if not scope.cancelled_caught:
            return False
        assert first_results == [0], "the send did not find the buffer full (BlockingIOError)"

        got: list[bytes] = []

        async def drain() -> None:
            for _ in range(fillers + 1):
                got.append(await receiver.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(drain)
            view = memoryview(rest)
            while view:
                await trio.lowlevel.wait_writable(raw)
                view = view[raw.send(view):]
            await sender.send(b"after")  # waits for the peer to read: the slow path again
        assert got[:-1] == [b"f" * 996] * fillers
        assert got[-1] == b"after"
        assert sender.statistics().messages_sent == 1
        return True


# ------------------------------------------------------------------ end_when_idle


async def test_end_when_idle_wakes_a_receive_waiting_for_a_new_frame_socket() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client) as peer, MessageChannel(server) as channel:

        async def end_when_blocked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            channel.end_when_idle()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(end_when_blocked)
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()
        await channel.send(b"goodbye")  # sending is not affected
        assert await peer.receive() == b"goodbye"


async def test_end_when_idle_delivers_frames_already_readable_first_socket() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client) as peer, MessageChannel(server) as channel:
        await peer.send_many([b"one", b"two"])
        await peer.send(b"three")
        await wait_for_frames_readable(server, 3 * 4 + 11)
        channel.end_when_idle()
        assert [await channel.receive() for _ in range(3)] == [b"one", b"two", b"three"]
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()


async def test_receive_nowait_after_end_when_idle_ends_only_once_nothing_is_left() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client) as peer, MessageChannel(server) as channel:
        channel.end_when_idle()
        await peer.send(b"late")
        await wait_for_frames_readable(server, 4 + 4)
        # Readable in the kernel: receive() would deliver it, so this must not end.
        with pytest.raises(trio.WouldBlock):
            channel.receive_nowait()
        assert await channel.receive() == b"late"
        with pytest.raises(trio.EndOfChannel):
            channel.receive_nowait()


async def test_end_when_idle_lets_a_frame_in_progress_finish_socket() -> None:
    client, server = await tcp_stream_pair()
    async with client, MessageChannel(server) as channel:
        await client.send_all(frame(b"half and half")[:7])
        results: list[bytes] = []

        async def receive() -> None:
            results.append(await channel.receive())

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receive)
            await trio.testing.wait_all_tasks_blocked()
            assert channel.statistics().buffered_bytes == 7
            channel.end_when_idle()
            await trio.testing.wait_all_tasks_blocked()
            assert not results  # still waiting for the rest of the frame
            await client.send_all(frame(b"half and half")[7:])
        assert results == [b"half and half"]
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()


async def test_end_when_idle_does_not_disturb_a_send_blocked_on_the_same_socket() -> None:
    client, server = await tcp_stream_pair()
    async with MessageChannel(client, BIG) as channel, MessageChannel(server, BIG) as peer:
        async with trio.open_nursery() as nursery:
            payload, done = await start_blocked_big_send(nursery, channel)
            async with trio.open_nursery() as inner:
                inner.start_soon(_end_when_blocked, channel)
                with pytest.raises(trio.EndOfChannel):
                    await channel.receive()
            # The blocked send was woken by notify_closing() too and waits again.
            assert not done
            assert await peer.receive() == payload
        assert done == ["big"]
        assert not channel.statistics().aborted


async def _end_when_blocked(channel: MessageChannel) -> None:
    await trio.testing.wait_all_tasks_blocked()
    channel.end_when_idle()


async def test_end_when_idle_on_memory_streams() -> None:
    left, right = trio.testing.memory_stream_pair()
    peer, channel = MessageChannel(left), MessageChannel(right)
    # A receive waiting for a new frame is woken.
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_end_when_blocked, channel)
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()
    # A frame in progress finishes, buffered frames come first, then the end.
    left2, right2 = trio.testing.memory_stream_pair()
    peer, channel = MessageChannel(left2), MessageChannel(right2)
    await left2.send_all(frame(b"a") + frame(b"b") + frame(b"partial")[:5])
    results: list[bytes] = []

    async def receive_three() -> None:
        for _ in range(3):
            results.append(await channel.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receive_three)
        await trio.testing.wait_all_tasks_blocked()
        assert results == [b"a", b"b"]
        channel.end_when_idle()
        await trio.testing.wait_all_tasks_blocked()
        assert results == [b"a", b"b"]
        await left2.send_all(frame(b"partial")[5:])
    assert results == [b"a", b"b", b"partial"]
    with pytest.raises(trio.EndOfChannel):
        await channel.receive()
    await channel.send(b"still sends")
    assert await peer.receive() == b"still sends"


async def test_end_when_idle_over_the_virtual_network(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=2)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.001)
    with net.install():
        client, server = await socket_pair(net, 9)
        peer, channel = MessageChannel(trio.SocketStream(client)), MessageChannel(trio.SocketStream(server))
        async with peer, channel:
            await peer.send(b"in flight")
            await trio.sleep(1)  # virtual time: the frame has arrived
            channel.end_when_idle()
            assert await channel.receive() == b"in flight"
            with pytest.raises(trio.EndOfChannel):
                await channel.receive()


# ----------------------------------------------------------------- KI protection


class RecordingDecoder:
    """A decoder that notes whether each feed() ran KeyboardInterrupt-protected."""

    def __init__(self, inner: Any, seen: list[tuple[str, bool]]) -> None:
        self.inner = inner
        self.seen = seen

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        self.seen.append(("feed", trio.lowlevel.currently_ki_protected()))
        self.inner.feed(data)

    def next_frame(self) -> bytes | None:
        frame: bytes | None = self.inner.next_frame()
        return frame

    @property
    def buffered(self) -> int:
        return int(self.inner.buffered)

    @property
    def offset(self) -> int:
        return int(self.inner.offset)

    @property
    def held(self) -> int:
        return int(self.inner.held)


async def test_flags_are_set_and_cleared_with_keyboard_interrupt_protection() -> None:
    seen: list[tuple[str, bool]] = []

    class RecordingCodec(LengthPrefixed):  # type: ignore[misc]  # a final class, subclassed to spy
        def encode(self, message: bytes | bytearray | memoryview) -> bytes:
            seen.append(("encode", trio.lowlevel.currently_ki_protected()))
            return super().encode(message)

        def encode_many(self, messages: object) -> bytes:
            seen.append(("encode_many", trio.lowlevel.currently_ki_protected()))
            return super().encode_many(messages)  # type: ignore[arg-type]

    client, server = await tcp_stream_pair()
    left, right = trio.testing.memory_stream_pair()
    for a, b in ((client, server), (left, right)):
        sender, receiver = MessageChannel(a, RecordingCodec()), MessageChannel(b)
        receiver._decoder = RecordingDecoder(receiver._decoder, seen)
        await sender.send(b"x")
        await sender.send_many([b"y"])
        assert await receiver.receive() == b"x"
        await sender.aclose()
        await receiver.aclose()
    assert seen
    assert all(protected for _, protected in seen), seen
    assert {name for name, _ in seen} == {"encode", "encode_many", "feed"}
    assert not trio.lowlevel.currently_ki_protected()


# ------------------------------------------------------------- random cancellation


def make_message(rng: random.Random, index: int) -> bytes:
    size = rng.choice((0, 16, 256, 4096)) if rng.random() < 0.995 else rng.randrange(1 << 20, 4 << 20)
    body = rng.randbytes(size)
    return index.to_bytes(4, "big") + zlib.crc32(body).to_bytes(4, "big") + body


@pytest.mark.slow
@pytest.mark.parametrize("seed", [11])
async def test_random_cancellation_on_the_fast_path_delivers_exactly_the_frames_whose_send_returned(
    seed: int,
) -> None:
    frames = 20_000
    rng = random.Random(seed)
    gc.collect()
    fds_before = open_fd_count()
    tasks_before = trio.lowlevel.current_statistics().tasks_living
    client, server = await tcp_stream_pair()
    codec = LengthPrefixed(max_size=8 << 20)
    sender, receiver = MessageChannel(client, codec), MessageChannel(server, codec)
    assert sender._raw is not None
    assert receiver._raw is not None
    returned: list[int] = []
    received: list[int] = []
    cancels = {"send": 0, "receive": 0}

    def timeout() -> float:
        # Cancelled at once, after a fraction of a send/receive, or not at all.
        return rng.choice((0.0, 0.0, 0.00001, 0.0001, 0.001, 10.0))

    async def send_all_frames() -> None:
        for index in range(frames):
            message = make_message(rng, index)
            with trio.move_on_after(timeout()) as scope:
                await sender.send(message)
                returned.append(index)  # no checkpoint between send() returning and this
            cancels["send"] += scope.cancelled_caught
        await sender.send_eof()

    async def receive_all_frames() -> None:
        while True:
            with trio.move_on_after(timeout()) as scope:
                try:
                    message = await receiver.receive()
                except trio.EndOfChannel:
                    return
                index = int.from_bytes(message[:4], "big")
                assert zlib.crc32(message[8:]) == int.from_bytes(message[4:8], "big")
                received.append(index)
            cancels["receive"] += scope.cancelled_caught

    with trio.fail_after(300):
        async with sender, receiver, trio.open_nursery() as nursery:
            nursery.start_soon(send_all_frames)
            nursery.start_soon(receive_all_frames)
    assert received == returned
    assert cancels["send"] > 1000, cancels
    assert cancels["receive"] > 1000, cancels
    assert len(returned) > frames // 4
    gc.collect()
    assert open_fd_count() == fds_before
    assert trio.lowlevel.current_statistics().tasks_living == tasks_before


async def test_statistics_count_the_receive_buffer_the_channel_holds() -> None:
    left, right = trio.testing.memory_stream_pair()
    channel = MessageChannel(right, BIG)
    await left.send_all(frame(b"z" * 100_000)[:60_000])
    async with trio.open_nursery() as nursery:

        async def cancel_when_blocked() -> None:
            await trio.testing.wait_all_tasks_blocked()
            nursery.cancel_scope.cancel()

        nursery.start_soon(cancel_when_blocked)
        await channel.receive()
    stats = channel.statistics()
    assert stats.buffered_bytes == 60_000
    assert stats.held_bytes == channel._decoder.held
    assert stats.held_bytes >= stats.buffered_bytes
