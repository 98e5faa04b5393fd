"""request(): retransmission, exact timing, dispatch to concurrent requests, Karn's rule, limits."""

from __future__ import annotations

import collections
import errno
import functools
import itertools
import random
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import trio
import trio.testing

from trionet import (
    Address,
    Datagram,
    EventLog,
    PeerUnreachable,
    RetryPolicy,
    RttEstimator,
    UDPEndpoint,
    UDPServer,
    match_address_only,
    match_bytes,
    open_udp_endpoint,
    serve_udp,
)
from trionet.errors import DatagramTooLarge, RequestTimeout
from trionet.testing import VirtualNetwork

LATENCY = 0.010
pytestmark = pytest.mark.net(latency=LATENCY)

SERVER = "server:7"
NO_JITTER = RetryPolicy(random_factor=1.0)


async def echo(datagram: Datagram) -> bytes:
    return datagram.data


async def start_server(
    net: VirtualNetwork,
    nursery: trio.Nursery,
    handler: Callable[[Datagram], Awaitable[bytes | None]] = echo,
    **kwargs: Any,
) -> UDPServer:
    with net.host("server"):
        server: UDPServer = await nursery.start(functools.partial(serve_udp, handler, 7, **kwargs))
    return server


def client_sends(net: VirtualNetwork) -> list[float]:
    """When the client put a datagram on the wire, per the network's trace."""
    return [e.time for e in net.trace if e.event == "udp.send" and e.host == "client"]


def by_id(request_id: bytes) -> Callable[[Datagram], bool]:
    return lambda datagram: datagram.data.split(b" ", 1)[0] == request_id


# ------------------------------------------------------------------- timing


@pytest.mark.parametrize(
    ("policy", "times"),
    [
        (NO_JITTER, [0, 2, 6, 14, 30, 62]),
        (RetryPolicy(rng=lambda: 0.5), [0, 2.5, 7.5, 17.5, 37.5, 77.5]),
        (RetryPolicy(initial_timeout=1, max_timeout=3, max_attempts=4, random_factor=1),
         [0, 1, 3, 6, 9]),
        (RetryPolicy(random_factor=1, deadline=10), [0, 2, 6, 10]),
    ],
    ids=["coap-without-spread", "coap-with-drawn-spread", "capped", "deadline"],
)
async def test_with_total_loss_a_request_gives_up_after_exactly_the_policys_attempts_and_times(
    autojump_clock: trio.testing.MockClock,
    net: VirtualNetwork,
    policy: RetryPolicy,
    times: list[float],
) -> None:
    net.link("client", "server", latency=LATENCY, loss=1.0)
    log = EventLog()
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                start = trio.current_time()
                with pytest.raises(RequestTimeout) as info:
                    await ep.request(b"anyone?", SERVER, policy=policy, match=by_id(b"anyone?"))
                assert trio.current_time() - start == pytest.approx(times[-1])
                assert info.value.attempts == len(times) - 1
                assert isinstance(info.value, trio.TooSlowError)
                assert ep.statistics().requests_timed_out == 1
        nursery.cancel_scope.cancel()
    sends = client_sends(net)
    assert [t - sends[0] for t in sends] == pytest.approx(times[:-1])
    kinds = [e.kind for e in log]
    assert kinds == ["udp.transmit"] + ["udp.retransmit"] * (len(times) - 2) + ["udp.give_up"]
    waits = [e.details["timeout"] for e in log if e.kind.endswith("transmit")]
    assert waits == pytest.approx([b - a for a, b in itertools.pairwise(times)])
    assert log.of_kind("udp.give_up")[0].details["attempts"] == len(times) - 1


