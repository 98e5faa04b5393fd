"""serve_tcp(proxy_protocol=True): the client's address from a load balancer's PROXY header.

Real loopback sockets play the balancer: they send a version 1 or 2 header
naming 203.0.113.7:4242 (a documentation address) and then the client's bytes,
in one write or a byte at a time, over TCP and under TLS. The parser's own
cases (the specification's examples, every malformed form) are in
``test_sansio_internals.py``.
"""

from __future__ import annotations

import functools
import ipaddress
import logging
import socket
import ssl
import struct

import pytest
import trio
import trio.testing

import trionet
from trionet import Address, EventLog, Lines, ProxyProtocolError, TCPConnection
from trionet.testing import VirtualNetwork

from .conftest import TLS_HOSTNAME

TIMEOUT = 10
CLIENT = Address("203.0.113.7", 4242)
FRONT = Address("192.0.2.10", 443)
V2_SIGNATURE = b"\r\n\r\n\x00\r\nQUIT\n"


def v1(source: Address = CLIENT, destination: Address = FRONT) -> bytes:
    family = "TCP6" if ":" in source.host else "TCP4"
    return (f"PROXY {family} {source.host} {destination.host} {source.port} "
            f"{destination.port}\r\n").encode()


def v2(source: Address = CLIENT, destination: Address = FRONT, *, command: int = 0x1,
       tlvs: bytes = b"") -> bytes:
    ipv6 = ":" in source.host
    packed = (ipaddress.ip_address(source.host).packed + ipaddress.ip_address(destination.host).packed
              + struct.pack("!HH", source.port, destination.port))
    return (V2_SIGNATURE + bytes([0x20 | command, 0x21 if ipv6 else 0x11])
            + struct.pack("!H", len(packed) + len(tlvs)) + packed + tlvs)


async def who_is_there(conn: TCPConnection) -> None:
    line = await conn.channel.receive()
    await conn.channel.send(f"{conn.peer} -> {conn.local}: {line.decode()}".encode())


async def balancer(port: int, header: bytes, payload: bytes, *, byte_at_a_time: bool = False,
                   context: ssl.SSLContext | None = None) -> bytes:
    """Connect as a load balancer would: the header first, then the client's bytes."""
    sock = trio.socket.socket()
    await sock.connect(("127.0.0.1", port))
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    raw = trio.SocketStream(sock)
    async with raw:
        chunks = [header[i:i + 1] for i in range(len(header))] if byte_at_a_time else [header]
        for chunk in chunks:
            await raw.send_all(chunk)
            if byte_at_a_time:
                await trio.testing.wait_all_tasks_blocked()  # each byte its own segment, read
        stream: trio.abc.Stream = raw
        if context is not None:
            stream = trio.SSLStream(raw, context, server_hostname=TLS_HOSTNAME)
        channel = trionet.MessageChannel(stream, Lines())
        await channel.send(payload)
        return await channel.receive()


@pytest.mark.parametrize("make_header", [v1, v2], ids=["v1", "v2"])
@pytest.mark.parametrize("byte_at_a_time", [False, True], ids=["one-write", "byte-at-a-time"])
async def test_the_peer_is_the_client_the_header_names(
    make_header: functools.partial[bytes], byte_at_a_time: bool, no_fd_leak: None
) -> None:
    with trio.fail_after(TIMEOUT):
        async with trionet.open_tcp_server(who_is_there, 0, host="127.0.0.1", codec=Lines(),
                                           proxy_protocol=True) as server:
            reply = await balancer(server.port, make_header(), b"hello", byte_at_a_time=byte_at_a_time)
    assert reply == b"203.0.113.7:4242 -> 192.0.2.10:443: hello"


@pytest.mark.parametrize("make_header", [v1, v2], ids=["v1", "v2"])
async def test_the_header_comes_before_tls(
    make_header: functools.partial[bytes], contexts: tuple[ssl.SSLContext, ssl.SSLContext],
    no_fd_leak: None,
) -> None:
    server_context, client_context = contexts
    with trio.fail_after(TIMEOUT):
        async with trionet.open_tcp_server(who_is_there, 0, host="127.0.0.1", codec=Lines(),
                                           ssl_context=server_context, proxy_protocol=True) as server:
            reply = await balancer(server.port, make_header(), b"over TLS", context=client_context)
    assert reply == b"203.0.113.7:4242 -> 192.0.2.10:443: over TLS"


async def test_an_ipv6_client_and_the_headers_tlvs_reach_the_handler() -> None:
    seen: list[trionet.ProxyHeader | None] = []

    async def record(conn: TCPConnection) -> None:
        seen.append(conn.proxy)
        await who_is_there(conn)

    client6, front6 = Address("2001:db8::7", 4242), Address("2001:db8::10", 443)
    tlv = bytes([0x05]) + struct.pack("!H", 4) + b"abcd"  # PP2_TYPE_UNIQUE_ID
    with trio.fail_after(TIMEOUT):
        async with trionet.open_tcp_server(record, 0, host="127.0.0.1", codec=Lines(),
                                           proxy_protocol=True) as server:
            reply = await balancer(server.port, v2(client6, front6, tlvs=tlv), b"hi")
    assert reply == b"[2001:db8::7]:4242 -> [2001:db8::10]:443: hi"
    (header,) = seen
    assert header is not None
    assert (header.version, header.command, header.transport, header.tlvs) == (2, "PROXY", "STREAM",
                                                                              ((0x05, b"abcd"),))


