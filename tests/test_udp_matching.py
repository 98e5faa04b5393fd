"""Replies matched to their requests (issue 14.2, 15.7): the matchers, a required match, late replies."""

from __future__ import annotations

import functools
import random

import pytest
import trio
import trio.testing

import trionet
from trionet import (
    Datagram,
    EventLog,
    ReplyMatcher,
    RetryPolicy,
    UDPEndpoint,
    UDPServer,
    match_address_only,
    match_bytes,
    match_coap_message_id,
    match_dns_id,
    open_udp_endpoint,
    serve_udp,
)
from trionet.errors import RequestTimeout
from trionet.testing import VirtualNetwork

pytestmark = pytest.mark.net(ipv6=False, latency=0.010)

SERVER = "server:7"

# ------------------------------------------------------------- the matchers (sans-IO)


def test_match_dns_id_compares_the_first_two_bytes() -> None:
    query = b"\x12\x34\x01\x00" + b"rest of the query"
    assert match_dns_id.matches(query, b"\x12\x34\x81\x80answer")
    assert not match_dns_id.matches(query, b"\x12\x35\x81\x80answer")
    assert not match_dns_id.matches(query, b"\x12")  # too short to carry the id
    assert match_dns_id.key(query) == b"\x12\x34"
    assert (match_dns_id.offset, match_dns_id.length) == (0, 2)


def test_match_coap_message_id_compares_bytes_two_and_three() -> None:
    # RFC 7252 section 3: Ver/T/TKL, Code, then the 16-bit Message ID.
    confirmable = bytes([0x40, 0x01, 0xBE, 0xEF])
    ack = bytes([0x60, 0x45, 0xBE, 0xEF]) + b"\xffpayload"
    assert match_coap_message_id.matches(confirmable, ack)
    assert not match_coap_message_id.matches(confirmable, bytes([0x60, 0x45, 0xBE, 0xEE]))
    assert not match_coap_message_id.matches(confirmable, bytes([0x40, 0x01, 0x00, 0x00]))
    assert match_coap_message_id.key(confirmable) == b"\xbe\xef"


def test_match_bytes_compares_its_span_only() -> None:
    matcher = match_bytes(3, 2)
    assert matcher.matches(b"abcXYz", b"---XY")
    assert matcher.matches(b"abcXYz", b"---XY and more")
    assert not matcher.matches(b"abcXYz", b"---XZ")
    assert not matcher.matches(b"abcXYz", b"abcX")
    assert repr(matcher) == "<ReplyMatcher match_bytes(3, 2)>"
    assert matcher.matches(memoryview(b"abcXYz"), b"___XY")


def test_a_request_too_short_for_the_id_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="bytes 3 to 4 of the request, but the request has only 4"):
        match_bytes(3, 2).key(b"abcd")
    with pytest.raises(ValueError, match="match_dns_id"):
        match_dns_id.matches(b"\x01", b"\x01\x02")


@pytest.mark.parametrize(("offset", "length"), [(-1, 2), (0, 0), (0, -1), (True, 2), (0, 2.0)])
def test_match_bytes_rejects_bad_spans(offset: object, length: object) -> None:
    with pytest.raises(ValueError, match="must be"):
        match_bytes(offset, length)  # type: ignore[arg-type]


def test_match_address_only_accepts_any_payload() -> None:
    assert match_address_only.matches(b"", b"")
    assert match_address_only.matches(b"question", b"anything at all")
    assert isinstance(match_address_only, ReplyMatcher)


def test_the_matchers_are_public() -> None:
    assert trionet.match_dns_id is match_dns_id
    assert trionet.match_coap_message_id is match_coap_message_id
    assert trionet.match_bytes is match_bytes
    assert trionet.match_address_only is match_address_only
    assert trionet.ReplyMatcher is ReplyMatcher


# ------------------------------------------------------------------ on an endpoint


def client_sends(net: VirtualNetwork) -> int:
    return sum(1 for e in net.trace if e.event == "udp.send" and e.host == "client")


