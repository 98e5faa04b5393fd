"""Sockets handed in: serve_tcp(sockets=...), and listen_fds() for systemd socket activation.

The launcher below passes a bound socket the way systemd does: as file
descriptor 3, with LISTEN_FDS=1 and LISTEN_PID set to the service's own pid
(set by a shim that then execs the service, so the pid is the one it runs as).
"""

from __future__ import annotations

import os
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
