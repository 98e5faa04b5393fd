"""Sockets handed in: serve_tcp(sockets=...), and listen_fds() for systemd socket activation.

The launcher below passes a bound socket the way systemd does: as file
descriptor 3, with LISTEN_FDS=1 and LISTEN_PID set to the service's own pid
(set by a shim that then execs the service, so the pid is the one it runs as).
"""

from __future__ import annotations

import os
import pathlib
import signal
import socket
import subprocess
import sys

import pytest
import trio

import trionet
from trionet import Lines, TCPConnection

from .conftest import open_fd_count
from .processes import CLI
from .processes import Lines as OutputLines

TIMEOUT = 20
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file descriptors")


async def echo(conn: TCPConnection) -> None:
    async for line in conn.channel:
        await conn.channel.send(line)


async def test_a_server_serves_sockets_handed_to_it_and_closes_them() -> None:
    before = open_fd_count()
    listener = trio.socket.socket()
    await listener.bind(("127.0.0.1", 0))  # bound, not listening: the server listens
    port = listener.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        async with trionet.open_tcp_server(echo, sockets=[listener], codec=Lines()) as server:
            assert [str(address) for address in server.addresses] == [f"127.0.0.1:{port}"]
            async with await trionet.connect_tcp("127.0.0.1", port, codec=Lines()) as conn:
                await conn.channel.send(b"handed in")
                assert await conn.channel.receive() == b"handed in"
    assert listener.fileno() == -1  # closed by the server
    assert open_fd_count() == before


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({}, TypeError, "needs a port"),
        ({"port": 0, "sockets": []}, TypeError, "not both"),
        ({"sockets": []}, ValueError, "is empty"),
    ],
)
async def test_sockets_or_a_port_not_both_nor_neither(
    arguments: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await trionet.serve_tcp(echo, **arguments)  # type: ignore[arg-type]


async def test_a_udp_socket_is_refused() -> None:
    with trio.socket.socket(type=socket.SOCK_DGRAM) as udp:
        await udp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="stream sockets"):
            await trionet.serve_tcp(echo, sockets=[udp])


async def unix_echo(conn: trionet.UnixConnection) -> None:
    async for line in conn.channel:
        await conn.channel.send(line)


async def test_a_unix_server_serves_a_socket_handed_to_it_and_leaves_its_file(
    tmp_path: pathlib.Path,
) -> None:
    before = open_fd_count()
    path = str(tmp_path / "handed.sock")
    listener = trio.socket.socket(socket.AF_UNIX)
    await listener.bind(path)  # bound by "systemd", not listening yet
    with trio.fail_after(TIMEOUT):
        async with trionet.open_unix_server(unix_echo, sockets=[listener], codec=Lines()) as server:
            assert server.path == path
            async with await trionet.connect_unix(path, codec=Lines()) as conn:
                await conn.channel.send(b"handed in")
                assert await conn.channel.receive() == b"handed in"
    assert listener.fileno() == -1  # closed by the server
    assert (tmp_path / "handed.sock").is_socket()  # the file belongs to whoever bound it
    assert open_fd_count() == before


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({}, TypeError, "needs a path"),
        ({"path": "x.sock", "sockets": []}, TypeError, "not both"),
        ({"sockets": [], "mode": 0o600}, TypeError, "not both"),
        ({"sockets": []}, ValueError, "is empty"),
    ],
)
async def test_a_unix_server_takes_sockets_or_a_path(
    arguments: dict[str, object], error: type[Exception], match: str
) -> None:
    with pytest.raises(error, match=match):
        await trionet.serve_unix(unix_echo, **arguments)  # type: ignore[arg-type]


async def test_a_unix_server_refuses_a_tcp_socket_and_two_sockets(tmp_path: pathlib.Path) -> None:
    with trio.socket.socket() as tcp:
        await tcp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="AF_UNIX"):
            await trionet.serve_unix(unix_echo, sockets=[tcp])
    with trio.socket.socket(socket.AF_UNIX) as one, trio.socket.socket(socket.AF_UNIX) as two:
        await one.bind(str(tmp_path / "one"))
        await two.bind(str(tmp_path / "two"))
        with pytest.raises(ValueError, match="one socket, not 2"):
            await trionet.serve_unix(unix_echo, sockets=[one, two])
    with trio.socket.socket(socket.AF_UNIX) as unbound, pytest.raises(ValueError, match="not bound"):
        await trionet.serve_unix(unix_echo, sockets=[unbound])