async def test_a_reply_arrives_after_one_round_trip(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    log = EventLog()
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                start = trio.current_time()
                reply = await ep.request(b"ping", SERVER, match=match_bytes(0, 4))
                assert trio.current_time() - start == pytest.approx(2 * LATENCY)
                assert reply == Datagram(b"ping", Address("10.0.0.1", 7))
        nursery.cancel_scope.cancel()
    assert [e.kind for e in log] == ["udp.transmit", "udp.reply"]
    assert log.of_kind("udp.reply")[0].details["rtt"] == pytest.approx(2 * LATENCY)


async def test_a_late_reply_to_the_first_transmission_answers_the_request(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def slow(datagram: Datagram) -> bytes:
        await trio.sleep(2.5)  # longer than the first timeout (2 s)
        return datagram.data

    log = EventLog()
    async with trio.open_nursery() as nursery:
        server = await start_server(net, nursery, slow, request_key=lambda d: d.data)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                start = trio.current_time()
                await ep.request(b"slow", SERVER, policy=NO_JITTER, match=by_id(b"slow"))
                assert trio.current_time() - start == pytest.approx(2.5 + 2 * LATENCY)
        assert server.statistics().duplicates_dropped == 1  # the retransmission, handled once
        nursery.cancel_scope.cancel()
    assert [e.kind for e in log] == ["udp.transmit", "udp.retransmit", "udp.reply"]


# ------------------------------------------------------------- lossy networks


async def test_with_loss_of_three_tenths_a_thousand_requests_complete_each_handled_once(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, jitter=0.005, loss=0.3)
    runs: collections.Counter[bytes] = collections.Counter()

    async def count(datagram: Datagram) -> bytes:
        request_id = datagram.data.split(b" ")[0]
        runs[request_id] += 1
        return request_id + b" done"

    policy = RetryPolicy(initial_timeout=0.1, max_timeout=2.0, max_attempts=30,
                         rng=random.Random(1).random)
    replies: dict[bytes, bytes] = {}

    async def client(ep: UDPEndpoint, first: int) -> None:
        for n in range(first, first + 100):
            request_id = b"%04d" % n
            reply = await ep.request(request_id + b" work", SERVER, policy=policy,
                                     match=by_id(request_id))
            replies[request_id] = reply.data

    async with trio.open_nursery() as nursery:
        server = await start_server(net, nursery, count, request_key=lambda d: d.data.split(b" ")[0])
        with net.host("client"):
            async with open_udp_endpoint(max_outstanding_per_peer=10) as ep:
                async with trio.open_nursery() as clients:
                    for first in range(0, 1000, 100):
                        clients.start_soon(client, ep, first)
                stats = ep.statistics()
        server_stats = server.statistics()
        nursery.cancel_scope.cancel()
    assert len(replies) == 1000
    assert all(reply == request_id + b" done" for request_id, reply in replies.items())
    assert set(runs) == set(replies)
    assert set(runs.values()) == {1}  # exactly once per request id
    assert stats.requests_completed == 1000
    assert stats.retransmissions > 300  # loss really happened...
    assert server_stats.duplicates_replayed > 100  # ...and lost replies were replayed


async def test_duplicated_datagrams_run_the_handler_once(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, duplicate=1.0)
    runs: list[bytes] = []

    async def record(datagram: Datagram) -> bytes:
        runs.append(datagram.data)
        return datagram.data

    log = EventLog()
    async with trio.open_nursery() as nursery:
        server = await start_server(net, nursery, record, request_key=lambda d: d.data,
                                    observer=log)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                for i in range(5):
                    await ep.request(b"%d" % i, SERVER, match=by_id(b"%d" % i))
                await trio.sleep(1)
                late = ep.statistics()
        stats = server.statistics()
        nursery.cancel_scope.cancel()
    assert runs == [b"0", b"1", b"2", b"3", b"4"]
    # Each duplicate was replayed, or dropped while its first copy's reply was sent.
    assert stats.duplicates_replayed + stats.duplicates_dropped == 5
    assert len(log.of_kind("udp.duplicate_replayed")) == stats.duplicates_replayed > 0
    # Duplicated replies that no request claimed are late replies: dropped, counted.
    assert late.late_replies_dropped > 0
    assert late.datagrams_queued == 0


# --------------------------------------------------------------- concurrency


async def test_500_concurrent_requests_on_one_endpoint_each_get_their_own_answer_virtual(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, jitter=0.020)  # replies come back shuffled
    answers: dict[int, bytes] = {}

    async def one(ep: UDPEndpoint, n: int) -> None:
        request_id = b"%03d" % n
        answers[n] = (await ep.request(request_id + b" payload", SERVER,
                                       match=by_id(request_id))).data

    async with trio.open_nursery() as nursery:
        await start_server(net, nursery, max_concurrency=500)
        with net.host("client"):
            async with open_udp_endpoint(max_outstanding_per_peer=None) as ep:
                async with trio.open_nursery() as requests:
                    for n in range(500):
                        requests.start_soon(one, ep, n)
                assert ep.statistics().retransmissions == 0
        nursery.cancel_scope.cancel()
    assert answers == {n: b"%03d payload" % n for n in range(500)}


async def test_500_concurrent_requests_on_one_endpoint_each_get_their_own_answer_loopback(
    no_fd_leak: None,
) -> None:
    answers: dict[int, bytes] = {}
    policy = RetryPolicy(initial_timeout=0.2, max_attempts=20, max_timeout=1.0)

    async def one(ep: UDPEndpoint, n: int, port: int) -> None:
        request_id = b"%03d" % n
        reply = await ep.request(request_id + b" payload", ("127.0.0.1", port), policy=policy,
                                 match=by_id(request_id))
        answers[n] = reply.data

    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            server: UDPServer = await nursery.start(functools.partial(serve_udp, echo, 0,
                                                                      host="127.0.0.1"))
            async with open_udp_endpoint("127.0.0.1:0", max_outstanding_per_peer=None) as ep:
                async with trio.open_nursery() as requests:
                    for n in range(500):
                        requests.start_soon(one, ep, n, server.port)
                assert ep.statistics().requests_completed == 500
            await server.shutdown(grace=0)
    assert answers == {n: b"%03d payload" % n for n in range(500)}


async def test_random_cancellations_never_steal_another_requests_reply(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Requests come and go while others wait: drivers are cancelled mid-turn,
    # turns are handed over, and every survivor still gets its own reply.
    net.link("client", "server", latency=LATENCY, jitter=0.050, loss=0.2)
    rng = random.Random(3)
    answered: dict[int, bytes] = {}
    cancelled: set[int] = set()
    policy = RetryPolicy(initial_timeout=0.1, max_attempts=40, max_timeout=0.5,
                         rng=random.Random(4).random)

    async def one(ep: UDPEndpoint, n: int, life: float | None) -> None:
        request_id = b"%03d" % n
        with trio.move_on_after(life if life is not None else float("inf")) as scope:
            reply = await ep.request(request_id, SERVER, policy=policy, match=by_id(request_id))
            answered[n] = reply.data
        if scope.cancelled_caught:
            cancelled.add(n)

    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint(max_outstanding_per_peer=None) as ep:
                async with trio.open_nursery() as requests:
                    for n in range(300):
                        life = rng.choice([None, None, rng.uniform(0, 0.3)])
                        requests.start_soon(one, ep, n, life)
                        if rng.random() < 0.3:
                            await trio.sleep(rng.uniform(0, 0.02))
                stats = ep.statistics()
        nursery.cancel_scope.cancel()
    assert answered.keys().isdisjoint(cancelled)
    assert len(answered) + len(cancelled) == 300
    assert all(answer == b"%03d" % n for n, answer in answered.items())
    assert len(cancelled) > 30
    assert stats.requests_active == 0


async def test_cancelling_a_request_stops_its_retransmissions_at_once(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=LATENCY, loss=1.0)
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                with trio.move_on_after(3):  # during the second wait (2 s to 6 s)
                    await ep.request(b"x", SERVER, policy=NO_JITTER, match=by_id(b"x"))
                await trio.sleep(100)
                assert ep.statistics().requests_active == 0
        nursery.cancel_scope.cancel()
    sends = client_sends(net)
    assert [t - sends[0] for t in sends] == [0, 2]


async def test_a_reply_that_comes_after_its_request_was_cancelled_is_dropped_and_counted(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Issue 14.2: a late reply used to wait in the receive queue (and, without
    # a match, to answer the next request).
    async def slow(datagram: Datagram) -> bytes:
        await trio.sleep(3 if datagram.data == b"too slow" else 0)
        return datagram.data

    log = EventLog()
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery, slow)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                with trio.move_on_after(1):
                    await ep.request(b"too slow", SERVER, policy=RetryPolicy(initial_timeout=5),
                                     match=by_id(b"too"))
                await trio.sleep(5)  # the late reply is in the socket's buffer
                # Something the finished request's match does not accept still arrives.
                await ep.send(b"other", SERVER)
                assert (await ep.receive()).data == b"other"
                stats = ep.statistics()
                assert (stats.datagrams_received, stats.late_replies_dropped) == (2, 1)
                assert stats.datagrams_queued == 0
                assert log.of_kind("udp.dropped")[0].details["reason"] == "late reply"
        nursery.cancel_scope.cancel()


async def test_a_late_reply_after_the_window_reaches_receive(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # The window is twice the latest wait (2 x 1 s here, counted from the
    # cancellation at 0.5 s): a reply at 3 s is past it.
    async def slow(datagram: Datagram) -> bytes:
        await trio.sleep(3)
        return datagram.data

    async with trio.open_nursery() as nursery:
        await start_server(net, nursery, slow)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                with trio.move_on_after(0.5):
                    await ep.request(b"q", SERVER, policy=RetryPolicy(initial_timeout=1,
                                     random_factor=1), match=by_id(b"q"))
                assert (await ep.receive()).data == b"q"
                assert ep.statistics().late_replies_dropped == 0
        nursery.cancel_scope.cancel()


async def test_a_request_cancelled_before_its_first_transmission_sends_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        async with open_udp_endpoint() as ep:
            with trio.CancelScope() as scope:
                scope.cancel()
                await ep.request(b"x", "10.0.0.1:7", match=by_id(b"x"))
            assert scope.cancelled_caught
    assert client_sends(net) == []


# ---------------------------------------------------------------- per-peer cap


async def test_one_request_per_peer_is_outstanding_by_default(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def slow(datagram: Datagram) -> bytes:
        await trio.sleep(1)
        return datagram.data

    log = EventLog()
    finished: list[tuple[bytes, float]] = []

    async def one(ep: UDPEndpoint, data: bytes) -> None:
        await ep.request(data, SERVER, match=lambda d: d.data == data)
        finished.append((data, trio.current_time()))

    async with trio.open_nursery() as nursery:
        await start_server(net, nursery, slow)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                start = trio.current_time()
                async with trio.open_nursery() as requests:
                    for data in (b"a", b"b", b"c"):
                        requests.start_soon(one, ep, data)
                        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    # One at a time, in order: each starts when the one before it has its reply.
    round_trip = 1 + 2 * LATENCY
    assert [data for data, _ in finished] == [b"a", b"b", b"c"]
    assert [t - start for _, t in finished] == pytest.approx(
        [round_trip, 2 * round_trip, 3 * round_trip])
    assert len(log.of_kind("udp.peer_limit")) == 2
    sends = client_sends(net)
    assert [t - sends[0] for t in sends] == pytest.approx([0, round_trip, 2 * round_trip])


async def test_requests_to_different_peers_do_not_wait_for_each_other(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.add_host("other", "10.0.0.3")
    net.link("client", "other", latency=LATENCY)
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("other"):
            await nursery.start(functools.partial(serve_udp, echo, 7))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                start = trio.current_time()
                async with trio.open_nursery() as requests:
                    requests.start_soon(functools.partial(ep.request, b"1", SERVER, match=by_id(b"1")))
                    requests.start_soon(functools.partial(ep.request, b"2", "other:7", match=by_id(b"2")))
                assert trio.current_time() - start == pytest.approx(2 * LATENCY)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------------ matching


async def test_match_picks_the_reply_and_other_datagrams_go_to_the_queue(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def chatty(datagram: Datagram) -> bytes:
        await server.endpoint.send(b"noise", datagram.address)
        return b"answer"

    async with trio.open_nursery() as nursery:
        server = await start_server(net, nursery, chatty)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                reply = await ep.request(b"q", SERVER, match=lambda d: d.data == b"answer")
                assert reply.data == b"answer"
                assert (await ep.receive()).data == b"noise"
        nursery.cancel_scope.cancel()


async def test_an_exception_from_match_is_raised_by_the_request(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    def broken(datagram: Datagram) -> bool:
        raise KeyError("bad match")

    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                with pytest.raises(KeyError, match="bad match"):
                    await ep.request(b"q", SERVER, match=broken)
                assert (await ep.receive()).data == b"q"  # unclaimed, so queued
        nursery.cancel_scope.cancel()


async def test_a_truncated_datagram_never_answers_a_request(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def big(datagram: Datagram) -> bytes:
        return b"x" * 100

    async with trio.open_nursery() as nursery:
        await start_server(net, nursery, big)
        with net.host("client"):
            async with open_udp_endpoint(max_receive_size=50) as ep:
                with pytest.raises(RequestTimeout):
                    await ep.request(b"q", SERVER, policy=RetryPolicy(max_attempts=1),
                                     match=match_address_only)
                cut = await ep.receive()
                assert cut.truncated
                assert len(cut.data) == 50
        nursery.cancel_scope.cancel()


async def test_a_request_raises_datagram_too_large_before_sending(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        async with open_udp_endpoint() as ep:
            with pytest.raises(DatagramTooLarge):
                await ep.request(b"x" * 65508, "10.0.0.1:7", match=match_bytes(0, 2))
    assert client_sends(net) == []


async def test_a_connected_request_to_a_closed_port_raises_peer_unreachable(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        async with open_udp_endpoint(remote=SERVER) as ep:
            start = trio.current_time()
            with pytest.raises(PeerUnreachable):
                await ep.request(b"anyone?", match=by_id(b"anyone?"))
            assert trio.current_time() - start == pytest.approx(2 * LATENCY)


async def test_closing_the_endpoint_fails_waiting_requests(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    failures: list[BaseException] = []

    async def wait(ep: UDPEndpoint) -> None:
        try:
            await ep.request(b"x", "10.0.0.1:9", match=by_id(b"x"))
        except trio.ClosedResourceError as exc:
            failures.append(exc)

    with net.host("client"):
        async with open_udp_endpoint(max_outstanding_per_peer=2) as ep, trio.open_nursery() as nursery:
            for _ in range(3):  # two waiting for replies, one for a turn
                nursery.start_soon(wait, ep)
            await trio.sleep(1)
            ep.close()
    assert len(failures) == 3


# ------------------------------------------------------------------ RTT estimate


async def test_karns_rule_only_unretransmitted_requests_feed_the_estimator(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    seen: collections.Counter[bytes] = collections.Counter()

    async def drop_first_copy(datagram: Datagram) -> bytes | None:
        seen[datagram.data] += 1
        if datagram.data.startswith(b"lossy") and seen[datagram.data] == 1:
            return None  # as if lost: the client must retransmit
        return datagram.data

    rtt = RttEstimator(min_rto=0.05)
    log = EventLog()
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery, drop_first_copy)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                await ep.request(b"clean", SERVER, policy=NO_JITTER, rtt=rtt, match=by_id(b"clean"))
                assert rtt.samples == 1
                assert rtt.srtt == pytest.approx(2 * LATENCY)
                assert rtt.rto == pytest.approx(0.06)  # SRTT + 4 * RTTVAR = 0.02 + 4 * 0.01
                first_timeouts = [e.details["timeout"] for e in log.of_kind("udp.transmit")]
                assert first_timeouts == [2.0]  # a new estimator defers to the policy

                await ep.request(b"lossy", SERVER, policy=NO_JITTER, rtt=rtt, match=by_id(b"lossy"))
                assert rtt.samples == 1  # ambiguous sample ignored
                assert rtt.rto == pytest.approx(2 * 0.06)  # backed off after the expiry
                assert log.of_kind("udp.transmit")[1].details["timeout"] == pytest.approx(0.06)
        nursery.cancel_scope.cancel()


async def test_a_new_estimator_does_not_override_the_policys_initial_timeout(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Issue 14.9: RttEstimator's RFC 6298 start (1 s) used to replace 0.2 s.
    net.link("client", "server", latency=LATENCY, loss=1.0)
    rtt = RttEstimator(min_rto=0.05)
    log = EventLog()
    policy = RetryPolicy(initial_timeout=0.2, random_factor=1.0, max_attempts=2)
    with net.host("client"):
        async with open_udp_endpoint(observer=log) as ep:
            with pytest.raises(RequestTimeout):
                await ep.request(b"x", SERVER, policy=policy, rtt=rtt, match=by_id(b"x"))
            assert rtt.backed_off
            assert rtt.rto == pytest.approx(0.8)  # 2 * the 0.4 s wait that expired
            with pytest.raises(RequestTimeout):
                await ep.request(b"y", SERVER, policy=policy, rtt=rtt, match=by_id(b"y"))
    waits = [e.details["timeout"] for e in log.of_kind("udp.transmit")]
    assert waits == pytest.approx([0.2, 0.8])  # then the backed-off RTO is kept (Karn)


async def test_the_first_wait_from_an_estimator_is_its_rto_times_the_policys_spread(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    rtt = RttEstimator(min_rto=0.05)
    rtt.sample(0.1)  # rto = 0.1 + 4 * 0.05 = 0.3
    log = EventLog()
    policy = RetryPolicy(initial_timeout=5.0, random_factor=1.5, rng=lambda: 0.5)
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as ep:
                await ep.request(b"x", SERVER, policy=policy, rtt=rtt, match=by_id(b"x"))
        nursery.cancel_scope.cancel()
    [sent] = log.of_kind("udp.transmit")
    assert sent.details["timeout"] == pytest.approx(0.3 * 1.25)


# ------------------------------------------------------- a request waiting its turn


async def test_a_queued_request_draws_its_first_wait_from_the_estimator_when_its_turn_comes(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # One request at a time to the peer: the second waits while the first
    # gives the estimator its first sample (a 20 ms round trip). The second's
    # first wait then comes from that sample, not from the policy's 2 s, which
    # is all a new estimator knew when the second request was made.
    rtt = RttEstimator(min_rto=0.05)
    log = EventLog()
    async with trio.open_nursery() as nursery:
        await start_server(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint(max_outstanding_per_peer=1, observer=log) as ep, \
                    trio.open_nursery() as requests:
                for name in (b"first", b"second"):
                    requests.start_soon(functools.partial(
                        ep.request, name, SERVER, policy=NO_JITTER, rtt=rtt, match=by_id(name)))
        nursery.cancel_scope.cancel()
    waits = [e.details["timeout"] for e in log.of_kind("udp.transmit")]
    # RFC 6298 after one sample R = 20 ms: SRTT + 4 x RTTVAR = R + 4 x R/2
    assert waits == [2.0, pytest.approx(0.02 + 4 * 0.01)]
    assert rtt.samples == 2


# ------------------------------------------------- a request whose send failed


async def test_a_request_that_sent_nothing_leaves_no_late_reply_memory(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork, monkeypatch: pytest.MonkeyPatch
) -> None:
    # With match_address_only, the late-reply memory drops every datagram
    # from the peer for its window; a request whose only send failed can get
    # no reply, so the peer's next datagram must reach receive().
    with net.host("server"):
        peer = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        await peer.bind(("10.0.0.1", 7))
    with peer, net.host("client"):
        async with open_udp_endpoint("10.0.0.2:5000") as ep:

            async def no_buffer_space(*args: object) -> None:
                raise OSError(errno.ENOBUFS, "No buffer space available")

            monkeypatch.setattr(ep, "_transmit", no_buffer_space)
            with pytest.raises(OSError, match="No buffer space"):
                await ep.request(b"hello", "10.0.0.1:7", match=match_address_only)
            monkeypatch.undo()
            await peer.sendto(b"news", ("10.0.0.2", 5000))
            with trio.fail_after(1):
                assert (await ep.receive()).data == b"news"
            assert ep.statistics().late_replies_dropped == 0
