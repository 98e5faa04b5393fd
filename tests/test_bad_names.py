"""Every public entry point that takes a host meets bad names with one trionet error.

Not a bare ``UnicodeError`` from the IDNA codec inside getaddrinfo, and not an
``ExceptionGroup`` from a nursery inside trionet (issue 12, item 3); and nothing
is looked up or cached for a malformed name (issue 14, item 7).

The check every entry point runs on a host is also the hosts table's
(``Resolver.set_host``): each bad name is fed to that synchronous path too.
"""

from __future__ import annotations

import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack
from functools import partial

import pytest
import trio
import trio.testing

import trionet
from trionet import AddressError, ResolutionError, TrionetError

from .resolver_fakes import FakeResolver, installed_fake

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup  # type: ignore[import-not-found, unused-ignore]

# Each is malformed in a way the IDNA codec, getaddrinfo or the brackets trip on.
BAD_NAMES = [
    pytest.param("a" * 64 + ".example", id="label-over-63"),
    pytest.param("a" * 300, id="name-over-253"),
    pytest.param("a." * 127 + "a", id="name-255-in-short-labels"),
    pytest.param("foo..bar", id="empty-label"),
    pytest.param(".foo", id="leading-dot"),
    pytest.param("a\x00b.test", id="nul"),
    pytest.param("bell\x07.test", id="control-character"),
    pytest.param("\u0080x.test", id="non-ascii-idna-rejects"),
    pytest.param("a" * 70 + "\u00e9.test", id="encoded-label-over-63"),
    pytest.param("exa mple.test", id="space"),
    pytest.param("[example.test]", id="brackets-around-a-name"),
    pytest.param("[127.0.0.1]", id="brackets-around-ipv4"),
    pytest.param("[::1", id="unclosed-bracket"),
    pytest.param("[::1]:80", id="bracketed-with-port"),
    pytest.param("example.test:80", id="name-with-port"),
    pytest.param("", id="empty"),
]


def only_trionet_error(exc: BaseException) -> TrionetError:
    """``exc`` itself, checked to be one plain trionet error about the name."""
    assert not isinstance(exc, BaseExceptionGroup), f"an exception group escaped: {exc!r}"
    assert not isinstance(exc, UnicodeError), f"a UnicodeError escaped: {exc!r}"
    assert isinstance(exc, (AddressError, ResolutionError)), f"not a trionet error: {exc!r}"
    assert str(exc), "the message is empty"
    return exc


async def raised_by(call: Callable[[], Awaitable[object]]) -> BaseException:
    with trio.fail_after(10):
        try:
            await call()
        except BaseException as exc:  # the point: whatever comes out is inspected
            return exc
    raise AssertionError("no exception raised")


@pytest.fixture
async def fake() -> AsyncIterator[FakeResolver]:
    async with installed_fake() as resolver:
        yield resolver


async def _udp_send(host: str) -> None:
    async with trionet.open_udp_endpoint() as endpoint:
        await endpoint.send(b"x", (host, 9))


async def _udp_request(host: str) -> None:
    async with trionet.open_udp_endpoint() as endpoint:
        await endpoint.request(b"x", (host, 9), match=lambda datagram: True)


async def _udp_remote(host: str) -> None:
    async with trionet.open_udp_endpoint(remote=(host, 9)):
        pass


async def _udp_local(host: str) -> None:
    async with trionet.open_udp_endpoint(local=(host, 0)):
        pass


async def _handler(conn: object) -> None:
    raise AssertionError("no connection expected")  # pragma: no cover


async def _started(serve: Callable[..., Awaitable[object]]) -> None:
    """Run ``serve`` with ``nursery.start``, and raise what start() raised.

    The nursery is the caller's, not trionet's: it would wrap an error raised
    in its body in a group, so the error is taken out of the body first.
    """
    error: BaseException | None = None
    async with trio.open_nursery() as nursery:
        try:
            await nursery.start(serve)
        except BaseException as exc:
            error = exc
        nursery.cancel_scope.cancel()
    if error is not None:
        raise error


async def _serve_tcp(host: str) -> None:
    await _started(partial(trionet.serve_tcp, _handler, 0, host=host))


async def _open_tcp_server(host: str) -> None:
    async with trionet.open_tcp_server(_handler, 0, host=host):
        pass


async def _bind_listening_sockets(host: str) -> None:
    async with AsyncExitStack():
        for sock in await trionet.bind_listening_sockets(0, host=host):
            sock.close()


async def _udp_handler(datagram: object) -> None:
    return None  # pragma: no cover


async def _serve_udp(host: str) -> None:
    await _started(partial(trionet.serve_udp, _udp_handler, 0, host=host))


