"""The virtual network against the kernel: UDP buffers, binding, dual-stack, broadcast, DNS.

Each test runs one scenario on real loopback and on a virtual host (see
``tests/differential.py``) and asserts that both observe the same thing: errnos,
counts, addresses as the sockets report them. What the scenarios pin down:

- a UDP socket that is not reading keeps as many datagrams as Linux's kernel
  memory accounting lets it (truesize against SO_RCVBUF), and SO_RCVBUF reads
  back doubled;
- binding: which pairs of bindings of one port conflict (IPv4/IPv6 wildcards,
  IPV6_V6ONLY, SO_REUSEADDR, SO_REUSEPORT, TCP listeners);
- dual-stack sockets: IPV6_V6ONLY is 0 by default, IPv4 peers show as
  ``::ffff:a.b.c.d``, and the errors around IPv4-mapped addresses;
- broadcast needs SO_BROADCAST (EACCES), and reaches wildcard-bound sockets;
- ``shutdown()`` on UDP sockets;
- service names and ports in ``getaddrinfo`` / ``getnameinfo``.
"""

from __future__ import annotations

import errno
import functools
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import trio

import trionet
from tests.differential import World, both, run_real, run_virtual

V4, V6 = socket.AF_INET, socket.AF_INET6
LOOPBACK: dict[int, str] = {V4: "127.0.0.1", V6: "::1"}


def sysctl(name: str, default: int) -> int:
    """A net.core sysctl of this machine (the virtual side is told the same)."""
    try:
        return int(Path("/proc/sys/net/core", name).read_text())
    except OSError:  # pragma: no cover - not Linux
        return default


RMEM_DEFAULT = sysctl("rmem_default", 212992)


def outcome(call: Callable[[], object]) -> object:
    """``"ok"`` or the errno a call raised."""
    try:
        call()
    except OSError as exc:
        return exc.errno
    return "ok"


async def outcome_async(call: Callable[[], Any]) -> object:
    try:
        await call()
    except OSError as exc:
        return exc.errno
    return "ok"


async def drain_now(sock: trio.socket.SocketType, limit: int) -> int:
    """Receive what is queued already (no waiting); return how many datagrams."""
    count = 0
    while count < limit and sock.is_readable():
        await sock.recv(65536)
        count += 1
    return count


# ---- item 2: what a receive buffer holds ---------------------------------------------------------


@pytest.mark.parametrize("family", [V4, V6], ids=["ipv4", "ipv6"])
@pytest.mark.parametrize(("size", "burst"), [(100, 400), (1000, 200), (8000, 40)])
def test_a_socket_that_is_not_reading_keeps_as_many_datagrams_as_linux(
    family: int, size: int, burst: int
) -> None:
    async def scenario(world: World) -> int:
        with trio.socket.socket(family, socket.SOCK_DGRAM) as receiver, \
                trio.socket.socket(family, socket.SOCK_DGRAM) as sender:
            await receiver.bind((LOOPBACK[family], 0))
            for _ in range(burst):
                await sender.sendto(b"x" * size, receiver.getsockname())
            return await drain_now(receiver, burst)

    real, virtual = both(scenario, udp_buffer_size=RMEM_DEFAULT)
    assert real == virtual
    assert real < burst  # the burst overflowed the buffer on both


@pytest.mark.parametrize("rcvbuf", [1, 4096, 100_000])
def test_so_rcvbuf_reads_back_doubled_and_bounds_the_queue_as_linux(rcvbuf: int) -> None:
    async def scenario(world: World) -> tuple[int, int, list[int]]:
        with trio.socket.socket(V4, socket.SOCK_DGRAM) as receiver, \
                trio.socket.socket(V4, socket.SOCK_DGRAM) as sender:
            default = receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
            await receiver.bind(("127.0.0.1", 0))
            kept = []
            for size in (10, 300, 1500):
                for _ in range(200):
                    await sender.sendto(b"x" * size, receiver.getsockname())
                kept.append(await drain_now(receiver, 200))
            return default, receiver.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF), kept

    real, virtual = both(scenario, udp_buffer_size=RMEM_DEFAULT)
    assert real == virtual


def test_udp_so_sndbuf_reads_back_as_linux_stores_it() -> None:
    async def scenario(world: World) -> list[int]:
        with trio.socket.socket(V4, socket.SOCK_DGRAM) as sock:
            seen = [sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)]
            for asked in (1, 4096, 100_000):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, asked)
                seen.append(sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF))
        return seen

    real, virtual = both(scenario)
    assert real == virtual


# ---- item 4: binding rules -----------------------------------------------------------------------

