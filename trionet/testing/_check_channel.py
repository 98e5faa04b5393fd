"""A conformance suite for message channels, in the manner of trio's ``check_two_way_stream``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass
from functools import partial
from typing import Protocol, TypeAlias

import trio
import trio.testing

from .._sansio.codecs import Codec, Delimited, Lines
from .._sansio.errors import FramingError

__all__ = ["ChannelPairMaker", "check_message_channel"]


class _MessageChannelLike(Protocol):
    async def send(self, value: bytes, /) -> None: ...

    async def send_many(self, values: list[bytes], /) -> None: ...

    async def receive(self) -> bytes: ...

    async def aclose(self) -> None: ...


#: An async function returning two connected channels: what one sends the other receives.
ChannelPairMaker: TypeAlias = Callable[[], Awaitable[tuple[_MessageChannelLike, _MessageChannelLike]]]

# Enough traffic to cross socket buffers and read sizes, small enough to stay quick.
_MANY: int = 200
_SENDERS: int = 20
_LARGE: int = 1 << 20
# Cancellations are swept over this many scheduling points after the operation
# starts: a fault that loses a frame (or writes half of one) between two
# checkpoints of receive() or send() is hit at one of them. trio's scheduler
# runs tasks in a random order within a batch, so each delay is tried twice.
_CANCEL_DELAYS: tuple[int, ...] = tuple(range(12)) * 2


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


@dataclass(frozen=True)
class _Messages:
    """Messages that fit the codec under test: sizes within max_size, no delimiter bytes."""

    limit: int
    alphabet: bytes
    codec: Codec | None

    @classmethod
    def for_codec(cls, codec: Codec | None) -> _Messages:
        if codec is None:
            return cls(_LARGE, bytes(range(256)), None)
        excluded: bytes = b""
        if isinstance(codec, Delimited):
            excluded = codec.delimiter
        elif isinstance(codec, Lines):
            excluded = b"\r\n"
        alphabet = bytes(b for b in range(256) if b not in excluded)
        if len(alphabet) < _SENDERS:
            raise ValueError(f"{codec!r} leaves too few bytes to build test messages; pass messages=")
        return cls(min(codec.max_size, _LARGE), alphabet, codec)

    def fits(self, message: bytes) -> bool:
        if len(message) > self.limit:
            return False
        if self.codec is None:
            return True
        try:
            self.codec.encode(message)
        except (FramingError, ValueError):  # FrameTooLarge, InvalidMessage, a custom refusal
            return False
        return True

    def fill(self, size: int, start: int = 0) -> bytes:
        alphabet = self.alphabet
        return bytes(alphabet[(start + i) % len(alphabet)] for i in range(min(size, self.limit)))

    def tagged(self, sender: int, index: int, padding: int) -> bytes:
        # One byte names the sender, one the index (mod the alphabet), the rest pads.
        alphabet = self.alphabet
        if self.limit < 2:
            return alphabet[sender % len(alphabet) : sender % len(alphabet) + 1]
        head = bytes((alphabet[sender % len(alphabet)], alphabet[index % len(alphabet)]))
        return head + alphabet[:1] * min(padding, self.limit - 2)

    def assorted(self, count: int) -> list[bytes]:
        candidates = [b"", self.fill(1), self.fill(1024), *(self.fill(1 + i % 40, i) for i in range(count))]
        return [message for message in candidates if self.fits(message)]


@dataclass(frozen=True)
class _Options:
    make_pair: ChannelPairMaker
    messages: _Messages
    explicit: Sequence[bytes] | None
    bidirectional: bool

    def round_trip_messages(self) -> list[bytes]:
        if self.explicit is not None:
            return list(self.explicit)
        return self.messages.assorted(_MANY)

    def small_messages(self, count: int) -> list[bytes]:
        if self.explicit is not None:
            pool = list(self.explicit) or [b""]
            return [pool[i % len(pool)] for i in range(count)]
        return [self.messages.fill(1 + i % min(self.messages.limit, 16), i) for i in range(count)]


async def _pair(stack: AsyncExitStack, options: _Options) -> tuple[
    _MessageChannelLike, _MessageChannelLike
]:
    a, b = await options.make_pair()
    stack.push_async_callback(b.aclose)
    stack.push_async_callback(a.aclose)
    return a, b


async def _check_round_trip(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        messages = options.round_trip_messages()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_many, messages)
            received = [await b.receive() for _ in messages]
        _expect(received == messages, "send_many: messages were not received whole and in order")
        singles = options.small_messages(20)
        async with trio.open_nursery() as nursery:

            async def send_each() -> None:
                for message in singles:
                    await a.send(message)

            nursery.start_soon(send_each)
            received = [await b.receive() for _ in singles]
        _expect(received == singles, "send: messages were not received whole and in order")
        if options.bidirectional:
            reply = singles[-1]
            async with trio.open_nursery() as nursery:
                nursery.start_soon(b.send, reply)
                _expect(await a.receive() == reply, "the channel does not work in both directions")


async def _check_large_message(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        if options.explicit is not None:
            payload = max(options.explicit, key=len, default=b"")
        else:
            payload = options.messages.fill(options.messages.limit)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, payload)
            got = await b.receive()
        _expect(got == payload, f"a message of {len(payload)} bytes was not received intact")


async def _check_concurrent_senders(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        per_sender = _MANY // 10
        if options.explicit is not None:
            pool = list(options.explicit) or [b""]
            expected = {
                n: [pool[(n + i) % len(pool)] for i in range(per_sender)] for n in range(_SENDERS)
            }
        else:
            expected = {
                n: [options.messages.tagged(n, i, n * 97 % 3000) for i in range(per_sender)]
                for n in range(_SENDERS)
            }

        async def sender(n: int) -> None:
            for message in expected[n]:
                await a.send(message)

        received: list[bytes] = []
        async with trio.open_nursery() as nursery:
            for n in range(_SENDERS):
                nursery.start_soon(sender, n)
            for _ in range(_SENDERS * per_sender):
                received.append(await b.receive())
        # Every message is one of the expected ones (frames did not interleave), and
        # where the messages tell their senders apart, each sender's are in order.
        every = sorted(m for messages in expected.values() for m in messages)
        _expect(sorted(received) == every, "concurrent senders: frames were corrupted or interleaved")
        if options.explicit is None and options.messages.limit >= 2:
            for n, messages in expected.items():
                mine = [m for m in received if m[:1] == messages[0][:1]]
                _expect(mine == messages, f"concurrent senders: sender {n}'s messages arrived out of order")


async def _cancel_after(scope: trio.CancelScope, delay: int) -> None:
    for _ in range(delay):
        await trio.lowlevel.checkpoint()
    scope.cancel()


async def _check_cancelled_receive_loses_nothing(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        # Nothing to receive yet: a receive cancelled while it waits loses nothing.
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_blocked)
                await b.receive()
                raise AssertionError("receive() returned without a message being sent")
        after = options.small_messages(1)[0]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, after)
            got = await b.receive()
        _expect(got == after, "a cancelled receive lost data")


async def _check_cancelled_receive_with_frames_buffered_loses_nothing(options: _Options) -> None:
    # The frames are already sent (and so buffered in the stream or the channel);
    # each receive is cancelled a few scheduling points after it starts. A
    # receive either raises Cancelled and takes nothing, or returns the next frame.
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        messages = options.small_messages(len(_CANCEL_DELAYS) + 1)
        received: list[bytes] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_many, messages)
            received.append(await b.receive())  # the frames have arrived
            for delay in _CANCEL_DELAYS:
                with trio.CancelScope() as scope:
                    nursery.start_soon(_cancel_after, scope, delay)
                    received.append(await b.receive())
                scope.cancel()
            while len(received) < len(messages):
                with trio.move_on_after(1) as idle:
                    received.append(await b.receive())
                if idle.cancelled_caught:
                    break
        _expect(
            received == messages,
            f"a receive cancelled with frames buffered lost, duplicated or reordered frames: "
            f"{len(messages)} sent, {len(received)} received"
            + ("" if len(received) != len(messages) else " in another order"),
        )


async def _check_cancelled_send_sends_nothing(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        never = options.small_messages(2)
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send(never[0])
        _expect(scope.cancelled_caught, "send() in a cancelled scope did not raise Cancelled")
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send_many(never)
        _expect(scope.cancelled_caught, "send_many() in a cancelled scope did not raise Cancelled")
        sent = options.messages.fill(3, 7) if options.explicit is None else never[-1]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, sent)
            got = await b.receive()
        _expect(got == sent, f"a cancelled send() reached the peer: received {got[:40]!r}")


async def _check_send_cancelled_in_flight_is_whole_or_nothing(options: _Options) -> None:
    # Each send is cancelled a few scheduling points after it starts, while the
    # peer reads. A send that raised Cancelled must have written nothing; one that
    # returned, the whole frame: the peer receives exactly the sends that returned.
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        candidates = options.small_messages(len(_CANCEL_DELAYS))
        if options.explicit is None and options.messages.limit >= 256:
            # Frames longer than one write of some streams, so that one can be split.
            candidates = [options.messages.fill(200 + i, i) for i in range(len(_CANCEL_DELAYS))]
        final = options.small_messages(1)[0]
        returned: list[bytes] = []
        received: list[bytes] = []
        expected_count: list[int] = []  # set once every send has returned
        enough = trio.Event()

        async def read_all() -> None:
            while True:
                received.append(await b.receive())
                if expected_count and len(received) >= expected_count[0]:
                    enough.set()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            for delay, message in zip(_CANCEL_DELAYS, candidates, strict=True):
                with trio.CancelScope() as scope:
                    nursery.start_soon(_cancel_after, scope, delay)
                    await a.send(message)
                    returned.append(message)
                scope.cancel()
            await a.send(final)
            returned.append(final)
            expected_count.append(len(returned))
            if len(received) >= len(returned):
                enough.set()
            # A correct channel delivers at once; a corrupted stream may never end a frame.
            with trio.move_on_after(10):
                await enough.wait()
            nursery.cancel_scope.cancel()
        _expect(
            received == returned,
            "a send cancelled in flight was not whole or nothing: the peer received "
            f"{len(received)} frames where {len(returned)} sends returned"
            + (" (different frames)" if len(received) == len(returned) else ""),
        )


async def _check_concurrent_receive_is_busy(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        _, b = await _pair(stack, options)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.receive)
            await trio.testing.wait_all_tasks_blocked()
            try:
                await b.receive()
            except trio.BusyResourceError:
                pass
            else:
                raise AssertionError("two concurrent receive() calls did not raise BusyResourceError")
            nursery.cancel_scope.cancel()


async def _check_end_of_channel(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, options)
        two = options.small_messages(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_many, two)
            first = await b.receive()
        await a.aclose()
        _expect((first, await b.receive()) == tuple(two), "messages sent before close were lost")
        for _ in range(2):
            try:
                await b.receive()
            except trio.EndOfChannel:
                pass
            else:
                raise AssertionError("receive() after the peer closed did not raise EndOfChannel")


async def _check_closed_channel(options: _Options) -> None:
    async with AsyncExitStack() as stack:
        a, _ = await _pair(stack, options)
        await a.aclose()
        await a.aclose()
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("send", partial(a.send, options.small_messages(1)[0])),
            ("receive", a.receive),
        ]
        for name, call in calls:
            try:
                await call()
            except trio.ClosedResourceError:
                pass
            else:
                raise AssertionError(f"{name}() after aclose() did not raise ClosedResourceError")


_CHECKS = (
    _check_round_trip,
    _check_large_message,
    _check_concurrent_senders,
    _check_cancelled_receive_loses_nothing,
    _check_cancelled_receive_with_frames_buffered_loses_nothing,
    _check_cancelled_send_sends_nothing,
    _check_send_cancelled_in_flight_is_whole_or_nothing,
    _check_concurrent_receive_is_busy,
    _check_end_of_channel,
    _check_closed_channel,
)


def _leaves(exc: BaseException) -> Iterator[BaseException]:
    # Duck-typed: BaseExceptionGroup is built in from Python 3.11 only (trio uses
    # the exceptiongroup backport before), and both have .exceptions.
    inner = getattr(exc, "exceptions", None)
    if isinstance(inner, tuple) and all(isinstance(e, BaseException) for e in inner):
        for each in inner:
            yield from _leaves(each)
    else:
        yield exc


def _as_assertion(scenario: str, exc: BaseException) -> AssertionError | None:
    """One plain AssertionError for a failed scenario, or None to let ``exc`` through."""
    leaves = list(_leaves(exc))
    if all(isinstance(leaf, (trio.Cancelled, KeyboardInterrupt, SystemExit)) for leaf in leaves):
        return None  # the check itself was cancelled or interrupted
    for leaf in leaves:
        if isinstance(leaf, AssertionError):
            failure = AssertionError(f"{scenario}: {leaf}")
            failure.__cause__ = leaf
            return failure
    leaf = next(leaf for leaf in leaves if not isinstance(leaf, trio.Cancelled))
    failure = AssertionError(f"{scenario}: the channel raised {type(leaf).__name__}: {leaf}")
    failure.__cause__ = leaf
    return failure


async def check_message_channel(
    make_pair: ChannelPairMaker,
    *,
    codec: Codec | None = None,
    messages: Sequence[bytes] | None = None,
    bidirectional: bool = True,
    scenario_timeout: float = 60,
) -> None:
    """Check that a pair of message channels keeps trionet's channel contracts.

    Runs a battery of scenarios, each on a fresh pair from ``make_pair``:
    messages arrive whole and in order, one at a time, batched, and the largest
    the codec allows (up to 1 MiB), in both directions; concurrent senders never
    interleave and each sender's messages stay in order; a receive cancelled while
    it waits, or a few scheduling points after it starts while frames are already
    buffered, loses, duplicates and reorders nothing; a send cancelled before it
    starts sends nothing, and one cancelled while it runs is whole or nothing (the
    peer receives exactly the sends that returned); two concurrent receives raise
    :exc:`trio.BusyResourceError`; the peer's close ends the channel with
    :exc:`trio.EndOfChannel` after the messages sent before it; a closed channel
    raises :exc:`trio.ClosedResourceError`.

    Use it to test a transport, or your own channel type, the way trio's
    :func:`trio.testing.check_two_way_stream` tests streams. It does not import
    pytest. A failed check raises one plain :exc:`AssertionError` (never an
    exception group) whose message starts with the scenario and names the broken
    contract; an unexpected exception from the channel is its ``__cause__``.

    The messages fit the codec: no longer than its ``max_size``, and free of a
    :class:`~trionet.Delimited` codec's delimiter bytes or of ``\\r`` and ``\\n``
    for :class:`~trionet.Lines`. The codec is ``codec``, else the ``codec``
    attribute of the first channel (as :class:`~trionet.MessageChannel` has);
    messages another codec refuses to encode are left out. Pass ``messages`` to
    choose them yourself.

    Args:
      make_pair: An async function returning two connected channels
          ``(a, b)``; what ``a`` sends ``b`` receives and the other way round.
          Both are closed after each scenario.
      codec: The codec the channels use, to fit the test messages to it.
      messages: The messages to send (at least one; each must be acceptable to
          both channels). They replace the generated ones in every scenario.
      bidirectional: ``False`` for a pair that carries messages only from ``a``
          to ``b`` (for example a codec that only one side can encode): nothing
          is then sent from ``b`` to ``a``.
      scenario_timeout: Seconds (on trio's clock) each scenario may take; a scenario that
          hangs, for example waiting for a message that was lost, fails.

    Raises:
      AssertionError: A contract does not hold.
      ValueError: ``messages`` is empty.

    Cancellation:
      Cancelling the check leaves no task behind; the channels made so far are
      closed.
    """
    if messages is not None:
        messages = [bytes(message) for message in messages]
        if not messages:
            raise ValueError("messages must not be empty")
    if codec is None and messages is None:
        probe_a, probe_b = await make_pair()
        found = getattr(probe_a, "codec", None)
        await probe_a.aclose()
        await probe_b.aclose()
        codec = found if isinstance(found, Codec) else None
    options = _Options(make_pair, _Messages.for_codec(codec), messages, bidirectional)
    for check in _CHECKS:
        scenario = check.__name__.removeprefix("_check_").replace("_", " ")
        try:
            with trio.fail_after(scenario_timeout):
                await check(options)
        except trio.TooSlowError:
            hint = "" if not bidirectional else " (bidirectional=False for a one-way pair?)"
            raise AssertionError(
                f"{scenario}: no progress within {scenario_timeout} seconds{hint}"
            ) from None
        except BaseException as exc:
            failure = _as_assertion(scenario, exc)
            if failure is None:
                raise
            raise failure from failure.__cause__