async def test_a_udp_server_serves_a_socket_handed_to_it_and_closes_it() -> None:
    before = open_fd_count()

    async def upper(datagram: trionet.Datagram) -> bytes:
        return datagram.data.upper()

    for family, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        handed = trio.socket.socket(family, socket.SOCK_DGRAM)
        await handed.bind((host, 0))
        port = handed.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            async with trionet.open_udp_server(upper, sockets=[handed]) as server:
                assert server.port == port
                async with trionet.open_udp_endpoint() as client:
                    await client.send(b"handed in", trionet.Address(host, port))
                    reply = await client.receive()
                    assert (reply.data, reply.address.port) == (b"HANDED IN", port)
        assert handed.fileno() == -1  # closed by the server
    assert open_fd_count() == before


async def test_a_udp_endpoint_takes_a_bound_socket_too() -> None:
    handed = trio.socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    handed.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    await handed.bind(("::", 0))
    port = handed.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        async with trionet.open_udp_endpoint(sock=handed) as endpoint, trionet.open_udp_endpoint(
            family=socket.AF_INET
        ) as v4:
            assert endpoint.local.port == port
            await v4.send(b"over IPv4", trionet.Address("127.0.0.1", port))
            datagram = await endpoint.receive()  # a dual-stack socket: reported as plain IPv4
            assert (datagram.data, datagram.address.host) == (b"over IPv4", "127.0.0.1")
    assert handed.fileno() == -1


@pytest.mark.parametrize(
    ("arguments", "error", "match"),
    [
        ({}, TypeError, "needs a port"),
        ({"port": 0, "sockets": []}, TypeError, "not both"),
        ({"sockets": [], "reuse_port": True}, TypeError, "not both"),
        ({"sockets": []}, ValueError, "one socket, not 0"),
    ],
)
async def test_a_udp_server_takes_sockets_or_a_port(
    arguments: dict[str, object], error: type[Exception], match: str
) -> None:
    async def nothing(datagram: trionet.Datagram) -> None:
        pass

    with pytest.raises(error, match=match):
        await trionet.serve_udp(nothing, **arguments)  # type: ignore[arg-type]


async def test_a_udp_endpoint_refuses_a_stream_socket_and_an_unbound_one() -> None:
    with trio.socket.socket() as tcp:
        await tcp.bind(("127.0.0.1", 0))
        with pytest.raises(ValueError, match="datagram socket"):
            async with trionet.open_udp_endpoint(sock=tcp):
                pass
    with trio.socket.socket(type=socket.SOCK_DGRAM) as unbound, pytest.raises(ValueError, match="not bound"):
        async with trionet.open_udp_endpoint(sock=unbound):
            pass
    with trio.socket.socket(type=socket.SOCK_DGRAM) as udp, pytest.raises(TypeError, match="not both"):
        async with trionet.open_udp_endpoint(("127.0.0.1", 0), sock=udp):
            pass


def test_listen_fds_takes_nothing_meant_for_another_process_and_clears_the_variables(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("LISTEN_FDS", "1")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid() + 1))  # a parent's, inherited
    monkeypatch.setenv("LISTEN_FDNAMES", "http")
    assert trionet.listen_fds() == []
    assert not {"LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"} & set(os.environ)
    assert trionet.listen_fds() == []  # nothing left for a second call, or a child


def test_listen_fds_refuses_garbage(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LISTEN_FDS", "one")
    monkeypatch.setenv("LISTEN_PID", str(os.getpid()))
    with pytest.raises(ValueError, match="must be numbers"):
        trionet.listen_fds()


# What systemd does between fork and exec, done by a shim: the service's pid in
# LISTEN_PID (exec keeps the pid), then the service itself.
SHIM = "import os, sys; os.environ['LISTEN_PID'] = str(os.getpid()); os.execv(sys.argv[1], sys.argv[1:])"


async def test_python_m_trionet_serve_uses_the_socket_systemd_passes() -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]

    def on_fd_3() -> None:  # in the child, before exec: the socket becomes descriptor 3
        os.dup2(listener.fileno(), 3)

    env = {**os.environ, "LISTEN_FDS": "1", "LISTEN_FDNAMES": "echo", "PYTHONUNBUFFERED": "1"}
    env.pop("LISTEN_PID", None)
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", SHIM, *CLI, "serve", "--codec", "lines"],
        env=env, preexec_fn=on_fd_3, pass_fds=(3, listener.fileno()),  # keep 3 open after preexec
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
    )
    listener.close()  # the service holds it now
    assert process.stdout is not None
    output = OutputLines(process.stdout)
    try:
        with trio.fail_after(TIMEOUT):
            line = await output.until("listening on")
            assert f"127.0.0.1:{port}" in line
            assert "sockets passed by the service manager" in line
            async with await trionet.connect_tcp("127.0.0.1", port, codec=Lines()) as conn:
                await conn.channel.send(b"activated")
                assert await conn.channel.receive() == b"activated"
            process.send_signal(signal.SIGINT)
            await output.rest()
            assert await process.wait() == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
        if process.stderr is not None:
            await process.stderr.aclose()