# (family, address, options) of one binding; options: "a" SO_REUSEADDR, "p"
# SO_REUSEPORT, "6" IPV6_V6ONLY, "l" listen (TCP).
Binding = tuple[int, str, str]

BINDING_PAIRS: list[tuple[str, Binding, Binding]] = [
    ("same address", (V4, "127.0.0.1", ""), (V4, "127.0.0.1", "")),
    ("v4 wildcard, then v6 wildcard", (V4, "", ""), (V6, "", "")),
    ("v4 wildcard, then v6only wildcard", (V4, "", ""), (V6, "", "6")),
    ("v6 wildcard, then v4 wildcard", (V6, "", ""), (V4, "", "")),
    ("v6only wildcard, then v4 wildcard", (V6, "", "6"), (V4, "", "")),
    ("v6only wildcard, then v4 loopback", (V6, "", "6"), (V4, "127.0.0.1", "")),
    ("v6 wildcard, then v4 loopback", (V6, "", ""), (V4, "127.0.0.1", "")),
    ("v4 loopback, then v4 wildcard", (V4, "127.0.0.1", ""), (V4, "", "")),
    ("v6 loopback, then v6 wildcard", (V6, "::1", ""), (V6, "", "")),
    ("v6 loopback, then v4 wildcard", (V6, "::1", ""), (V4, "", "")),
    ("v4 wildcard, then v6 loopback", (V4, "", ""), (V6, "::1", "")),
    ("v4 loopback, then v6 loopback", (V4, "127.0.0.1", ""), (V6, "::1", "")),
    ("mapped, then v4 loopback", (V6, "::ffff:127.0.0.1", ""), (V4, "127.0.0.1", "")),
    ("both SO_REUSEADDR", (V4, "127.0.0.1", "a"), (V4, "127.0.0.1", "a")),
    ("only the second SO_REUSEADDR", (V4, "127.0.0.1", ""), (V4, "127.0.0.1", "a")),
    ("both SO_REUSEPORT", (V4, "127.0.0.1", "p"), (V4, "127.0.0.1", "p")),
    ("only the first SO_REUSEPORT", (V4, "127.0.0.1", "p"), (V4, "127.0.0.1", "")),
    ("both SO_REUSEADDR, first listening", (V4, "127.0.0.1", "al"), (V4, "127.0.0.1", "a")),
    ("both SO_REUSEPORT, first listening", (V4, "127.0.0.1", "pl"), (V4, "127.0.0.1", "p")),
    ("both SO_REUSEADDR, wildcard listening", (V4, "", "al"), (V4, "127.0.0.1", "a")),
    ("v6 wildcards, one v6only", (V6, "", "6"), (V6, "", "")),
]


async def bind_with(sock: trio.socket.SocketType, binding: Binding, port: int) -> None:
    family, address, options = binding
    if "a" in options:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if "p" in options:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if family == V6:
        sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, int("6" in options))
    await sock.bind((address, port))
    if "l" in options:
        sock.listen(5)


BINDING_CASES = [
    pytest.param(kind, first, second, id=f"{name}-{label}")
    for kind, label in [(socket.SOCK_DGRAM, "udp"), (socket.SOCK_STREAM, "tcp")]
    for name, first, second in BINDING_PAIRS
    if kind == socket.SOCK_STREAM or "l" not in first[2]  # UDP sockets do not listen
]


@pytest.mark.parametrize(("kind", "first", "second"), BINDING_CASES)
def test_which_bindings_of_one_port_conflict_as_on_linux(
    kind: int, first: Binding, second: Binding
) -> None:
    async def scenario(world: World) -> object:
        with trio.socket.socket(first[0], kind) as one, trio.socket.socket(second[0], kind) as two:
            await bind_with(one, first, 0)
            port = one.getsockname()[1]
            result = await outcome_async(lambda: bind_with(two, second, port))
            if result == errno.EADDRINUSE and world.net is None:
                # The port the system gave the first socket may be taken in the
                # second's family by another program (a test suite running beside
                # this one): then the second binding fails without the first too.
                one.close()
                with trio.socket.socket(second[0], kind) as alone:
                    if await outcome_async(lambda: bind_with(alone, second, port)) != "ok":
                        return "port taken by another socket"
            return result

    for _attempt in range(5):
        real = run_real(scenario)
        if real != "port taken by another socket":
            break
    else:
        raise AssertionError("every port the system gave was taken in the other family")
    assert real == run_virtual(scenario)


# ---- item 4: dual-stack sockets ------------------------------------------------------------------


