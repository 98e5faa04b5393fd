"""serve_udp: handlers per datagram, bounded concurrency, errors, shutdown, duplicate suppression."""

from __future__ import annotations

import functools
import logging
import socket

import pytest
import trio
import trio.testing

from trionet import (
    Address,
    Datagram,
    EventLog,
    ProtocolError,
    RetryPolicy,
    UDPServer,
    match_address_only,
    match_bytes,
    open_udp_endpoint,
    open_udp_server,
    serve_udp,
)
from trionet.errors import RequestTimeout
from trionet.testing import VirtualNetwork

from .conftest import trionet_records

pytestmark = pytest.mark.net(ipv6=False, latency=0.001)

ONE_SHOT = RetryPolicy(max_attempts=1, initial_timeout=1.0, random_factor=1.0)
# The server tests make one request at a time, to peers that answer with other
# payloads: the sender address is all that matches (see match_address_only).
ANY = match_address_only


async def echo(datagram: Datagram) -> bytes:
    return datagram.data


def same_data(data: bytes, datagram: Datagram) -> bool:
    return datagram.data == data


# ------------------------------------------------------------------ real sockets


async def test_a_dual_stack_server_answers_ipv4_and_ipv6_clients(no_fd_leak: None) -> None:
    log = EventLog()
    async with open_udp_server(echo, 0, observer=log) as server:
        assert [address.host for address in server.addresses] == ["::"]
        for host in ("127.0.0.1", "::1"):
            async with open_udp_endpoint(f"[{host}]:0" if ":" in host else f"{host}:0") as ep:
                with trio.fail_after(5):
                    reply = await ep.request(b"hi " + host.encode(), (host, server.port),
                                             match=match_bytes(0, 3))
                assert reply == Datagram(b"hi " + host.encode(), Address(host, server.port))
        # The reply can arrive before the handler's task has finished and counted.
        await trio.testing.wait_all_tasks_blocked()
        assert server.statistics().datagrams_handled == 2
    assert [e.kind for e in log if e.kind.startswith("udp.shutdown")] == [
        "udp.shutdown.begin", "udp.shutdown.done",
    ]
    assert log.of_kind("udp.listening")[0].details["addresses"] == (f"[::]:{server.port}",)


async def test_serve_udp_is_started_by_a_nursery_and_reports_its_port(no_fd_leak: None) -> None:
    async with trio.open_nursery() as nursery:
        server: UDPServer = await nursery.start(
            functools.partial(serve_udp, echo, 0, host="127.0.0.1"))
        assert server.addresses == (Address("127.0.0.1", server.port),)
        assert repr(server) == f"<UDPServer 127.0.0.1:{server.port} active=0>"
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            client.sendto(b"plain socket", ("127.0.0.1", server.port))
            client.setblocking(False)
            await trio.lowlevel.wait_readable(client)
            assert client.recv(100) == b"plain socket"
        await server.shutdown()
    assert server.endpoint.statistics().datagrams_received == 1


# --------------------------------------------------------------------- handlers


