"""One shape for every server and client (issue 16.2).

* ``open_*_server`` takes exactly the arguments of its ``serve_*`` (derived, not
  restated) and documents every one of them.
* Every server, UDP included, keeps a ``shutdown_grace``: the grace of a
  ``shutdown()`` called without one and of leaving the ``async with`` block.
* Options are checked before anything is bound, with the same errors on every
  entry point.
* Clients take the channel options servers have; ``connect_unix`` takes those of
  ``connect_tcp`` that apply to a path, TLS included.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import os
import shutil
import socket
import ssl
import tempfile
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import trio
import trio.testing

import trionet
from trionet import (
    Datagram,
    EventLog,
    FrameTimeout,
    Lines,
    TCPConnection,
    UnixConnection,
    connect_tcp,
    connect_unix,
    open_tcp_server,
    open_udp_endpoint,
    open_udp_server,
    open_unix_server,
    serve_tcp,
    serve_udp,
    serve_unix,
)
from trionet.testing import VirtualNetwork

from .conftest import TLS_HOSTNAME

PAIRS = [
    (serve_tcp, open_tcp_server, trionet.TCPServer),
    (serve_unix, open_unix_server, trionet.UnixServer),
    (serve_udp, open_udp_server, trionet.UDPServer),
]
IDS = ["tcp", "unix", "udp"]


# ---- open_* derived from serve_* -------------------------------------------------


@pytest.mark.parametrize(("serve", "context", "server_type"), PAIRS, ids=IDS)
def test_open_server_takes_exactly_the_arguments_of_serve_server(
    serve: Callable[..., Any], context: Callable[..., Any], server_type: type
) -> None:
    served = inspect.signature(serve, eval_str=True).parameters
    opened = inspect.signature(context).parameters
    assert "task_status" in served
    assert list(opened) == [name for name in served if name != "task_status"]
    for name, parameter in opened.items():
        assert parameter.kind == served[name].kind
        assert parameter.default == served[name].default, name
        assert parameter.annotation == served[name].annotation, name
    returns = inspect.signature(context).return_annotation
    assert returns == contextlib.AbstractAsyncContextManager[server_type]  # type: ignore[valid-type]


@pytest.mark.parametrize(("serve", "context", "server_type"), PAIRS, ids=IDS)
def test_open_server_documents_every_argument_it_takes(
    serve: Callable[..., Any], context: Callable[..., Any], server_type: type
) -> None:
    doc = inspect.getdoc(context)
    assert doc is not None
    args = doc[doc.index("\nArgs:\n"):doc.index("\nYields:\n")]
    for name in inspect.signature(context).parameters:
        assert f"\n  {name}:" in args or f" {name}," in args or f", {name}:" in args, name
    assert "task_status:" not in args
    assert context.__name__ == context.__qualname__ == "open_" + serve.__name__.split("_")[1] + "_server"
    assert context.__module__ == "trionet"


# ---- shutdown_grace --------------------------------------------------------------


def stubborn_handler() -> tuple[Callable[[TCPConnection], Any], list[float]]:
    """A handler that never returns, and the times at which it was cancelled."""
    cancelled_at: list[float] = []

    async def stubborn(conn: TCPConnection) -> None:
        try:
            await trio.sleep_forever()
        finally:
            cancelled_at.append(trio.current_time())

    return stubborn, cancelled_at


@pytest.mark.net(default_host="server")
async def test_a_tcp_server_shuts_down_with_its_own_grace_when_none_is_given(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    stubborn, cancelled_at = stubborn_handler()
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            functools.partial(serve_tcp, stubborn, 7, host="127.0.0.1", shutdown_grace=7)
        )
        stream = await trio.open_tcp_stream("127.0.0.1", 7)
        await trio.testing.wait_all_tasks_blocked()
        begin = trio.current_time()
        await server.shutdown()
        assert cancelled_at == [pytest.approx(begin + 7)]
        await stream.aclose()


@pytest.mark.net(default_host="server")
async def test_leaving_open_tcp_server_uses_its_shutdown_grace(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    stubborn, cancelled_at = stubborn_handler()
    async with open_tcp_server(stubborn, 7, host="127.0.0.1", shutdown_grace=3):
        stream = await trio.open_tcp_stream("127.0.0.1", 7)
        await trio.testing.wait_all_tasks_blocked()
        begin = trio.current_time()
    assert cancelled_at == [pytest.approx(begin + 3)]
    await stream.aclose()


@pytest.mark.net(default_host="server")
async def test_an_explicit_grace_overrides_the_servers_own(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    stubborn, _ = stubborn_handler()
    async with open_tcp_server(stubborn, 7, host="127.0.0.1", shutdown_grace=100) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", 7)
        await trio.testing.wait_all_tasks_blocked()
        begin = trio.current_time()
        await server.shutdown(grace=2)
        assert trio.current_time() == pytest.approx(begin + 2)
        server.shutdown_nowait()  # already stopped: a no-op, not an error
    await stream.aclose()


@pytest.mark.net(default_host="server")
async def test_a_udp_server_shares_the_shutdown_of_the_stream_servers(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    log = EventLog(kinds=("udp.shutdown.begin", "udp.shutdown.grace_expired", "udp.shutdown.done"))
    started = trio.Event()

    async def slow(datagram: Datagram) -> bytes:
        started.set()
        await trio.sleep_forever()
        raise AssertionError("not reached")

    async with (
        open_udp_server(slow, 53, host="127.0.0.1", shutdown_grace=4, observer=log) as server,
        open_udp_endpoint() as client,
    ):
        await client.send(b"q", ("127.0.0.1", 53))
        await started.wait()
        begin = trio.current_time()
        server.shutdown_nowait()
        server.shutdown_nowait(grace=10)  # a second request cannot move the deadline away
    assert trio.current_time() == pytest.approx(begin + 4)
    assert [event.kind for event in log] == [
        "udp.shutdown.begin", "udp.shutdown.grace_expired", "udp.shutdown.done",
    ]
    assert next(iter(log)).details == {"grace": 4.0, "active": 1}
    assert server.statistics().shutting_down
    assert server.addresses == (trionet.Address("127.0.0.1", 53),)
    assert type(server).shutdown is trionet.TCPServer.shutdown


# ---- options checked before anything is bound ------------------------------------


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("shutdown_grace", -1, ValueError),
        ("shutdown_grace", float("nan"), ValueError),
        ("shutdown_grace", True, TypeError),
        ("shutdown_grace", "5", TypeError),
        ("strict", None, None),  # any value has a truth; kept as a bool
    ],
)
@pytest.mark.parametrize("serve", [serve_tcp, serve_udp], ids=["tcp", "udp"])
async def test_every_server_checks_shutdown_grace_the_same_way(
    serve: Callable[..., Any], option: str, value: object, error: type[Exception] | None
) -> None:
    async def handler(_: Any) -> None:
        return None

    if error is None:
        async with trio.open_nursery() as nursery:
            server = await nursery.start(functools.partial(serve, handler, 0, host="127.0.0.1",
                                                           **{option: value}))
            server.shutdown_nowait(grace=0)
        return
    with pytest.raises(error, match=option):
        await serve(handler, 0, host="127.0.0.1", **{option: value})


@pytest.mark.parametrize(
    ("option", "value", "error"),
    [
        ("abort_timeout", None, TypeError),
        ("abort_timeout", 0, ValueError),
        ("tls_handshake_timeout", None, TypeError),
        ("max_connections", 0, ValueError),
        ("max_connections", True, TypeError),
        ("idle_timeout", -5, ValueError),
        ("frame_timeout", "60", TypeError),
    ],
)
async def test_stream_server_options_are_checked_before_the_socket_is_bound(
    no_fd_leak: None, option: str, value: object, error: type[Exception]
) -> None:
    async def handler(_: Any) -> None:
        return None

    entries: list[tuple[Callable[..., Any], object]] = [
        (serve_tcp, 0), (serve_unix, "/nonexistent-dir/s.sock"),
    ]
    for serve, where in entries:
        with pytest.raises(error, match=option):
            await serve(handler, where, **{option: value})


async def test_max_pending_handshakes_is_an_option_of_unix_servers_too() -> None:
    assert inspect.signature(serve_unix).parameters["max_pending_handshakes"].default == (
        trionet.DEFAULT_MAX_PENDING_HANDSHAKES
    )


# ---- clients ---------------------------------------------------------------------


@pytest.mark.net(default_host="client")
async def test_connect_tcp_takes_a_frame_timeout_against_a_trickling_server(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def trickle(conn: TCPConnection) -> None:
        await conn.stream.send_all(b"half a li")
        await trio.sleep_forever()

    with net.host("server"):
        async with open_tcp_server(trickle, 7, shutdown_grace=0):
            conn = await connect_tcp("10.0.0.1", 7, codec=Lines(), frame_timeout=5)
            async with conn:
                begin = trio.current_time()
                with pytest.raises(FrameTimeout):
                    await conn.channel.receive()
                assert trio.current_time() - begin == pytest.approx(5)


async def test_client_channel_options_are_checked(no_fd_leak: None) -> None:
    async def handler(conn: TCPConnection) -> None:
        await trio.sleep_forever()

    async with open_tcp_server(handler, 0, host="127.0.0.1", shutdown_grace=0) as server:
        with pytest.raises(ValueError, match="abort_timeout"):
            await connect_tcp("127.0.0.1", server.port, codec=Lines(), abort_timeout=0)
        with pytest.raises(ValueError, match="read_size"):
            await connect_tcp("127.0.0.1", server.port, codec=Lines(), read_size=0)


@pytest.fixture
def sock_path() -> Iterator[str]:
    # Not tmp_path: socket paths are limited to about 100 bytes.
    directory = tempfile.mkdtemp(prefix="tn-", dir="/tmp")
    try:
        yield os.path.join(directory, "s.sock")
    finally:
        shutil.rmtree(directory)


unix_only = pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets")


async def echo(conn: UnixConnection) -> None:
    async for message in conn.channel:
        await conn.channel.send(message)


@unix_only
async def test_connect_unix_speaks_tls_to_a_tls_unix_server(
    sock_path: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    server_context, client_context = contexts
    async with open_unix_server(echo, sock_path, codec=Lines(), ssl_context=server_context):
        conn = await connect_unix(sock_path, codec=Lines(), ssl_context=client_context,
                                  server_hostname=TLS_HOSTNAME)
        async with conn:
            assert isinstance(conn.stream, trio.SSLStream)
            await conn.channel.send(b"over TLS")
            assert await conn.channel.receive() == b"over TLS"


@unix_only
async def test_connect_unix_names_the_path_when_the_certificate_is_wrong(
    sock_path: str, contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    server_context, client_context = contexts
    async with open_unix_server(echo, sock_path, codec=Lines(), ssl_context=server_context):
        with pytest.raises(trio.BrokenResourceError, match=f"TLS handshake with {sock_path} failed: "
                           "certificate verify failed"):
            await connect_unix(sock_path, ssl_context=client_context, server_hostname="other.test")


@unix_only
async def test_connect_unix_takes_a_frame_timeout(sock_path: str, no_fd_leak: None) -> None:
    release = trio.Event()

    async def trickle(conn: UnixConnection) -> None:
        await conn.stream.send_all(b"half a li")
        await release.wait()

    async with open_unix_server(trickle, sock_path, shutdown_grace=0):
        async with await connect_unix(sock_path, codec=Lines(), frame_timeout=0.05) as conn:
            with pytest.raises(FrameTimeout):
                await conn.channel.receive()
        release.set()


@unix_only
async def test_connect_unix_checks_its_timeouts(sock_path: str) -> None:
    with pytest.raises(ValueError, match="connect_timeout"):
        await connect_unix(sock_path, connect_timeout=0)


async def test_serve_tcp_resolves_its_host_with_the_resolver_given(no_fd_leak: None) -> None:
    # As serve_udp and open_udp_endpoint: a name only this resolver knows.
    resolver = trionet.Resolver(hosts={"app.internal": "127.0.0.1"})

    async def hello(conn: TCPConnection) -> None:
        await conn.stream.send_all(b"hi")

    async with open_tcp_server(hello, 0, host="app.internal", resolver=resolver) as server:
        assert [str(address.host) for address in server.addresses] == ["127.0.0.1"]
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        async with stream:
            assert await stream.receive_some() == b"hi"
    with pytest.raises(trionet.ResolutionError):
        await serve_tcp(hello, 0, host="app.internal")  # the default resolver does not know it


async def test_a_tls_connection_gives_its_ssl_object_typed(
    contexts: tuple[ssl.SSLContext, ssl.SSLContext], no_fd_leak: None
) -> None:
    server_context, client_context = contexts
    seen: list[str | None] = []

    async def handler(conn: TCPConnection) -> None:
        assert conn.ssl_object is not None  # trio still keeps it where trionet looks
        seen.append(conn.ssl_object.version())
        await conn.channel.send(b"hello")

    async with open_tcp_server(handler, 0, host="127.0.0.1", codec=Lines(),
                               ssl_context=server_context) as server:
        conn = await connect_tcp("127.0.0.1", server.port, codec=Lines(), ssl_context=client_context,
                                 server_hostname=TLS_HOSTNAME)
        async with conn:
            assert await conn.channel.receive() == b"hello"
            assert conn.ssl_object is not None
            assert conn.ssl_object.version() in ("TLSv1.2", "TLSv1.3")
    assert len(seen) == 1
    assert seen[0] in ("TLSv1.2", "TLSv1.3")


async def test_a_plain_connection_has_no_ssl_object() -> None:
    async def handler(conn: TCPConnection) -> None:
        assert conn.ssl_object is None
        await conn.channel.send(b"plain")

    async with (
        open_tcp_server(handler, 0, host="127.0.0.1", codec=Lines()) as server,
        await connect_tcp("127.0.0.1", server.port, codec=Lines()) as conn,
    ):
        assert conn.ssl_object is None
        assert await conn.channel.receive() == b"plain"
