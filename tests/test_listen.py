"""Dual-stack listening sockets on one port, on real loopback (127.0.0.1 and ::1)."""

from __future__ import annotations

import errno
import socket as stdlib_socket
from collections.abc import Iterator
from typing import Any

import pytest
import trio

from tests.conftest import open_fd_count
from trionet import Address, Resolver, bind_listening_sockets

#: How many port numbers bind_listening_sockets tries for a dual-stack port 0 (ten:
#: trionet's choice, see trionet/_adapters/listen.py).
SAME_PORT_ATTEMPTS = 10

V6, V4 = stdlib_socket.AF_INET6, stdlib_socket.AF_INET


def port_of(sock: trio.socket.SocketType) -> int:
    port: int = sock.getsockname()[1]
    return port


async def accept_from(listener: trio.socket.SocketType, host: str, port: int) -> Address:
    """Connect a client to host:port, accept it on listener, return the peer address."""
    family = V6 if ":" in host else V4
    with trio.socket.socket(family) as client, trio.fail_after(5):
        await client.connect((host, port))
        server_side, peer = await listener.accept()
        server_side.close()
    return Address.from_sockaddr(peer)


async def test_host_none_port_zero_listens_on_both_families_on_one_port(no_fd_leak: None) -> None:
    sockets = await bind_listening_sockets(0)
    try:
        assert [sock.family for sock in sockets] == [V6, V4]
        v6, v4 = sockets
        assert port_of(v6) == port_of(v4) != 0
        assert Address.from_sockaddr(v6.getsockname()) == Address("::", port_of(v6))
        assert Address.from_sockaddr(v4.getsockname()) == Address("0.0.0.0", port_of(v4))
        assert v6.getsockopt(stdlib_socket.IPPROTO_IPV6, stdlib_socket.IPV6_V6ONLY) == 1
        for sock in sockets:
            assert sock.getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_ACCEPTCONN) == 1
        # Each family's clients reach that family's socket, on the one port.
        assert (await accept_from(v6, "::1", port_of(v6))).host == "::1"
        assert (await accept_from(v4, "127.0.0.1", port_of(v4))).host == "127.0.0.1"
    finally:
        for sock in sockets:
            sock.close()


async def test_a_given_port_is_used_for_both_families(no_fd_leak: None) -> None:
    with stdlib_socket.socket(V6) as probe:  # find a free port, then free it
        probe.bind(("::1", 0))
        port = probe.getsockname()[1]
    sockets = await bind_listening_sockets(port)
    try:
        assert [port_of(sock) for sock in sockets] == [port, port]
        assert (await accept_from(sockets[1], "127.0.0.1", port)).host == "127.0.0.1"
    finally:
        for sock in sockets:
            sock.close()


async def test_udp_sockets_are_bound_on_one_port_and_not_listening(no_fd_leak: None) -> None:
    sockets = await bind_listening_sockets(0, type=stdlib_socket.SOCK_DGRAM)
    try:
        v6, v4 = sockets
        port = port_of(v6)
        assert port_of(v4) == port
        for sock, host in ((v6, "::1"), (v4, "127.0.0.1")):
            assert sock.type == stdlib_socket.SOCK_DGRAM
            with trio.socket.socket(sock.family, stdlib_socket.SOCK_DGRAM) as client:
                await client.sendto(host.encode(), (host, port))
                with trio.fail_after(5):
                    data, _ = await sock.recvfrom(100)
            assert data == host.encode()
    finally:
        for sock in sockets:
            sock.close()


async def test_a_name_binds_each_of_its_addresses_on_one_port(no_fd_leak: None) -> None:
    resolver = Resolver(hosts={"loopback.test": ["::1", "127.0.0.1"]})
    sockets = await bind_listening_sockets(0, host="loopback.test", resolver=resolver)
    try:
        port = port_of(sockets[0])
        assert [Address.from_sockaddr(sock.getsockname()) for sock in sockets] == [
            Address("::1", port),
            Address("127.0.0.1", port),
        ]
        assert (await accept_from(sockets[0], "::1", port)).host == "::1"
        assert (await accept_from(sockets[1], "127.0.0.1", port)).host == "127.0.0.1"
    finally:
        for sock in sockets:
            sock.close()


async def test_a_literal_binds_one_socket(no_fd_leak: None) -> None:
    [sock] = await bind_listening_sockets(0, host="127.0.0.1")
    with sock:
        assert sock.getsockname()[0] == "127.0.0.1"


