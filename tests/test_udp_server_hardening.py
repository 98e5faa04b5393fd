"""serve_udp under attack (issue 15.2) and its receive path under load (issue 11.4).

Self-addressed datagrams, byte budgets for the reply cache and the receive
queue, fair eviction, and the worker pool's task switches per datagram. The
reply cache's own tests are in ``test_sansio_internals.py``.
"""

from __future__ import annotations

import os
import socket
import struct

import pytest
import trio
import trio.testing

import trionet
from trionet import DEFAULT_REPLY_CACHE_BYTES, Datagram, UDPServer
from trionet.testing import VirtualNetwork

pytestmark = pytest.mark.net(ipv6=False, latency=0.001)


@pytest.fixture
def net(net: VirtualNetwork) -> VirtualNetwork:
    """The shared network (conftest), plus an attacker linked to both hosts."""
    net.add_host("attacker", "10.0.0.3")
    net.link("attacker", "server", latency=0.001)
    net.link("attacker", "client", latency=0.001)
    return net


def forge_udp(source_port: int, port: int, payload: bytes) -> None:
    """Send ``payload`` to 127.0.0.1:``port`` claiming to come from 127.0.0.1:``source_port``.

    A raw socket writes the UDP header itself (checksum 0: none, as IPv4 allows).
    """
    raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
    try:
        header = struct.pack("!HHHH", source_port, port, 8 + len(payload), 0)
        raw.sendto(header + payload, ("127.0.0.1", 0))
    finally:
        raw.close()


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="forging a source address needs a raw socket (root)"
)


# ------------------------------------------------- forged self-addressed datagrams


@needs_root
@pytest.mark.parametrize("host", ["127.0.0.1", None], ids=["bound", "dual-stack"])
async def test_a_datagram_forged_from_the_servers_own_address_is_not_handled(
    no_fd_leak: None, host: str | None
) -> None:
    # Before: an echo server answered itself, and the datagram looped for ever.
    seen: list[bytes] = []

    async def echo(datagram: Datagram) -> bytes:
        seen.append(datagram.data)
        return datagram.data

    async with trionet.open_udp_server(echo, 0, host=host) as server:
        forge_udp(server.port, server.port, b"loop")
        # The server handles datagrams in order: once a later one is answered,
        # the forged one was taken.
        async with trionet.open_udp_endpoint("127.0.0.1:0") as client:
            with trio.fail_after(5):
                reply = await client.request(b"after", ("127.0.0.1", server.port),
                                             match=trionet.match_bytes(0, 5))
        assert reply.data == b"after"
        assert seen.count(b"loop") == 0
        assert server.statistics().from_self_dropped == 1