def test_a_dual_stack_udp_socket_talks_to_ipv4_through_mapped_addresses() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        with trio.socket.socket(V6, socket.SOCK_DGRAM) as six, \
                trio.socket.socket(V4, socket.SOCK_DGRAM) as four:
            seen.append(six.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
            await six.bind(("::", 0))
            port6 = six.getsockname()[1]
            await four.bind(("127.0.0.1", 0))
            port4 = four.getsockname()[1]
            await four.sendto(b"from four", ("127.0.0.1", port6))
            data, source = await six.recvfrom(100)
            seen += [data, source[0], source[1] == port4]
            await six.sendto(b"from six", source)
            data, source = await four.recvfrom(100)
            seen += [data, source == ("127.0.0.1", port6)]
            # An IPv4 literal on a dual-stack socket is taken as IPv4-mapped (trio asks
            # getaddrinfo for AI_V4MAPPED).
            await six.sendto(b"literal", ("127.0.0.1", port4))
            seen.append((await four.recvfrom(100))[0])
            seen.append(outcome(lambda: six.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)))
        return seen

    real, virtual = both(scenario)
    assert real == virtual
    assert real[:3] == [0, b"from four", "::ffff:127.0.0.1"]


def test_an_ipv4_client_reaches_a_dual_stack_tcp_listener() -> None:
    async def scenario(world: World) -> list[object]:
        with trio.socket.socket(V6) as listener, trio.socket.socket(V4) as client:
            await listener.bind(("::", 0))
            listener.listen(5)
            port = listener.getsockname()[1]
            await client.connect(("127.0.0.1", port))
            conn, peer = await listener.accept()
            with conn:
                await client.send(b"hi")
                return [peer[0], peer[1] == client.getsockname()[1], conn.getsockname()[:2] == (
                    "::ffff:127.0.0.1", port), conn.getpeername()[0], await conn.recv(10)]

    real, virtual = both(scenario)
    assert real == virtual
    assert real[0] == "::ffff:127.0.0.1"


def test_ipv6_only_sockets_refuse_ipv4_mapped_addresses_as_linux() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        address = ("::ffff:127.0.0.1", 9)
        for call in ("bind", "connect", "sendto"):
            with trio.socket.socket(V6, socket.SOCK_DGRAM) as sock:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if call == "bind":
                    seen.append(await outcome_async(functools.partial(sock.bind, address)))
                elif call == "connect":
                    seen.append(await outcome_async(functools.partial(sock.connect, address)))
                else:
                    seen.append(await outcome_async(functools.partial(sock.sendto, b"x", address)))
        with trio.socket.socket(V6, socket.SOCK_DGRAM) as sock:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                await sock.bind(("127.0.0.1", 0))
            except socket.gaierror as exc:
                seen.append(("gaierror", exc.errno))
        with trio.socket.socket(V6, socket.SOCK_DGRAM) as sock:
            await sock.bind(("::1", 0))  # a specific IPv6 address cannot reach IPv4
            seen.append(await outcome_async(lambda: sock.sendto(b"x", ("::ffff:127.0.0.1", 9))))
        return seen

    real, virtual = both(scenario)
    assert real == virtual


# ---- item 6: broadcast ---------------------------------------------------------------------------


def test_broadcast_needs_so_broadcast_and_reaches_wildcard_sockets() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        receivers = [trio.socket.socket(V4, socket.SOCK_DGRAM),
                     trio.socket.socket(V4, socket.SOCK_DGRAM),
                     trio.socket.socket(V6, socket.SOCK_DGRAM)]
        sender = trio.socket.socket(V4, socket.SOCK_DGRAM)
        try:
            port = 0
            for sock, host in zip(receivers, ["", "127.0.0.1", "::"], strict=True):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                await sock.bind((host, port))
                port = sock.getsockname()[1]
            await sender.bind(("127.0.0.1", 0))
            for target in ("255.255.255.255", "<broadcast>", "127.255.255.255"):
                seen.append(await outcome_async(lambda t=target: sender.sendto(b"x", (t, port))))  # type: ignore[misc]
            seen.append(await outcome_async(lambda: sender.connect(("255.255.255.255", port))))
            sender.setsockopt(socket.SOL_SOCKET, socket.SO_BROADCAST, 1)
            await sender.sendto(b"all", ("255.255.255.255", port))
            for sock in receivers:
                got: list[tuple[bytes, str]] = []
                while sock.is_readable() and len(got) < 5:
                    data, source = await sock.recvfrom(100)
                    got.append((data, source[0]))
                seen.append(got)
            # Unicast to a port shared through SO_REUSEADDR: the socket bound last.
            await sender.sendto(b"one", ("127.0.0.1", port))
            seen.append([await drain_now(sock, 5) for sock in receivers])
        finally:
            for sock in [*receivers, sender]:
                sock.close()
        return seen

    real, virtual = both(scenario)
    assert real == virtual
    assert real[:4] == [errno.EACCES] * 4