async def test_a_port_taken_on_ipv4_raises_and_closes_the_ipv6_socket() -> None:
    with stdlib_socket.socket(V4) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        before = open_fd_count()
        with pytest.raises(OSError, match=f"cannot bind 0.0.0.0:{port}") as info:
            await bind_listening_sockets(port)
        assert info.value.errno == errno.EADDRINUSE
        assert open_fd_count() == before


async def test_reuse_port_lets_two_sets_of_sockets_share_the_port(no_fd_leak: None) -> None:
    first = await bind_listening_sockets(0, reuse_port=True)
    try:
        second = await bind_listening_sockets(port_of(first[0]), reuse_port=True)
        try:
            assert {port_of(sock) for sock in first + second} == {port_of(first[0])}
            assert second[0].getsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEPORT) == 1
        finally:
            for sock in second:
                sock.close()
    finally:
        for sock in first:
            sock.close()


async def test_a_cancelled_call_raises_cancelled_and_leaves_no_socket(no_fd_leak: None) -> None:
    with trio.CancelScope() as scope:
        scope.cancel()
        await bind_listening_sockets(0)
    assert scope.cancelled_caught


# --- the same-port retry, with collisions made on purpose ----------------------------


class _CollidingSocket:
    """A real trio socket whose bind finds its port already taken on 127.0.0.1."""

    def __init__(self, sock: trio.socket.SocketType, blockers: list[stdlib_socket.socket]) -> None:
        self._sock = sock
        self._blockers = blockers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)

    async def bind(self, address: tuple[Any, ...]) -> None:
        blocker = stdlib_socket.socket(V4)
        # SO_REUSEADDR: ignore TIME_WAIT left by earlier tests; a listening
        # socket still blocks the port for everyone.
        blocker.setsockopt(stdlib_socket.SOL_SOCKET, stdlib_socket.SO_REUSEADDR, 1)
        try:
            blocker.bind(("127.0.0.1", address[1]))
            blocker.listen()
        except OSError:  # the system picked a port an earlier blocker holds: taken anyway
            blocker.close()
        else:
            self._blockers.append(blocker)
        await self._sock.bind(address)


class CollidingFactory(trio.abc.SocketFactory):
    """Makes the first `collisions` IPv4 sockets collide with their port."""

    def __init__(self, collisions: int) -> None:
        self.collisions = collisions
        self.blockers: list[stdlib_socket.socket] = []
        self.made: list[int] = []

    def socket(self, family: Any = V4, type: Any = stdlib_socket.SOCK_STREAM, proto: int = 0) -> Any:
        self.made.append(family)
        sock = trio.socket.from_stdlib_socket(stdlib_socket.socket(family, type, proto))
        if family == V4 and self.collisions > 0:
            self.collisions -= 1
            return _CollidingSocket(sock, self.blockers)
        return sock

    def close(self) -> None:
        for blocker in self.blockers:
            blocker.close()


@pytest.fixture
def colliding() -> Iterator[CollidingFactory]:
    factory = CollidingFactory(0)
    yield factory
    factory.close()


async def test_port_zero_retries_when_the_ipv6_port_is_taken_on_ipv4(
    colliding: CollidingFactory,
) -> None:
    colliding.collisions = 3
    before = open_fd_count()
    previous = trio.socket.set_custom_socket_factory(colliding)
    try:
        sockets = await bind_listening_sockets(0)
    finally:
        trio.socket.set_custom_socket_factory(previous)
    try:
        assert colliding.made == [V6, V4] * 4
        assert port_of(sockets[0]) == port_of(sockets[1])
        taken = {blocker.getsockname()[1] for blocker in colliding.blockers}
        assert port_of(sockets[0]) not in taken
    finally:
        for sock in sockets:
            sock.close()
    # Only the blockers remain open: every failed attempt closed its sockets.
    assert open_fd_count() == before + len(colliding.blockers)


async def test_the_retries_are_bounded(colliding: CollidingFactory) -> None:
    colliding.collisions = SAME_PORT_ATTEMPTS
    before = open_fd_count()
    previous = trio.socket.set_custom_socket_factory(colliding)
    try:
        with pytest.raises(OSError, match=r"cannot bind 0\.0\.0\.0:") as info:
            await bind_listening_sockets(0)
    finally:
        trio.socket.set_custom_socket_factory(previous)
    assert info.value.errno == errno.EADDRINUSE
    assert colliding.made == [V6, V4] * SAME_PORT_ATTEMPTS
    assert open_fd_count() == before + len(colliding.blockers)