async def test_omitting_match_is_a_type_error_and_sends_nothing(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    with net.host("client"):
        async with open_udp_endpoint() as ep:
            with pytest.raises(TypeError, match="required keyword-only argument: 'match'"):
                await ep.request(b"x", SERVER)  # type: ignore[call-arg]
            with pytest.raises(TypeError, match="match must be a ReplyMatcher"):
                await ep.request(b"x", SERVER, match=None)  # type: ignore[arg-type]
            with pytest.raises(ValueError, match="the request has only 1 bytes"):
                await ep.request(b"x", SERVER, match=match_dns_id)
            assert ep.statistics().requests_active == 0
    assert client_sends(net) == 0


async def echo(datagram: Datagram) -> bytes:
    return datagram.data


async def start_echo(net: VirtualNetwork, nursery: trio.Nursery) -> UDPServer:
    with net.host("server"):
        server: UDPServer = await nursery.start(functools.partial(serve_udp, echo, 7))
    return server


async def test_a_matcher_picks_its_reply_among_other_datagrams_from_the_peer(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def stale_then_echo(datagram: Datagram) -> bytes:
        await server.endpoint.send(b"\x00\x07stale", datagram.address)  # another id first
        return datagram.data

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(functools.partial(serve_udp, stale_then_echo, 7))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                reply = await ep.request(b"\x00\x08query", SERVER, match=match_dns_id)
                assert reply.data == b"\x00\x08query"
                assert (await ep.receive()).data == b"\x00\x07stale"  # no request's: queued
        nursery.cancel_scope.cancel()


async def test_late_reply_memory_is_bounded_per_peer(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=0.010, loss=1.0)
    with net.host("client"):
        async with open_udp_endpoint() as ep:
            for n in range(40):
                with trio.move_on_after(0.001):
                    await ep.request(b"%04d" % n, SERVER, match=match_bytes(0, 4))
            [kept] = ep._late.values()
            assert len(kept) == 32
            # The 32 newest are remembered; the oldest were let go.
            peer = trionet.Address("10.0.0.1", 7)
            assert [any(match(Datagram(b"%04d" % n, peer)) for _, match in kept)
                    for n in (7, 8, 39)] == [False, True, True]


# --------------------------------------------------------------------- acceptance


async def test_a_thousand_requests_through_a_hostile_path_never_get_anothers_reply(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Issue 14.2's acceptance: 1,000 requests, each with a unique id, as the
    # docs' first example makes them (default policy, default one request per
    # peer) plus a matcher on the id, through a path that loses, delays,
    # duplicates and reorders, with about a third cancelled at random.
    net.link("client", "server", latency=0.020, jitter=0.400, loss=0.25, duplicate=0.25,
             reorder=0.2)
    rng = random.Random(14_2)
    handler_rng = random.Random(7)

    async def slow_echo(datagram: Datagram) -> bytes:
        await trio.sleep(handler_rng.uniform(0, 1.5))  # some beyond the first timeout
        return datagram.data + b" answered"

    policy = RetryPolicy(rng=random.Random(5).random)  # the default one, seeded
    log = EventLog()
    answered: dict[bytes, bytes] = {}
    cancelled = timed_out = 0
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(functools.partial(serve_udp, slow_echo, 7, max_concurrency=1000))
        with net.host("client"):
            async with open_udp_endpoint(observer=log) as endpoint:
                for n in range(1000):
                    request_id = b"%04d" % n
                    life = rng.uniform(0, 4) if rng.random() < 0.35 else float("inf")
                    with trio.move_on_after(life) as scope:
                        try:
                            reply = await endpoint.request(request_id + b" payload", SERVER,
                                                           policy=policy, match=match_bytes(0, 4))
                        except RequestTimeout:
                            timed_out += 1
                        else:
                            answered[request_id] = reply.data
                    if scope.cancelled_caught:
                        cancelled += 1
                leftovers: list[Datagram] = []
                with trio.move_on_after(10):  # stragglers are read: late ones dropped
                    while True:
                        leftovers.append(await endpoint.receive())
                stats = endpoint.statistics()
        nursery.cancel_scope.cancel()
    wrong = {rid: data for rid, data in answered.items() if data != rid + b" payload answered"}
    assert wrong == {}
    assert len(answered) + cancelled + timed_out == 1000
    assert len(answered) > 500  # the path and the cancellations were real
    assert cancelled > 150
    assert stats.retransmissions > 300
    assert stats.requests_completed == len(answered)
    # Every datagram received answered a request or was dropped as a late reply:
    # none reached the receive queue, none was taken for another's reply.
    assert stats.late_replies_dropped > 100
    assert leftovers == []
    assert stats.datagrams_received == stats.requests_completed + stats.late_replies_dropped
    assert stats.datagrams_queued == 0
    late_events = [e for e in log.of_kind("udp.dropped") if e.details["reason"] == "late reply"]
    assert len(late_events) == stats.late_replies_dropped


async def test_concurrent_requests_through_a_hostile_path_never_swap_replies(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    net.link("client", "server", latency=0.020, jitter=0.200, loss=0.2, duplicate=0.3,
             reorder=0.3)
    rng = random.Random(15)
    answered: dict[bytes, bytes] = {}
    policy = RetryPolicy(initial_timeout=0.3, max_attempts=8, rng=random.Random(2).random)

    async def one(ep: UDPEndpoint, n: int) -> None:
        request_id = bytes([n >> 8, n & 0xFF])
        life = rng.uniform(0, 1) if rng.random() < 0.3 else float("inf")
        with trio.move_on_after(life):
            try:
                reply = await ep.request(request_id + b"q%d" % n, SERVER, policy=policy,
                                         match=match_dns_id)
            except RequestTimeout:
                return
            answered[request_id + b"q%d" % n] = reply.data

    async with trio.open_nursery() as nursery:
        await start_echo(net, nursery)
        with net.host("client"):
            async with open_udp_endpoint(max_outstanding_per_peer=16) as ep:
                async with trio.open_nursery() as requests:
                    for n in range(500):
                        requests.start_soon(one, ep, n)
                        await trio.sleep(rng.uniform(0, 0.01))
                stats = ep.statistics()
        nursery.cancel_scope.cancel()
    assert all(reply == request for request, reply in answered.items())
    assert len(answered) > 250
    assert stats.late_replies_dropped > 0
