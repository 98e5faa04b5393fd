"""A conformance suite for message channels, in the manner of trio's ``check_two_way_stream``."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial
from typing import Protocol, TypeAlias

import trio
import trio.testing

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


def _expect(condition: bool, what: str) -> None:
    if not condition:
        raise AssertionError(what)


async def _pair(stack: AsyncExitStack, make_pair: ChannelPairMaker) -> tuple[
    _MessageChannelLike, _MessageChannelLike
]:
    a, b = await make_pair()
    stack.push_async_callback(b.aclose)
    stack.push_async_callback(a.aclose)
    return a, b


async def _check_round_trip(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, make_pair)
        messages = [b"", b"x", bytes(range(256)) * 4, *(b"m%d" % i for i in range(_MANY))]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_many, messages)
            received = [await b.receive() for _ in messages]
        _expect(received == messages, "send_many: messages were not received whole and in order")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(b.send, b"reply")
            _expect(await a.receive() == b"reply", "the channel does not work in both directions")


async def _check_large_message(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, make_pair)
        payload = bytes(i % 251 for i in range(_LARGE))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, payload)
            _expect(await b.receive() == payload, "a 1 MiB message was not received intact")


async def _check_concurrent_senders(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, make_pair)
        per_sender = _MANY // 10

        async def sender(n: int) -> None:
            for i in range(per_sender):
                await a.send(b"%d:%d:" % (n, i) + b"." * (n * 97 % 3000))

        seen: dict[int, int] = {}
        async with trio.open_nursery() as nursery:
            for n in range(_SENDERS):
                nursery.start_soon(sender, n)
            for _ in range(_SENDERS * per_sender):
                n_text, i_text, padding = (await b.receive()).split(b":")
                n, i = int(n_text), int(i_text)
                _expect(padding == b"." * (n * 97 % 3000), f"message {n}:{i} arrived corrupted")
                _expect(seen.get(n, -1) == i - 1, f"sender {n}'s messages arrived out of order")
                seen[n] = i
        _expect(len(seen) == _SENDERS, "messages of some senders never arrived")


async def _check_cancelled_receive_loses_nothing(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, make_pair)
        with trio.CancelScope() as scope:

            async def cancel_when_blocked() -> None:
                await trio.testing.wait_all_tasks_blocked()
                scope.cancel()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(cancel_when_blocked)
                await b.receive()
                raise AssertionError("receive() returned without a message being sent")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, b"after the cancelled receive")
            got = await b.receive()
        _expect(got == b"after the cancelled receive", "a cancelled receive lost data")


async def _check_cancelled_send_sends_nothing(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, make_pair)
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send(b"never sent")
        _expect(scope.cancelled_caught, "send() in a cancelled scope did not raise Cancelled")
        with trio.CancelScope() as scope:
            scope.cancel()
            await a.send_many([b"never", b"sent"])
        _expect(scope.cancelled_caught, "send_many() in a cancelled scope did not raise Cancelled")
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send, b"sent")
            got = await b.receive()
        _expect(got == b"sent", f"a cancelled send() reached the peer: received {got[:40]!r}")


async def _check_concurrent_receive_is_busy(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        _, b = await _pair(stack, make_pair)
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


async def _check_end_of_channel(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, b = await _pair(stack, make_pair)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(a.send_many, [b"one", b"two"])
            first = await b.receive()
        await a.aclose()
        _expect((first, await b.receive()) == (b"one", b"two"), "messages sent before close were lost")
        for _ in range(2):
            try:
                await b.receive()
            except trio.EndOfChannel:
                pass
            else:
                raise AssertionError("receive() after the peer closed did not raise EndOfChannel")


async def _check_closed_channel(make_pair: ChannelPairMaker) -> None:
    async with AsyncExitStack() as stack:
        a, _ = await _pair(stack, make_pair)
        await a.aclose()
        await a.aclose()
        calls: list[tuple[str, Callable[[], Awaitable[object]]]] = [
            ("send", partial(a.send, b"x")),
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
    _check_cancelled_send_sends_nothing,
    _check_concurrent_receive_is_busy,
    _check_end_of_channel,
    _check_closed_channel,
)


async def check_message_channel(make_pair: ChannelPairMaker, *, scenario_timeout: float = 60) -> None:
    """Check that a pair of message channels keeps trionet's channel contracts.

    Runs a battery of scenarios, each on a fresh pair from ``make_pair``: messages
    of every size arrive whole and in order in both directions; concurrent senders
    never interleave; a cancelled receive loses nothing; a send cancelled before it
    starts sends nothing and leaves the channel usable; two concurrent receives
    raise :exc:`trio.BusyResourceError`; the peer's close ends the channel with
    :exc:`trio.EndOfChannel` after the messages sent before it; a closed channel
    raises :exc:`trio.ClosedResourceError`.

    Use it to test a transport, or your own channel type, the way trio's
    :func:`trio.testing.check_two_way_stream` tests streams. It does not import
    pytest; a failed check raises :exc:`AssertionError` naming the contract.

    Args:
      make_pair: An async function returning two connected channels
          ``(a, b)``; what ``a`` sends ``b`` receives and the other way round.
          Both are closed after each scenario.
      scenario_timeout: Seconds (on trio's clock) each scenario may take; a scenario that
          hangs, for example waiting for a message that was lost, fails.

    Raises:
      AssertionError: A contract does not hold.

    Cancellation:
      Cancelling the check leaves no task behind; the channels made so far are
      closed.
    """
    for check in _CHECKS:
        try:
            with trio.fail_after(scenario_timeout):
                await check(make_pair)
        except trio.TooSlowError:
            scenario = check.__name__.removeprefix("_check_").replace("_", " ")
            raise AssertionError(f"{scenario}: no progress within {scenario_timeout} seconds") from None
