"""UDP endpoints on real loopback: addresses, limits, truncation, ICMP, draining, cancellation."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from trionet import (
    DEFAULT_MAX_OUTSTANDING_PER_PEER,
    DEFAULT_RECEIVE_QUEUE_SIZE,
    Address,
    AddressError,
    Datagram,
    EventLog,
    PeerUnreachable,
    Resolver,
    TrionetError,
    UDPEndpoint,
    match_bytes,
    open_udp_endpoint,
)
from trionet.errors import DatagramTooLarge

pytestmark = pytest.mark.usefixtures("no_fd_leak")


async def plain_socket(host: str = "127.0.0.1") -> trio.socket.SocketType:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = trio.socket.socket(family, socket.SOCK_DGRAM)
    await sock.bind((host, 0))
    return sock


def port_nobody_listens_on() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
async def endpoint() -> AsyncIterator[UDPEndpoint]:
    async with open_udp_endpoint("127.0.0.1:0") as ep:
        yield ep


# ------------------------------------------------------------- sending, receiving


async def test_ipv4_and_ipv6_peers_talk_to_one_dual_stack_endpoint() -> None:
    async with open_udp_endpoint() as server:
        assert server.dual_stack
        assert server.local.host == "::"
        port = server.local.port
        with await plain_socket("127.0.0.1") as v4, await plain_socket("::1") as v6:
            await v4.sendto(b"from v4", ("127.0.0.1", port))
            await v6.sendto(b"from v6", ("::1", port))
            first, second = await server.receive(), await server.receive()
            assert first == Datagram(b"from v4", Address("127.0.0.1", v4.getsockname()[1]))
            assert first.address.host == "127.0.0.1"  # not ::ffff:127.0.0.1
            assert second == Datagram(b"from v6", Address("::1", v6.getsockname()[1]))
            await server.send(b"back to v4", first.address)
            await server.send(b"back to v6", second.address)
            assert await v4.recv(100) == b"back to v4"
            assert await v6.recv(100) == b"back to v6"


async def test_an_endpoint_bound_to_an_ipv4_address_is_ipv4_only(endpoint: UDPEndpoint) -> None:
    assert endpoint.local.host == "127.0.0.1"
    assert not endpoint.dual_stack
    assert endpoint.socket.family == socket.AF_INET


async def test_family_inet6_makes_a_wildcard_endpoint_ipv6_only() -> None:
    async with open_udp_endpoint(family=socket.AF_INET6) as ep:
        assert not ep.dual_stack
        assert ep.socket.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY) == 1


@pytest.mark.parametrize(
    "destination",
    ["text", "tuple", "address", "name"],
)
async def test_send_takes_addresses_in_every_form_and_resolves_names(
    endpoint: UDPEndpoint, destination: str
) -> None:
    with await plain_socket() as peer:
        port = peer.getsockname()[1]
        target: object = {
            "text": f"127.0.0.1:{port}",
            "tuple": ("127.0.0.1", port),
            "address": Address("127.0.0.1", port),
            "name": f"peer.test:{port}",
        }[destination]
        async with open_udp_endpoint(resolver=Resolver(hosts={"peer.test": "127.0.0.1"})) as ep:
            await ep.send(b"hello", target)  # type: ignore[arg-type]
            await ep.send(b"again", target)  # type: ignore[arg-type]  # from the cache
            data, source = await peer.recvfrom(100)
            assert data == b"hello"
            assert Address.from_sockaddr(source).port == ep.local.port
            assert await peer.recv(100) == b"again"


async def test_send_without_an_address_on_an_unconnected_endpoint_is_refused(
    endpoint: UDPEndpoint,
) -> None:
    with pytest.raises(AddressError, match="not connected"):
        await endpoint.send(b"where to?")
    with pytest.raises(AddressError, match="non-zero port"):
        await endpoint.send(b"x", ("127.0.0.1", 0))
    with pytest.raises(AddressError):
        await endpoint.send(b"x", ["127.0.0.1", 53])  # type: ignore[arg-type]


async def test_async_iteration_yields_datagrams_in_arrival_order(endpoint: UDPEndpoint) -> None:
    with await plain_socket() as peer:
        for i in range(5):
            await peer.sendto(b"%d" % i, endpoint.local.to_sockaddr())
        got = []
        async for datagram in endpoint:
            got.append(datagram.data)
            if len(got) == 5:
                break
        assert got == [b"0", b"1", b"2", b"3", b"4"]


async def test_buffers_and_memoryviews_are_sent_whole(endpoint: UDPEndpoint) -> None:
    with await plain_socket() as peer:
        port = peer.getsockname()[1]
        await endpoint.send(bytearray(b"array"), ("127.0.0.1", port))
        await endpoint.send(memoryview(b"view-of-bytes")[8:], ("127.0.0.1", port))
        assert await peer.recv(100) == b"array"
        assert await peer.recv(100) == b"bytes"


# ---------------------------------------------------------------- size limits


@pytest.mark.parametrize(("host", "limit"), [("127.0.0.1", 65507), ("::1", 65527)])
async def test_the_largest_datagram_of_each_family_goes_through(host: str, limit: int) -> None:
    async with open_udp_endpoint(f"[{host}]:0" if ":" in host else f"{host}:0") as ep:
        with await plain_socket(host) as peer:
            await ep.send(b"x" * limit, peer.getsockname())
            assert len(await peer.recv(70000)) == limit


@pytest.mark.parametrize(("host", "limit"), [("127.0.0.1", 65507), ("::1", 65527)])
async def test_a_datagram_over_the_family_limit_raises_before_any_system_call(
    host: str, limit: int
) -> None:
    async with open_udp_endpoint() as ep:
        with await plain_socket(host) as peer:
            for size in (limit + 1, 70_000):
                with pytest.raises(DatagramTooLarge) as info:
                    await ep.send(b"x" * size, peer.getsockname())
                assert (info.value.size, info.value.limit) == (size, limit)
                assert isinstance(info.value, ValueError)
            with pytest.raises(DatagramTooLarge):
                await ep.request(b"x" * 70_000, peer.getsockname(), match=match_bytes(0, 1))
            assert ep.statistics().datagrams_sent == 0
            assert not peer.is_readable()  # nothing arrived


async def test_a_datagram_larger_than_the_receive_size_is_reported_truncated() -> None:
    log = EventLog()
    async with open_udp_endpoint("127.0.0.1:0", max_receive_size=1024, observer=log) as ep:
        with await plain_socket() as peer:
            await peer.sendto(bytes(range(250)) * 8, ep.local.to_sockaddr())  # 2,000 bytes
            await peer.sendto(b"y" * 1024, ep.local.to_sockaddr())
            cut = await ep.receive()
            assert cut.truncated
            assert cut.data == (bytes(range(250)) * 8)[:1024]
            whole = await ep.receive()
            assert (whole.truncated, len(whole.data)) == (False, 1024)
            assert ep.statistics().datagrams_truncated == 1
            [event] = log.of_kind("udp.truncated")
            assert event.details["limit"] == 1024


# --------------------------------------------------------------- connected mode


async def test_a_connected_endpoint_sends_without_address_and_hears_only_its_peer() -> None:
    with await plain_socket() as peer, await plain_socket() as stranger:
        async with open_udp_endpoint(remote=peer.getsockname()) as ep:
            assert ep.peer == Address.from_sockaddr(peer.getsockname())
            await ep.send(b"hi")
            data, source = await peer.recvfrom(10)
            assert data == b"hi"
            await stranger.sendto(b"spam", source)
            await peer.sendto(b"ham", source)
            assert (await ep.receive()).data == b"ham"
            with pytest.raises(trio.WouldBlock):
                ep.receive_nowait()
            await ep.send(b"same peer", peer.getsockname())
            with pytest.raises(AddressError, match="connected to"):
                await ep.send(b"x", stranger.getsockname())


async def test_a_connected_endpoint_reports_the_local_address_its_peer_sees() -> None:
    # Issue 14.9: it said 0.0.0.0:port, the wildcard bound before connect().
    with await plain_socket() as peer:
        async with open_udp_endpoint(remote=peer.getsockname()) as ep:
            await ep.send(b"who am I?")
            _, source = await peer.recvfrom(100)
            assert ep.local == Address.from_sockaddr(source)
            assert ep.local.host == "127.0.0.1"


async def test_icmp_port_unreachable_on_a_connected_endpoint_raises_peer_unreachable() -> None:
    log = EventLog()
    port = port_nobody_listens_on()
    async with open_udp_endpoint(remote=("127.0.0.1", port), observer=log) as ep:
        await ep.send(b"anyone?")
        with pytest.raises(PeerUnreachable) as info:
            await ep.receive()
        assert isinstance(info.value, ConnectionRefusedError)
        assert isinstance(info.value, TrionetError)
        assert info.value.peer == Address("127.0.0.1", port)
        assert str(port) in str(info.value)
        with trio.fail_after(5):
            with pytest.raises(PeerUnreachable):
                await ep.request(b"anyone at all?", match=match_bytes(0, 6))
        assert log.of_kind("udp.peer_unreachable")


# -------------------------------------------------------------------- draining


async def test_one_wakeup_drains_every_waiting_datagram_into_the_queue(
    endpoint: UDPEndpoint,
) -> None:
    with await plain_socket() as peer:
        for i in range(100):
            await peer.sendto(b"%d" % i, endpoint.local.to_sockaddr())
        assert (await endpoint.receive()).data == b"0"
        stats = endpoint.statistics()
        assert (stats.datagrams_received, stats.datagrams_queued) == (100, 99)
        assert [endpoint.receive_nowait().data for _ in range(99)] == [b"%d" % i for i in range(1, 100)]
        with pytest.raises(trio.WouldBlock):
            endpoint.receive_nowait()


async def test_a_full_receive_queue_leaves_the_rest_in_the_system_buffer() -> None:
    async with open_udp_endpoint("127.0.0.1:0", receive_queue_size=10) as ep:
        with await plain_socket() as peer:
            for i in range(30):
                await peer.sendto(b"%d" % i, ep.local.to_sockaddr())
            assert (await ep.receive()).data == b"0"
            stats = ep.statistics()
            # Taking more would only mean dropping it: the system holds it instead.
            assert (stats.datagrams_received, stats.datagrams_queued) == (10, 9)
            got = [(await ep.receive()).data for _ in range(29)]
            assert got == [b"%d" % i for i in range(1, 30)]
            assert ep.statistics().datagrams_dropped == 0


async def test_while_a_request_waits_datagrams_beyond_the_full_queue_are_dropped_and_counted(
) -> None:
    log = EventLog()
    async with open_udp_endpoint("127.0.0.1:0", receive_queue_size=5, observer=log) as ep:
        with await plain_socket() as peer:

            async def noisy_peer() -> None:
                _, source = await peer.recvfrom(10)
                for i in range(20):
                    await peer.sendto(b"noise %d" % i, source)
                await peer.sendto(b"answer", source)

            async with trio.open_nursery() as nursery:
                nursery.start_soon(noisy_peer)
                reply = await ep.request(b"q", peer.getsockname(),
                                         match=lambda d: d.data == b"answer")
            assert reply.data == b"answer"
            stats = ep.statistics()
            assert (stats.datagrams_queued, stats.datagrams_dropped) == (5, 15)
            assert len(log.of_kind("udp.dropped")) == 15
            assert log.of_kind("udp.dropped")[0].details["reason"] == "receive queue full"
            assert [(await ep.receive()).data for _ in range(5)] == [
                b"noise %d" % i for i in range(5)]


async def test_a_consumer_working_through_the_queue_drains_the_socket_every_32_datagrams(
    endpoint: UDPEndpoint,
) -> None:
    with await plain_socket() as peer:
        for i in range(40):
            await peer.sendto(b"a%d" % i, endpoint.local.to_sockaddr())
        await endpoint.receive()  # drains all 40
        for i in range(40):
            await peer.sendto(b"b%d" % i, endpoint.local.to_sockaddr())
        for _ in range(31):
            endpoint.receive_nowait()
        assert endpoint.statistics().datagrams_received == 40  # no system call per datagram
        endpoint.receive_nowait()  # the 33rd take drains again, before the queue runs dry
        stats = endpoint.statistics()
        assert (stats.datagrams_received, stats.datagrams_queued) == (80, 47)


async def test_receive_buffer_size_asks_the_system_for_a_larger_buffer() -> None:
    async with open_udp_endpoint("127.0.0.1:0") as default:
        system_default = default.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    async with open_udp_endpoint("127.0.0.1:0", receive_buffer_size=system_default // 4) as ep:
        # Linux doubles the value for its bookkeeping (socket(7)).
        assert ep.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < system_default
        assert ep.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) >= system_default // 4


async def test_receive_nowait_takes_what_the_system_holds(endpoint: UDPEndpoint) -> None:
    with pytest.raises(trio.WouldBlock):
        endpoint.receive_nowait()
    with await plain_socket() as peer:
        await peer.sendto(b"ready", endpoint.local.to_sockaddr())
        assert endpoint.receive_nowait().data == b"ready"


async def test_many_receivers_share_the_datagrams_one_each(endpoint: UDPEndpoint) -> None:
    got: list[bytes] = []

    async def receiver() -> None:
        got.append((await endpoint.receive()).data)

    async with trio.open_nursery() as nursery:
        for _ in range(20):
            nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        with await plain_socket() as peer:
            for i in range(20):
                await peer.sendto(b"%02d" % i, endpoint.local.to_sockaddr())
    assert sorted(got) == [b"%02d" % i for i in range(20)]


# ---------------------------------------------------------------- cancellation


async def test_a_cancelled_receive_takes_nothing(endpoint: UDPEndpoint) -> None:
    scope = trio.CancelScope()

    async def cancel_when_blocked() -> None:
        await trio.testing.wait_all_tasks_blocked()
        scope.cancel()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(cancel_when_blocked)
        with scope:
            await endpoint.receive()
    assert scope.cancelled_caught
    with await plain_socket() as peer:
        await peer.sendto(b"kept", endpoint.local.to_sockaddr())
        assert (await endpoint.receive()).data == b"kept"


async def test_a_cancelled_send_sends_nothing(endpoint: UDPEndpoint) -> None:
    with await plain_socket() as peer:
        with trio.CancelScope() as scope:
            scope.cancel()
            await endpoint.send(b"never", peer.getsockname())
        assert scope.cancelled_caught
        await endpoint.send(b"sent", peer.getsockname())
        assert await peer.recv(10) == b"sent"
        assert endpoint.statistics().datagrams_sent == 1


async def test_a_cancelled_opening_leaves_no_socket_open() -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        async with open_udp_endpoint("127.0.0.1:0"):
            raise AssertionError("opened despite the cancellation")
    assert scope.cancelled_caught  # and no_fd_leak checks that nothing stayed open


async def test_a_cancelled_aclose_still_closes() -> None:
    async with open_udp_endpoint("127.0.0.1:0") as ep:
        with trio.CancelScope() as scope:
            scope.cancel()
            await ep.aclose()
        assert scope.cancelled_caught
        with pytest.raises(trio.ClosedResourceError):
            ep.receive_nowait()


async def test_closing_wakes_every_waiting_task_with_closed_resource_error() -> None:
    errors: list[BaseException] = []

    async def wait(ep: UDPEndpoint) -> None:
        try:
            await ep.receive()
        except trio.ClosedResourceError as exc:
            errors.append(exc)

    async with open_udp_endpoint("127.0.0.1:0") as ep, trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(wait, ep)
        await trio.testing.wait_all_tasks_blocked()
        await ep.aclose()
    assert len(errors) == 3
    with pytest.raises(trio.ClosedResourceError):
        await ep.receive()
    with pytest.raises(trio.ClosedResourceError):
        await ep.send(b"x", ("127.0.0.1", 9))
    with pytest.raises(trio.ClosedResourceError):
        ep.receive_nowait()


# ------------------------------------------------------------- options, multicast


async def test_reuse_port_lets_two_endpoints_share_a_port() -> None:
    async with open_udp_endpoint("127.0.0.1:0", reuse_port=True) as first:
        port = first.local.port
        async with open_udp_endpoint(("127.0.0.1", port), reuse_port=True) as second:
            assert second.local.port == port
    async with open_udp_endpoint("127.0.0.1:0") as taken:
        with pytest.raises(OSError, match="cannot bind"):
            async with open_udp_endpoint(taken.local):
                pass


async def test_broadcast_sets_so_broadcast() -> None:
    async with open_udp_endpoint("127.0.0.1:0", broadcast=True) as ep:
        assert ep.socket.getsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST) == 1


async def test_a_joined_ipv4_multicast_group_is_received_until_left() -> None:
    group = "239.255.71.1"
    async with open_udp_endpoint(("0.0.0.0", 0)) as ep:
        ep.join_multicast(group, interface="127.0.0.1")
        port = ep.local.port
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            sender.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton("127.0.0.1"))
            sender.sendto(b"to the group", (group, port))
            with trio.fail_after(5):
                assert (await ep.receive()).data == b"to the group"
            ep.leave_multicast(group, interface="127.0.0.1")
            sender.sendto(b"after leaving", (group, port))
            sender.sendto(b"direct", ("127.0.0.1", port))
            with trio.fail_after(5):
                assert (await ep.receive()).data == b"direct"


async def test_a_dual_stack_endpoint_joins_groups_of_both_families() -> None:
    async with open_udp_endpoint() as ep:
        ep.join_multicast("239.255.71.2", interface="127.0.0.1")
        ep.join_multicast("ff02::1:71", interface="lo")
        ep.leave_multicast("ff02::1:71", interface=socket.if_nametoindex("lo"))
        ep.leave_multicast("239.255.71.2", interface="127.0.0.1")
        mreq = struct.pack("4s4s", socket.inet_aton("239.255.71.2"), socket.inet_aton("127.0.0.1"))
        with pytest.raises(OSError, match="Cannot assign requested address"):  # not a member
            ep.socket.setsockopt(socket.IPPROTO_IP, socket.IP_DROP_MEMBERSHIP, mreq)


@pytest.mark.parametrize(
    ("group", "interface", "message"),
    [
        ("10.0.0.1", None, "not a multicast address"),
        ("not-an-ip", None, "not an IP address"),
        ("ff02::1", None, "IPv4 endpoint cannot join"),
        ("239.1.2.3", 1, "IPv4 address"),
    ],
)
async def test_bad_multicast_groups_are_refused(
    endpoint: UDPEndpoint, group: str, interface: int | None, message: str
) -> None:
    with pytest.raises(AddressError, match=message):
        endpoint.join_multicast(group, interface=interface)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_receive_size": 0},
        {"max_receive_size": 65536},
        {"receive_queue_size": 0},
        {"receive_buffer_size": 0},
        {"max_outstanding_per_peer": 0},
        {"family": 99},
    ],
)
async def test_out_of_range_options_are_refused(kwargs: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        async with open_udp_endpoint(**kwargs):  # type: ignore[arg-type]
            pass


async def test_the_endpoint_describes_itself_and_its_defaults() -> None:
    assert DEFAULT_MAX_OUTSTANDING_PER_PEER == 1  # CoAP's NSTART
    assert DEFAULT_RECEIVE_QUEUE_SIZE == 4096
    async with open_udp_endpoint("127.0.0.1:0") as ep:
        assert repr(ep) == f"<UDPEndpoint 127.0.0.1:{ep.local.port}>"
    assert repr(ep).endswith(" closed>")