# ---- item 9: UDP shutdown ------------------------------------------------------------------------


def test_udp_shutdown_behaves_as_on_linux() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        with trio.socket.socket(V4, socket.SOCK_DGRAM) as a, \
                trio.socket.socket(V4, socket.SOCK_DGRAM) as b:
            await a.bind(("127.0.0.1", 0))
            await b.bind(("127.0.0.1", 0))
            seen.append(outcome(lambda: a.shutdown(socket.SHUT_WR)))  # unconnected: ENOTCONN...
            seen.append(await outcome_async(lambda: a.sendto(b"x", b.getsockname())))  # ...yet done
            seen.append(a.did_shutdown_SHUT_WR)
            await b.connect(a.getsockname())
            seen.append(outcome(lambda: b.shutdown(socket.SHUT_RD)))
            await a.connect(b.getsockname())
            seen.append(await outcome_async(lambda: a.send(b"x")))
            seen.append(outcome(lambda: b.shutdown(99)))
            seen.append(outcome(lambda: b.shutdown(socket.SHUT_WR)))
            seen.append(b.did_shutdown_SHUT_WR)
            seen.append(await outcome_async(lambda: b.send(b"x")))
        return seen

    real, virtual = both(scenario)
    assert real == virtual


# ---- item 9: service names and ports in the resolver --------------------------------------------


def test_getaddrinfo_and_getnameinfo_read_services_and_ports_as_glibc() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        queries: list[tuple[str, int, int]] = [
            ("http", V4, socket.SOCK_STREAM),
            ("domain", V4, socket.SOCK_DGRAM),
            ("http", V4, 0),
            ("no-such-service", V4, socket.SOCK_DGRAM),
            ("http", V6, socket.SOCK_STREAM),
        ]
        for service, family, kind in queries:
            host = LOOPBACK[family]
            try:
                found = await trio.socket.getaddrinfo(host, service, family, kind)
                seen.append(sorted((int(e[1]), e[4][1]) for e in found))
            except socket.gaierror as exc:
                seen.append(("gaierror", exc.errno))
        for sockaddr, flags in [
            (("127.0.0.1", 80), socket.NI_NUMERICHOST),
            (("127.0.0.1", 53), socket.NI_NUMERICHOST | socket.NI_DGRAM),
            (("127.0.0.1", 80), socket.NI_NUMERICHOST | socket.NI_NUMERICSERV),
            (("::1", 4), socket.NI_NUMERICHOST),
            (("127.0.0.1", 80), 0),
        ]:
            seen.append(await trio.socket.getnameinfo(sockaddr, flags))
        try:
            await trio.socket.getnameinfo(("localhost", 80), 0)
        except socket.gaierror as exc:
            seen.append(("gaierror", exc.errno))
        return seen

    real, virtual = both(scenario)
    assert real == virtual


# ---- trionet's own production paths, on both ---------------------------------------------------


async def greet(conn: trionet.TCPConnection) -> None:
    await conn.stream.send_all(b"hi")


@pytest.mark.parametrize("host", ["127.0.0.1", None], ids=["loopback", "both-families"])
def test_trionets_reuse_port_tcp_workers_share_one_port(host: str | None) -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        options: dict[str, Any] = {"host": host, "shutdown_grace": 0}
        async with trionet.open_tcp_server(greet, 0, reuse_port=True, **options) as one:
            try:
                async with trionet.open_tcp_server(greet, one.port, **options):
                    seen.append("shared without reuse_port")
            except OSError as exc:
                seen.append(exc.errno)
            async with trionet.open_tcp_server(greet, one.port, reuse_port=True, **options) as two:
                seen.append(two.port == one.port)
                for target in ["127.0.0.1", "::1"] if host is None else ["127.0.0.1"]:
                    for _ in range(10):
                        async with await trionet.connect_tcp(target, one.port) as conn:
                            seen.append(await conn.stream.receive_some())
                accepted = [s.statistics().connections_accepted for s in (one, two)]
                seen.append(sum(accepted))
        return seen

    real, virtual = both(scenario)
    assert real == virtual
    assert real[0] == errno.EADDRINUSE


async def echo(datagram: trionet.Datagram) -> bytes:
    return datagram.data