async def test_a_peer_using_the_servers_port_number_is_still_answered(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Symmetric-port protocols (NTP's 123 to 123) use the same port on both
    # ends: only this host's own addresses are refused.
    async def echo(datagram: Datagram) -> bytes:
        return datagram.data

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(
                lambda task_status: trionet.serve_udp(echo, 123, task_status=task_status)
            )
        with net.host("client"):
            async with trionet.open_udp_endpoint("10.0.0.2:123") as client:
                reply = await client.request(b"time?", "10.0.0.1:123",
                                             match=trionet.match_bytes(0, 5))
        assert reply.data == b"time?"
        assert server.statistics().from_self_dropped == 0
        server.shutdown_nowait(grace=0)


# ---------------------------------------------------------------- reply cache


async def test_another_senders_flood_does_not_make_a_clients_retransmission_run_twice(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # The finding: 10,000 datagrams with other keys from one address evicted a
    # client's entry, so its retransmission ran a non-idempotent handler twice.
    runs: dict[bytes, int] = {}

    async def count(datagram: Datagram) -> bytes:
        runs[datagram.data] = runs.get(datagram.data, 0) + 1
        return b"done " + datagram.data

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(
                lambda task_status: trionet.serve_udp(
                    count, 53, request_key=lambda d: d.data, reply_cache_size=200,
                    task_status=task_status,
                )
            )
        with net.host("client"):
            client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await client.sendto(b"transfer 100", ("10.0.0.1", 53))
            assert await client.recv(100) == b"done transfer 100"
        with net.host("attacker"):
            attacker = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            for i in range(2_000):
                await attacker.sendto(b"key %d" % i, ("10.0.0.1", 53))
                await attacker.recv(100)
        with net.host("client"):
            await client.sendto(b"transfer 100", ("10.0.0.1", 53))  # its retransmission
            assert await client.recv(100) == b"done transfer 100"
        assert runs[b"transfer 100"] == 1
        assert server.statistics().duplicates_replayed == 1
        assert server.statistics().reply_cache_entries <= 200
        client.close()
        attacker.close()
        server.shutdown_nowait(grace=0)


# ------------------------------------------------------- receive queue in bytes


async def test_a_request_waiting_for_its_reply_queues_at_most_the_byte_budget(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # The finding: a client that only calls request() let another sender queue
    # 4,096 datagrams of 65,507 bytes.
    with net.host("client"):
        async with trionet.open_udp_endpoint("10.0.0.2:5000",
                                             receive_queue_bytes=1_000_000) as endpoint:
            async with trio.open_nursery() as nursery:

                async def flood_then_answer() -> None:
                    with net.host("attacker"):
                        attacker = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        for _ in range(200):
                            await attacker.sendto(b"x" * 60_000, ("10.0.0.2", 5000))
                            await trio.sleep(0.001)
                        attacker.close()
                    with net.host("server"):
                        answer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                        await answer.bind(("10.0.0.1", 53))
                        await answer.sendto(b"query: answered", ("10.0.0.2", 5000))
                        answer.close()

                nursery.start_soon(flood_then_answer)
                reply = await endpoint.request(b"query", "10.0.0.1:53",
                                               match=trionet.match_bytes(0, 5),
                                               policy=trionet.RetryPolicy(initial_timeout=30))
            assert reply.data == b"query: answered"
            stats = endpoint.statistics()
            assert stats.bytes_queued <= 1_000_000
            assert stats.datagrams_queued == 16
            assert stats.datagrams_dropped == 200 - 16
            # What was queued is still delivered, and the budget is freed.
            for _ in range(16):
                assert len((await endpoint.receive()).data) == 60_000
            assert endpoint.statistics().bytes_queued == 0


async def test_one_datagram_larger_than_the_byte_budget_is_let_in(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        async with trionet.open_udp_endpoint("10.0.0.2:5000", receive_queue_bytes=10) as endpoint:
            with net.host("attacker"):
                sender = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await sender.sendto(b"x" * 100, ("10.0.0.2", 5000))
                sender.close()
            assert (await endpoint.receive()).data == b"x" * 100


@pytest.mark.parametrize("value", [0, True, "1"])
async def test_receive_queue_bytes_must_be_a_positive_int(value: object) -> None:
    with pytest.raises((ValueError, TypeError), match="receive_queue_bytes"):
        async with trionet.open_udp_endpoint("127.0.0.1:0", receive_queue_bytes=value):  # type: ignore[arg-type]
            pass  # pragma: no cover


# ------------------------------------------------ the worker pool (issue 11.4)


class SwitchCounter(trio.abc.Instrument):
    def __init__(self) -> None:
        self.switches = 0

    def before_task_step(self, task: trio.lowlevel.Task) -> None:
        self.switches += 1


async def test_a_burst_is_served_with_far_fewer_task_steps_than_datagrams(no_fd_leak: None) -> None:
    # Before: a parked worker was woken for each queued datagram (about two
    # task steps per datagram); now a handler that never blocks serves a
    # burst back to back, one schedule point per batch.
    async def echo(datagram: Datagram) -> bytes:
        return datagram.data

    async with trionet.open_udp_server(echo, 0, host="127.0.0.1") as server:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setblocking(False)
        try:
            counter = SwitchCounter()
            answered = replies = 0
            with trio.fail_after(10):
                for _ in range(20):  # bursts of 50 (the receive buffers hold them all)
                    for i in range(50):
                        sender.sendto(b"%d" % i, ("127.0.0.1", server.port))
                    trio.lowlevel.add_instrument(counter)
                    try:
                        while server.statistics().datagrams_handled < answered + 50:
                            await trio.lowlevel.checkpoint()
                    finally:
                        trio.lowlevel.remove_instrument(counter)
                    answered += 50
                    while True:
                        try:
                            sender.recv(100)
                        except BlockingIOError:
                            break
                        replies += 1
        finally:
            sender.close()
    assert answered == 1_000
    assert replies == 1_000
    # Each step of this test's own task counts too (one per checkpoint above).
    assert counter.switches < 1_000 / 4, counter.switches


async def test_a_blocked_handler_does_not_hold_up_the_next_datagrams(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    release = trio.Event()

    async def handler(datagram: Datagram) -> bytes:
        if datagram.data == b"slow":
            await release.wait()
        return datagram.data

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(
                lambda task_status: trionet.serve_udp(handler, 53, task_status=task_status)
            )
        with net.host("client"):
            client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            await client.sendto(b"slow", ("10.0.0.1", 53))
            for i in range(5):
                await client.sendto(b"fast %d" % i, ("10.0.0.1", 53))
            got = [await client.recv(100) for _ in range(5)]
            assert got == [b"fast %d" % i for i in range(5)]
            assert server.statistics().handlers_active == 1
            release.set()
            assert await client.recv(100) == b"slow"
            client.close()
        server.shutdown_nowait(grace=0)


async def test_ten_thousand_large_replies_leave_the_process_under_the_reply_cache_bound(
    no_fd_leak: None,
) -> None:
    # The finding: 10,000 requests answered with 60 KB each, deduplicated, took
    # the process from 27 to 602 MiB for the 247 s reply lifetime. Loopback:
    # the client reads nothing (the system drops the replies it cannot hold).
    import gc
    import tracemalloc

    reply = b"r" * 60_000

    async def large(datagram: Datagram) -> bytes:
        return reply + datagram.data  # a new object per request, as a real handler's

    async with trionet.open_udp_server(large, 0, host="127.0.0.1",
                                       request_key=lambda d: d.data) as server:
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.setblocking(False)
        gc.collect()
        tracemalloc.start()
        try:
            before = tracemalloc.get_traced_memory()[0]
            with trio.fail_after(60):
                for batch in range(100):
                    for i in range(100):
                        sender.sendto(b"%08d" % (batch * 100 + i), ("127.0.0.1", server.port))
                    while server.statistics().datagrams_handled < (batch + 1) * 100:
                        await trio.lowlevel.checkpoint()
            gc.collect()
            grown = tracemalloc.get_traced_memory()[0] - before
        finally:
            tracemalloc.stop()
            sender.close()
        stats = server.statistics()
    assert stats.datagrams_handled == 10_000
    assert stats.reply_cache_entries == DEFAULT_REPLY_CACHE_BYTES // 60_008
    assert stats.reply_cache_bytes <= DEFAULT_REPLY_CACHE_BYTES
    # The cache's 16 MiB and 1 MiB for everything else.
    assert grown < DEFAULT_REPLY_CACHE_BYTES + 1024 * 1024, grown