async def _happy_eyeballs(host: str) -> None:
    send, receive = trio.open_memory_channel[trionet.FamilyAnswer](2)
    async with receive:
        await trionet.resolve_happy_eyeballs(host, 80, send, resolver=trionet.Resolver())


ENTRY_POINTS: dict[str, Callable[[str], Awaitable[object]]] = {
    "resolve": lambda host: trionet.resolve(host, 80),
    "Resolver.resolve": lambda host: trionet.Resolver().resolve(host, 80),
    "resolve_happy_eyeballs": _happy_eyeballs,
    "connect_tcp": lambda host: trionet.connect_tcp(host, 80, resolver=trionet.Resolver()),
    "open_udp_endpoint(remote=)": _udp_remote,
    "open_udp_endpoint(local=)": _udp_local,
    "UDPEndpoint.send": _udp_send,
    "UDPEndpoint.request": _udp_request,
    "serve_tcp(host=)": _serve_tcp,
    "open_tcp_server(host=)": _open_tcp_server,
    "bind_listening_sockets(host=)": _bind_listening_sockets,
    "serve_udp(host=)": _serve_udp,
}


@pytest.mark.parametrize("entry", list(ENTRY_POINTS))
@pytest.mark.parametrize("host", BAD_NAMES)
async def test_a_bad_name_raises_one_trionet_error_and_looks_nothing_up(
    entry: str, host: str, fake: FakeResolver
) -> None:
    exc = await raised_by(lambda: ENTRY_POINTS[entry](host))
    only_trionet_error(exc)
    assert fake.calls == [], "a malformed name reached getaddrinfo"


@pytest.mark.parametrize("host", BAD_NAMES)
def test_the_hosts_table_rejects_each_bad_name_with_an_address_error(host: str) -> None:
    resolver = trionet.Resolver()
    with pytest.raises(AddressError) as info:
        resolver.set_host(host, "127.0.0.1")
    assert not isinstance(info.value, UnicodeError)
    with pytest.raises(AddressError) as info:
        trionet.Resolver(hosts={host: "127.0.0.1"})
    assert not isinstance(info.value, UnicodeError)
    assert resolver.hosts == {}


async def test_a_malformed_name_is_never_cached(fake: FakeResolver) -> None:
    resolver = trionet.Resolver()
    for _ in range(2):
        with pytest.raises(AddressError):
            await resolver.resolve("foo..bar", 80)
        with pytest.raises(AddressError):
            await resolver.resolve("[dual.test]", 80)
    assert resolver.statistics().cache_entries == 0
    assert resolver.statistics().lookups == 0
    assert fake.calls == []


BRACKETED = ["[::1]", "[fe80::1%1]", "[::ffff:127.0.0.1]"]


@pytest.mark.parametrize("host", BRACKETED)
async def test_a_bracketed_ipv6_literal_is_a_literal_everywhere(host: str, fake: FakeResolver) -> None:
    bare = host[1:-1]
    assert await trionet.resolve(host, 80) == await trionet.resolve(bare, 80)
    send, receive = trio.open_memory_channel[trionet.FamilyAnswer](2)
    await trionet.resolve_happy_eyeballs(host, 80, send)
    answers = [answer async for answer in receive]
    assert [answer.addresses for answer in answers] == [tuple(await trionet.resolve(bare, 80))]
    assert fake.calls == []


async def test_connect_tcp_takes_a_bracketed_ipv6_literal() -> None:
    listener = trio.socket.socket(socket.AF_INET6)
    with listener:
        await listener.bind(("::1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        with trio.fail_after(10):
            async with await trionet.connect_tcp("[::1]", port) as conn:
                assert str(conn.peer) == f"[::1]:{port}"


async def test_udp_send_takes_a_bracketed_ipv6_literal_host() -> None:
    async with trionet.open_udp_endpoint(local=("::1", 0)) as receiver, trionet.open_udp_endpoint(
        local=("::1", 0)
    ) as sender:
        await sender.send(b"hi", ("[::1]", receiver.local.port))
        with trio.fail_after(10):
            datagram = await receiver.receive()
    assert datagram.data == b"hi"


async def test_servers_listen_on_a_bracketed_ipv6_literal() -> None:
    async with trionet.open_tcp_server(_handler, 0, host="[::1]") as server:
        assert [str(address.ip) for address in server.addresses] == ["::1"]
    sockets = await trionet.bind_listening_sockets(0, host="[::1]")
    try:
        assert [sock.getsockname()[0] for sock in sockets] == ["::1"]
    finally:
        for sock in sockets:
            sock.close()
