"""Properties of the virtual network that hold for every link, buffer size and seed."""

from __future__ import annotations

import collections
import random
import socket
from collections.abc import Awaitable, Callable
from typing import TypeVar

import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from trionet.testing import LinkConfig, TraceEvent, VirtualNetwork

from .test_vnet_tcp import socket_pair

links = st.builds(
    LinkConfig,
    latency=st.sampled_from([0.0, 0.001, 0.03]),
    jitter=st.sampled_from([0.0, 0.01]),
    loss=st.sampled_from([0.0, 0.1, 0.5]),
    duplicate=st.sampled_from([0.0, 0.2]),
    reorder=st.sampled_from([0.0, 0.3]),
    bandwidth=st.sampled_from([None, 200_000.0]),
)


def network(seed: int, link: LinkConfig, **options: int | None) -> VirtualNetwork:
    net = VirtualNetwork(seed=seed, **options)  # type: ignore[arg-type]
    net.add_host("server", "10.0.0.1", "fd00::1")
    net.add_host("client", "10.0.0.2", "fd00::2")
    net.set_link("client", "server", link)
    return net


T = TypeVar("T")


def run(afn: Callable[[], Awaitable[T]]) -> T:
    return trio.run(afn, clock=trio.testing.MockClock(autojump_threshold=0))


@settings(max_examples=30)
@given(
    seed=st.integers(0, 2**32),
    link=links,
    writes=st.lists(st.integers(1, 30_000), min_size=1, max_size=6),
    read_size=st.integers(100, 70_000),
    buffer_size=st.sampled_from([1000, 65536, None]),  # None: Linux's autotuned buffers
)
def test_a_tcp_stream_delivers_exactly_the_bytes_sent_over_any_link(
    seed: int, link: LinkConfig, writes: list[int], read_size: int, buffer_size: int | None
) -> None:
    payload = random.Random(seed).randbytes(sum(writes))

    async def main() -> bytes:
        # Connect on a perfect link: with heavy loss every SYN can be lost (as on a
        # real network: connect() then times out), which is not what this tests.
        net = network(seed, LinkConfig(), tcp_buffer_size=buffer_size)
        with net.install():
            client, server = await socket_pair(net)
            net.set_link("client", "server", link)

            async def send() -> None:
                stream = trio.SocketStream(client)
                offset = 0
                for size in writes:
                    await stream.send_all(payload[offset : offset + size])
                    offset += size
                await stream.send_eof()

            received = bytearray()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                while chunk := await server.recv(read_size):  # ends at the FIN
                    received += chunk
            return bytes(received)

    assert run(main) == payload


@settings(max_examples=30)
@given(seed=st.integers(0, 2**32), link=links, count=st.integers(1, 60))
def test_datagrams_arrive_whole_at_most_twice_and_exactly_once_on_a_perfect_link(
    seed: int, link: LinkConfig, count: int
) -> None:
    sent = [b"datagram %d" % i for i in range(count)]

    async def main() -> tuple[list[bytes], list[TraceEvent]]:
        net = network(seed, link)
        got: list[bytes] = []
        with net.install():
            with net.host("server"):
                server = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
                await server.bind(("", 53))
            with net.host("client"):
                client = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
            for data in sent:
                await client.sendto(data, ("server", 53))
            while True:  # bounded: at most two copies of each datagram
                with trio.move_on_after(10) as scope:
                    got.append(await server.recv(100))
                if scope.cancelled_caught:
                    break
        return got, net.trace

    got, trace = run(main)
    counts = collections.Counter(got)
    assert set(counts) <= set(sent)
    assert all(n <= (2 if link.duplicate else 1) for n in counts.values())
    if link == LinkConfig(latency=link.latency, bandwidth=link.bandwidth):
        assert got == sent  # no loss, duplication, jitter or reordering: all, in order
    assert (got, trace) == run(main)  # and the same again: deterministic