@pytest.mark.parametrize(
    "header", [v2(command=0x0), b"PROXY UNKNOWN\r\n", b"PROXY UNKNOWN ::1 ::1 1 2\r\n"],
    ids=["v2-LOCAL", "v1-UNKNOWN", "v1-UNKNOWN-with-addresses"],
)
async def test_a_header_without_addresses_leaves_the_connections_own(header: bytes) -> None:
    # Section 2.1 and 2.2: LOCAL (a health check of the balancer's own) and
    # UNKNOWN carry no client: the connection's own addresses stand.
    with trio.fail_after(TIMEOUT):
        async with trionet.open_tcp_server(who_is_there, 0, host="127.0.0.1", codec=Lines(),
                                           proxy_protocol=True) as server:
            reply = await balancer(server.port, header, b"check")
    assert reply.startswith(b"127.0.0.1:")
    assert reply.endswith(f" -> 127.0.0.1:{server.port}: check".encode())


MALFORMED = [
    b"GET / HTTP/1.1\r\n\r\n",  # no header at all
    b"PROXY TCP4 203.0.113.7 192.0.2.10 4242\r\n",  # a port missing
    b"PROXY TCP4 203.0.113.7 192.0.2.10 4242 65536\r\n",  # not a port
    b"PROXY TCP4 203.0.113.7 192.0.2.10 04242 443\r\n",  # a leading zero
    b"PROXY TCP4 2001:db8::7 192.0.2.10 4242 443\r\n",  # IPv6 in TCP4
    b"PROXY TCP5 203.0.113.7 192.0.2.10 4242 443\r\n",  # no such protocol
    b"PROXY " + b"x" * 120 + b"\r\n",  # longer than 107 bytes
    V2_SIGNATURE + bytes([0x31, 0x11]) + struct.pack("!H", 12) + bytes(12),  # version 3
    V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 8) + bytes(8),  # address block short
    V2_SIGNATURE + bytes([0x21, 0x11]) + struct.pack("!H", 60000) + bytes(100),  # over the limit
]


async def test_ten_malformed_headers_each_end_their_connection_and_the_server_lives(
    caplog: pytest.LogCaptureFixture, no_fd_leak: None,
) -> None:
    caplog.set_level(logging.INFO, logger="trionet")
    log = EventLog(kinds=("tcp.shed", "tcp.accept"))
    handled: list[Address] = []

    async def handler(conn: TCPConnection) -> None:
        handled.append(conn.peer)
        await who_is_there(conn)

    with trio.fail_after(TIMEOUT):
        async with trionet.open_tcp_server(handler, 0, host="127.0.0.1", codec=Lines(),
                                           proxy_protocol=True, observer=log) as server:
            for header in MALFORMED:
                with trio.socket.socket() as sock:
                    await sock.connect(("127.0.0.1", server.port))
                    await sock.send(header)  # each is wrong before it ends: no more is awaited
                    try:  # the server closes it, answering nothing (a reset: bytes were unread)
                        while await sock.recv(4096):
                            pass
                    except ConnectionResetError:
                        pass
            # And a good one after them all.
            assert await balancer(server.port, v1(), b"still here") == (
                b"203.0.113.7:4242 -> 192.0.2.10:443: still here")
            assert server.statistics().connections_shed == len(MALFORMED)
    sheds = log.of_kind("tcp.shed")
    assert len(sheds) == len(MALFORMED)
    assert {event.details["reason"] for event in sheds} == {"proxy_protocol"}
    assert all(isinstance(event.details["error"], ProxyProtocolError) for event in sheds)
    assert handled == [CLIENT]
    records = [r for r in caplog.records if "proxy_protocol" in r.getMessage()]
    # Logged at INFO, rate-limited per peer host: the first in full, then a
    # line saying the rest are suppressed (and counted).
    assert len(records) == 2
    assert {r.levelno for r in records} == {logging.INFO}
    assert "are suppressed" in records[-1].getMessage()


@pytest.mark.net(default_host="server")
async def test_a_peer_that_sends_no_header_is_shed_after_ten_seconds(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock,
) -> None:
    log = EventLog(kinds=("tcp.shed",))
    async with trionet.open_tcp_server(who_is_there, 80, codec=Lines(), proxy_protocol=True,
                                       observer=log) as server:
        with net.host("client"):
            stream = await trio.open_tcp_stream("10.0.0.1", 80)
            began = trio.current_time()
            assert await stream.receive_some() == b""  # closed by the server
            assert trio.current_time() - began == pytest.approx(10)
            await stream.aclose()
        assert server.statistics().connections_shed == 1
    (event,) = log
    assert "no PROXY protocol header within 10 s" in str(event.details["error"])
