"""Idle time read from the kernel (Linux TCP_INFO): no wrapper on a plain TCP connection.

With ``idle_timeout`` on a plain TCP server (the default since issue 15.4), the
handler gets trio's own :class:`trio.SocketStream`, and the server's idle
timer asks the kernel when data last moved (issue 14.10: a wrapper's
``receive_some`` frame cost 232 bytes per waiting connection). Real loopback
sockets and trio's real clock: the kernel's times are real milliseconds.

Through the public API; ``KernelActivity`` itself, and the wrapper used where
the kernel's times cannot be (a mock clock, the virtual network), are tested in
``test_adapter_internals.py``.
"""

from __future__ import annotations

import sys

import pytest
import trio
import trio.testing

import trionet
from trionet import TCPConnection

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")


async def test_a_plain_tcp_handler_gets_trios_own_stream_with_an_idle_timeout() -> None:
    streams: list[object] = []

    async def handler(conn: TCPConnection) -> None:
        streams.append(conn.stream)

    async with trionet.open_tcp_server(handler, 0, host="127.0.0.1", idle_timeout=60) as server:
        with trio.fail_after(5):
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            assert await stream.receive_some() == b""  # the handler returned
            await stream.aclose()
    assert [type(s) for s in streams] == [trio.SocketStream]


async def test_a_silent_connection_is_shed_after_the_idle_timeout(no_fd_leak: None) -> None:
    log = trionet.EventLog()

    async def handler(conn: TCPConnection) -> None:
        await conn.stream.receive_some()

    async with trionet.open_tcp_server(handler, 0, host="127.0.0.1", idle_timeout=0.2,
                                       observer=log) as server:
        with trio.fail_after(10):
            # The server's timer starts when it accepts, which the scheduler may
            # run before this task resumes from the connect: start the watch first.
            start = trio.current_time()
            stream = await trio.open_tcp_stream("127.0.0.1", server.port)
            assert await stream.receive_some() == b""  # the server closed it
            took = trio.current_time() - start
            await stream.aclose()
    assert took >= 0.2
    assert [e.details["reason"] for e in log.events if e.kind == "tcp.shed"] == ["idle_timeout"]