def test_trionets_reuse_port_udp_servers_share_one_port() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        async with trio.open_nursery() as nursery:
            one = await nursery.start(functools.partial(
                trionet.serve_udp, echo, 0, host="127.0.0.1", reuse_port=True))
            two = await nursery.start(functools.partial(
                trionet.serve_udp, echo, one.port, host="127.0.0.1", reuse_port=True))
            seen.append(two.port == one.port)
            for n in range(8):  # eight clients, eight source ports
                async with trionet.open_udp_endpoint("127.0.0.1:0") as client:
                    reply = await client.request(b"%d" % n, ("127.0.0.1", one.port),
                                                 match=trionet.match_bytes(0, 1))
                    seen.append(reply.data)
            nursery.cancel_scope.cancel()
        # Counted once the servers stopped: a handler counts itself after sending its reply.
        seen.append(sum(s.statistics().datagrams_handled for s in (one, two)))
        return seen

    real, virtual = both(scenario)
    assert real == virtual


def test_trionets_default_udp_endpoint_is_dual_stack_and_requests_reach_both_loopbacks() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        peers: list[str] = []

        async def note(datagram: trionet.Datagram) -> bytes:
            peers.append(datagram.address.host)
            return datagram.data

        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(trionet.serve_udp, note, 0))
            async with trionet.open_udp_endpoint() as ep:
                seen += [ep.dual_stack, ep.local.host, ep.socket.family]
                for host, payload in [("127.0.0.1", b"four"), ("[::1]", b"six!")]:
                    target = f"{host}:{server.port}"
                    reply = await ep.request(payload, target, match=trionet.match_bytes(0, 4))
                    seen.append((reply.data, reply.address.host))
            nursery.cancel_scope.cancel()
        seen.append(peers)
        return seen

    real, virtual = both(scenario)
    assert real == virtual
    assert real[:3] == [True, "::", socket.AF_INET6]


def test_a_connected_udp_socket_sharing_a_port_gets_its_peers_datagrams() -> None:
    async def scenario(world: World) -> list[object]:
        seen: list[object] = []
        with trio.socket.socket(V4, socket.SOCK_DGRAM) as connected, \
                trio.socket.socket(V4, socket.SOCK_DGRAM) as wildcard, \
                trio.socket.socket(V4, socket.SOCK_DGRAM) as peer, \
                trio.socket.socket(V4, socket.SOCK_DGRAM) as stranger:
            for sock in (connected, wildcard):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            await connected.bind(("127.0.0.1", 0))
            port = connected.getsockname()[1]
            await peer.bind(("127.0.0.1", 0))
            await connected.connect(peer.getsockname())
            await wildcard.bind(("", port))
            await peer.sendto(b"from the peer", ("127.0.0.1", port))
            await stranger.sendto(b"from a stranger", ("127.0.0.1", port))
            for sock in (connected, wildcard):
                got: list[bytes] = []
                while sock.is_readable() and len(got) < 3:
                    got.append(await sock.recv(100))
                seen.append(got)
        return seen

    real, virtual = both(scenario)
    assert real == virtual


def test_a_dual_stack_tcp_client_reaches_an_ipv4_listener_through_a_mapped_address() -> None:
    async def scenario(world: World) -> list[object]:
        with trio.socket.socket(V4) as listener, trio.socket.socket(V6) as client, \
                trio.socket.socket(V6) as specific:
            await listener.bind(("127.0.0.1", 0))
            listener.listen(5)
            port = listener.getsockname()[1]
            await client.connect(("::ffff:127.0.0.1", port))
            conn, peer = await listener.accept()
            with conn:
                local = client.getsockname()
                seen: list[object] = [local[0], peer == ("127.0.0.1", local[1]),
                                      client.getpeername()[:2] == ("::ffff:127.0.0.1", port)]
            # Binding a specific IPv6 address makes a socket IPv6-only, as Linux does.
            await specific.bind(("::1", 0))
            seen.append(specific.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY))
        return seen

    real, virtual = both(scenario)
    assert real == virtual
    assert real[0] == "::ffff:127.0.0.1"


def test_udp_buffer_sizes_set_to_zero_or_negative_are_clamped_as_linux_clamps_them() -> None:
    async def scenario(world: World) -> list[tuple[int, int, int]]:
        seen = []
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            for asked in (0, -1, 1, 100_000):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, asked)
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, asked)
                seen.append((asked, sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF),
                             sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)))
        return seen

    real, virtual = both(scenario)
    assert real[0] == (0, 4608, 2304)  # SOCK_MIN_SNDBUF, SOCK_MIN_RCVBUF
    assert real[1][1] == real[1][2] > real[3][1]  # -1: twice the maxima, above what 100,000 gives
    assert virtual == real
