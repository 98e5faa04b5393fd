"""UDP under loss and peers that vanish during a UDP exchange.

The loss scenario is ``tests/soak/udp.py`` (CI form: the full 10,000
requests; long form ``python -m tests.soak --long``). The vanishing peers
run on the virtual network (``net``) with their loopback literals: it answers a
closed port with an ICMP "port unreachable" as Linux does, and keeps
``autojump_clock`` exact (a mock clock must not jump while a kernel delivers).
"""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing

from tests.soak.common import count_tasks
from tests.soak.udp import run_request_cancellations, run_udp_under_loss
from trionet import Datagram, PeerUnreachable, RetryPolicy, match_bytes, open_udp_endpoint, open_udp_server
from trionet.errors import RequestTimeout
from trionet.testing import VirtualNetwork

REQUESTS = 10_000
ROUNDS = 20
QUICK = RetryPolicy(initial_timeout=0.5, max_attempts=4, random_factor=1.0)


async def test_ten_thousand_requests_at_20_percent_loss_and_5_percent_duplication_run_once_each(
    autojump_clock: trio.testing.MockClock,
) -> None:
    report = await run_udp_under_loss(requests=REQUESTS, loss=0.2, duplicate=0.05, seed=8)
    assert report.problems == []
    assert report.replies == REQUESTS
    assert report.handler_runs == REQUESTS
    assert report.handled_twice == 0
    # Loss and duplication really happened, and the reply cache answered them.
    assert report.datagrams_dropped > REQUESTS // 5
    assert report.datagrams_delivered > report.datagrams_sent - report.datagrams_dropped
    assert report.retransmissions > REQUESTS // 5
    assert report.duplicates_replayed > REQUESTS // 10


async def test_without_duplicate_suppression_the_same_loss_runs_handlers_twice(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The control for the test above: its check can fail.
    report = await run_udp_under_loss(requests=1000, loss=0.2, duplicate=0.05, seed=8, deduplicate=False)
    assert report.handled_twice > 50
    assert any("more than once" in problem for problem in report.problems)


@pytest.mark.net(default_host="client")
async def test_a_client_that_vanishes_mid_exchange_leaves_the_server_serving(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    release = trio.Event()
    handled: list[bytes] = []

    async def slow_echo(datagram: Datagram) -> bytes:
        handled.append(datagram.data)
        if datagram.data != b"good":
            await release.wait()
        return datagram.data

    tasks_before = count_tasks()
    with trio.fail_after(60):
        async with open_udp_server(slow_echo, 0, host="127.0.0.1") as server:
            for round_ in range(ROUNDS):
                release = trio.Event()
                async with open_udp_endpoint("127.0.0.1:0") as vanishing:
                    with trio.move_on_after(0.1):
                        await vanishing.request(
                            b"%d" % round_, ("127.0.0.1", server.port),
                            match=match_bytes(0, len(b"%d" % round_)),
                        )
                # Gone: the reply goes to a closed port (ICMP port unreachable).
                release.set()
                async with open_udp_endpoint("127.0.0.1:0") as good:
                    reply = await good.request(
                        b"good", ("127.0.0.1", server.port), policy=QUICK, match=match_bytes(0, 4)
                    )
                    assert reply.data == b"good"
            statistics = server.statistics()
    assert statistics.handler_errors == 0
    assert len(handled) == 2 * ROUNDS
    assert count_tasks() == tasks_before
    assert net.statistics().sockets == 0
    # The replies to the vanished clients met closed ports.
    assert sum(event.event == "udp.unreachable" for event in net.trace) >= ROUNDS
    assert [r.getMessage() for r in caplog.records if r.levelno > logging.WARNING] == []


@pytest.mark.net(default_host="client")
@pytest.mark.parametrize("connected", [True, False], ids=["connected", "unconnected"])
async def test_a_server_that_vanishes_mid_exchange_ends_the_request_with_a_typed_error(
    connected: bool, net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    tasks_before = count_tasks()
    with trio.fail_after(600):
        for _ in range(ROUNDS):
            server = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_DGRAM)
            await server.bind(("127.0.0.1", 0))
            address = server.getsockname()

            async def receive_then_vanish(server: trio.socket.SocketType = server) -> None:
                with server:
                    await server.recvfrom(2048)
                # Closed without a reply: later transmissions meet a closed port.

            async with trio.open_nursery() as nursery:
                nursery.start_soon(receive_then_vanish)
                remote = address if connected else None
                async with open_udp_endpoint("127.0.0.1:0", remote) as client:
                    target = None if connected else address
                    if connected:
                        # The kernel reports the ICMP error to a connected socket.
                        with pytest.raises(PeerUnreachable):
                            await client.request(b"hello?", target, policy=QUICK, match=match_bytes(0, 6))
                    else:
                        with pytest.raises(RequestTimeout) as raised:
                            await client.request(b"hello?", target, policy=QUICK, match=match_bytes(0, 6))
                        assert raised.value.attempts == QUICK.max_attempts
    assert count_tasks() == tasks_before
    assert net.statistics().sockets == 0


async def test_a_thousand_requests_cancelled_during_retransmission_leave_no_fd_or_task() -> None:
    # Issue 12.7, real loopback and the real clock.
    report = await run_request_cancellations(requests=1000, seed=3)
    assert report.problems == []
    assert report.cancelled == 1000
    assert report.transmissions > 1000  # cancellations really came during retransmission
    assert report.fds_after == report.fds_before
    assert report.tasks_after == report.tasks_before