async def test_a_handler_returning_none_sends_no_reply(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def silent(datagram: Datagram) -> None:
        return None

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server = await nursery.start(serve_udp, silent, 7)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                with pytest.raises(RequestTimeout):
                    await ep.request(b"x", "server:7", policy=ONE_SHOT, match=match_address_only)
        assert server.statistics().datagrams_handled == 1
        nursery.cancel_scope.cancel()


async def test_a_handler_error_is_logged_with_the_peer_and_the_server_keeps_serving(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    async def fragile(datagram: Datagram) -> bytes:
        if datagram.data == b"boom":
            raise RuntimeError("handler bug")
        return datagram.data

    log = EventLog()
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server = await nursery.start(functools.partial(serve_udp, fragile, 7, observer=log))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                with pytest.raises(RequestTimeout):
                    await ep.request(b"boom", "server:7", policy=ONE_SHOT, match=match_address_only)
                assert (await ep.request(b"fine", "server:7", match=match_address_only)).data == b"fine"
        assert server.statistics().handler_errors == 1
        nursery.cancel_scope.cancel()
    [record] = trionet_records(caplog)
    assert record.levelno == logging.ERROR
    assert "10.0.0.2:49152" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    [event] = log.of_kind("udp.handler_error")
    assert event.details["peer"] == Address("10.0.0.2", 49152)


async def test_a_framing_error_is_the_peers_fault_and_logged_without_traceback(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork, caplog: pytest.LogCaptureFixture
) -> None:
    async def strict_parser(datagram: Datagram) -> bytes:
        raise ProtocolError("bad header", 0)

    caplog.set_level(logging.DEBUG, logger="trionet")
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(serve_udp, strict_parser, 7)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                await ep.send(b"garbage", "server:7")
                await trio.sleep(1)
        nursery.cancel_scope.cancel()
    [record] = trionet_records(caplog)
    assert record.levelno == logging.DEBUG  # a peer's doing (issue 19.1)
    assert record.exc_info is None
    assert "bad header" in record.getMessage()


async def test_strict_mode_propagates_a_handler_error_and_stops_the_server(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def fragile(datagram: Datagram) -> bytes:
        raise RuntimeError("handler bug")

    with pytest.RaisesGroup(pytest.RaisesExc(RuntimeError, match="handler bug"),
                            flatten_subgroups=True):
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                await nursery.start(functools.partial(serve_udp, fragile, 7, strict=True))
            with net.host("client"):
                async with open_udp_endpoint() as ep:
                    await ep.send(b"boom", "server:7")
                    await trio.sleep_forever()


async def test_at_most_max_concurrency_handlers_run_at_once(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    running = peak = 0

    async def slow(datagram: Datagram) -> bytes:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await trio.sleep(1)
        running -= 1
        return datagram.data

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server = await nursery.start(functools.partial(serve_udp, slow, 7, max_concurrency=3))
        with net.host("client"):
            async with open_udp_endpoint(max_outstanding_per_peer=None) as ep:
                start = trio.current_time()
                async with trio.open_nursery() as requests:
                    for i in range(10):
                        requests.start_soon(functools.partial(
                            ep.request, b"%d" % i, "server:7", policy=RetryPolicy(initial_timeout=10),
                            match=functools.partial(same_data, b"%d" % i)))
                elapsed = trio.current_time() - start
        assert server.statistics().datagrams_handled == 10
        nursery.cancel_scope.cancel()
    assert peak == 3
    assert elapsed == pytest.approx(4 + 0.002)  # ceil(10 / 3) rounds of 1 s, plus a round trip


async def test_truncated_datagrams_are_dropped_without_running_the_handler(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    seen: list[bytes] = []

    async def record(datagram: Datagram) -> bytes:
        seen.append(datagram.data)
        return b"ok"

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server = await nursery.start(functools.partial(serve_udp, record, 7,
                                                           max_receive_size=10))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                await ep.send(b"x" * 11, "server:7")
                assert (await ep.request(b"short", "server:7", match=match_address_only)).data == b"ok"
        assert server.endpoint.statistics().datagrams_truncated == 1
        nursery.cancel_scope.cancel()
    assert seen == [b"short"]


# -------------------------------------------------------------------- shutdown


async def test_shutdown_lets_running_handlers_reply_and_takes_no_new_datagrams(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    started = trio.Event()
    handled: list[bytes] = []

    async def slow(datagram: Datagram) -> bytes:
        handled.append(datagram.data)
        started.set()
        await trio.sleep(5)
        return b"finished"

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(serve_udp, slow, 7)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                nursery.start_soon(functools.partial(ep.send, b"first", "server:7"))
                await started.wait()
                server.shutdown_nowait(grace=10)
                assert server.statistics().shutting_down
                await ep.send(b"too late", "server:7")
                assert (await ep.receive()).data == b"finished"
                await server.shutdown()
                assert server.endpoint.statistics().datagrams_received == 1
    assert handled == [b"first"]


async def test_handlers_still_running_when_the_grace_period_ends_are_cancelled(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    cancelled = trio.Event()

    async def stuck(datagram: Datagram) -> bytes:
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    log = EventLog()
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(functools.partial(serve_udp, stuck, 7,
                                                                      observer=log))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                await ep.send(b"x", "server:7")
                await trio.sleep(1)
                start = trio.current_time()
                await server.shutdown(grace=3)
                assert trio.current_time() - start == pytest.approx(3)
    assert cancelled.is_set()
    [expired] = log.of_kind("udp.shutdown.grace_expired")
    assert expired.details["cancelled"] == 1
    with pytest.raises(trio.ClosedResourceError):
        await server.endpoint.send(b"x", "10.0.0.2:9")


async def test_a_second_shutdown_can_only_bring_the_deadline_closer(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def stuck(datagram: Datagram) -> None:
        await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(serve_udp, stuck, 7)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                await ep.send(b"x", "server:7")
                await trio.sleep(1)
        start = trio.current_time()
        server.shutdown_nowait(grace=10)
        server.shutdown_nowait(grace=20)
        server.shutdown_nowait(grace=2)
        await server.shutdown(grace=30)
        assert trio.current_time() - start == pytest.approx(2)
    with pytest.raises(ValueError, match="grace"):
        server.shutdown_nowait(grace=-1)


async def test_cancelling_a_shutdown_call_cancels_only_the_waiting(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    async def slow(datagram: Datagram) -> bytes:
        await trio.sleep(5)
        return b"done"

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(serve_udp, slow, 7)
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                await ep.send(b"x", "server:7")
                await trio.sleep(1)
                with trio.move_on_after(1):
                    await server.shutdown(grace=10)
                assert server.statistics().shutting_down
                assert (await ep.receive()).data == b"done"  # the handler went on
    assert trio.current_time() == pytest.approx(5 + 0.002)  # the handler's 5 s, then the reply


async def test_cancelling_the_surrounding_scope_stops_the_server_at_once(no_fd_leak: None) -> None:
    async with trio.open_nursery() as nursery:
        server: UDPServer = await nursery.start(
            functools.partial(serve_udp, echo, 0, host="127.0.0.1"))
        nursery.cancel_scope.cancel()
    with pytest.raises(trio.ClosedResourceError):
        server.endpoint.receive_nowait()


# ---------------------------------------------------------- duplicate suppression


async def test_a_retransmitted_request_gets_the_cached_reply_until_the_lifetime_ends(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    runs = 0

    async def counter(datagram: Datagram) -> bytes:
        nonlocal runs
        runs += 1
        return b"run %d" % runs

    log = EventLog()
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(functools.partial(
                serve_udp, counter, 7, request_key=lambda d: d.data, reply_cache_lifetime=60,
                observer=log))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                assert (await ep.request(b"id-1", "server:7", match=match_address_only)).data == b"run 1"
                assert (await ep.request(b"id-1", "server:7", match=ANY)).data == b"run 1"  # replayed
                assert (await ep.request(b"id-2", "server:7", match=match_address_only)).data == b"run 2"
                await trio.sleep(60)
                assert (await ep.request(b"id-1", "server:7", match=ANY)).data == b"run 3"  # expired
        stats = server.statistics()
        nursery.cancel_scope.cancel()
    assert stats.duplicates_replayed == 1
    [replayed] = log.of_kind("udp.duplicate_replayed")
    assert replayed.details["key"] == b"id-1"


async def test_the_cache_is_keyed_by_peer_as_well_as_request_key(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    runs = 0

    async def counter(datagram: Datagram) -> bytes:
        nonlocal runs
        runs += 1
        return b"run %d" % runs

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(functools.partial(serve_udp, counter, 7,
                                                  request_key=lambda d: d.data))
        with net.host("client"):
            async with open_udp_endpoint() as one, open_udp_endpoint() as two:
                assert (await one.request(b"same-id", "server:7", match=match_address_only)).data == b"run 1"
                assert (await two.request(b"same-id", "server:7", match=match_address_only)).data == b"run 2"
        nursery.cancel_scope.cancel()


async def test_a_failed_handler_caches_nothing_so_a_retransmission_runs_it_again(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    attempts = 0

    async def flaky(datagram: Datagram) -> bytes:
        nonlocal attempts
        attempts += 1
        if attempts == 1:
            raise RuntimeError("transient")
        return b"ok"

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(functools.partial(serve_udp, flaky, 7,
                                                  request_key=lambda d: d.data))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                reply = await ep.request(b"id", "server:7", policy=RetryPolicy(random_factor=1),
                                         match=match_address_only)
                assert reply.data == b"ok"
        nursery.cancel_scope.cancel()
    assert attempts == 2


async def test_a_handler_that_returns_none_caches_nothing_so_a_retransmission_is_handled(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Issue 14.3: "no reply" was cached, swallowing every retransmission.
    runs = 0

    async def drop_first(datagram: Datagram) -> bytes | None:
        nonlocal runs
        runs += 1
        return None if runs == 1 else b"ok"

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(functools.partial(
                serve_udp, drop_first, 7, request_key=lambda d: d.data))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                start = trio.current_time()
                reply = await ep.request(b"id", "server:7", policy=RetryPolicy(random_factor=1),
                                         match=match_address_only)
                assert reply.data == b"ok"
                assert trio.current_time() - start == pytest.approx(2 + 0.002)
        stats = server.statistics()
        nursery.cancel_scope.cancel()
    assert runs == 2
    assert stats.duplicates_replayed == 0
    assert stats.reply_cache_entries == 1  # the reply that was sent


async def test_a_reply_that_could_not_be_sent_is_not_cached(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    runs = 0

    async def too_big_then_fine(datagram: Datagram) -> bytes:
        nonlocal runs
        runs += 1
        return b"x" * 70_000 if runs == 1 else b"ok"

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(functools.partial(
                serve_udp, too_big_then_fine, 7, request_key=lambda d: d.data))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                reply = await ep.request(b"id", "server:7", policy=RetryPolicy(random_factor=1),
                                         match=match_address_only)
                assert reply.data == b"ok"
        stats = server.statistics()
        nursery.cancel_scope.cancel()
    assert runs == 2
    assert stats.handler_errors == 1


@pytest.mark.parametrize("how", ["cancelled", "grace_expired"])
async def test_statistics_are_right_after_handlers_are_cancelled(
    how: str, autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    # Issue 12.2, UDP: bookkeeping runs however a handler ends.
    started = 0

    async def stuck(datagram: Datagram) -> bytes:
        nonlocal started
        started += 1
        await trio.sleep_forever()
        raise AssertionError("unreachable")

    log = EventLog()
    async with trio.open_nursery() as nursery:
        with net.host("server"):
            server: UDPServer = await nursery.start(functools.partial(
                serve_udp, stuck, 7, observer=log))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                for i in range(5):
                    await ep.send(b"%d" % i, "server:7")
                await trio.sleep(1)
        assert server.statistics().handlers_active == 5
        if how == "cancelled":
            nursery.cancel_scope.cancel()
        else:
            await server.shutdown(grace=1)
    stats = server.statistics()
    assert started == 5
    assert stats.handlers_active == 0
    assert stats.handler_errors == 0
    assert stats.datagrams_handled == 5
    assert [e.kind for e in log][-1] == "udp.shutdown.done"
    if how == "grace_expired":
        assert log.of_kind("udp.shutdown.grace_expired")[0].details["cancelled"] == 5


async def test_datagrams_whose_key_is_none_are_not_deduplicated(
    autojump_clock: trio.testing.MockClock, net: VirtualNetwork
) -> None:
    runs = 0

    async def counter(datagram: Datagram) -> bytes:
        nonlocal runs
        runs += 1
        return b"%d" % runs

    async with trio.open_nursery() as nursery:
        with net.host("server"):
            await nursery.start(functools.partial(
                serve_udp, counter, 7,
                request_key=lambda d: None if d.data == b"ping" else d.data))
        with net.host("client"):
            async with open_udp_endpoint() as ep:
                assert (await ep.request(b"ping", "server:7", match=match_address_only)).data == b"1"
                assert (await ep.request(b"ping", "server:7", match=match_address_only)).data == b"2"
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("kwargs", [{"max_concurrency": 0}, {"reply_cache_size": 0},
                                    {"reply_cache_lifetime": -1}])
async def test_serve_udp_refuses_bad_options(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        await serve_udp(echo, 0, **kwargs)  # type: ignore[arg-type]
