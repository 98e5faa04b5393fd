"""examples/http_server.py: h11 on conn.stream, served to the standard library's http.client.

The example is run as a program (as its docstring says) and driven by
``http.client``, a client nobody here wrote; its head timeout and its graceful
shutdown are checked in-process on the virtual network, where ten seconds take
none.
"""

from __future__ import annotations

import http.client
import importlib.util
import signal
import sys
from types import ModuleType

import pytest
import trio
import trio.testing

import trionet
from trionet.testing import VirtualNetwork

from .processes import EXAMPLES, running

pytest.importorskip("h11")
TIMEOUT = 30


def load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("http_server_example", EXAMPLES / "http_server.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def get_and_post(port: int) -> list[tuple[int, str | None, bytes]]:
    """Two requests on one keep-alive connection, as a blocking client does them."""
    client = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        answers = []
        client.request("GET", "/")
        response = client.getresponse()
        answers.append((response.status, response.getheader("connection"), response.read()))
        client.request("POST", "/echo", body=b"x" * 100_000)
        response = client.getresponse()
        answers.append((response.status, response.getheader("connection"), response.read()))
        return answers
    finally:
        client.close()


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")
async def test_the_example_serves_http_client_on_a_keep_alive_connection() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([sys.executable, str(EXAMPLES / "http_server.py"), "0"]) as server:
            line = await server.stdout.until("listening on")
            port = int(line.rstrip("/").rsplit(":", 1)[1])
            (hello, echo) = await trio.to_thread.run_sync(get_and_post, port)
            status, lines = await server.stop(signal.SIGINT)
    assert hello[0] == 200
    assert hello[2].startswith(b"hello from 127.0.0.1:")
    assert echo == (200, None, b"x" * 100_000)
    assert status == 0
    assert lines[-1].startswith("server stopped")


@pytest.mark.net(default_host="client")
async def test_a_slow_request_head_is_cut_after_ten_seconds_and_shutdown_ends_keep_alive(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock,
) -> None:
    example = load_example()
    with net.host("server"):
        server_cm = trionet.open_tcp_server(example.handle, 80)
        server = await server_cm.__aenter__()
    try:
        slow = await trio.open_tcp_stream("10.0.0.1", 80)
        began = trio.current_time()
        await slow.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the rest
        assert await slow.receive_some() == b""  # closed by the server
        assert trio.current_time() - began == pytest.approx(example.HEAD_TIMEOUT)
        await slow.aclose()

        idle = await trio.open_tcp_stream("10.0.0.1", 80)
        await idle.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        assert b"200 OK" in await idle.receive_some()
        began = trio.current_time()
        server.shutdown_nowait(grace=30)
        assert await idle.receive_some() == b""  # idle keep-alive: closed at once
        assert trio.current_time() - began < 0.001
        await idle.aclose()
    finally:
        await server_cm.__aexit__(None, None, None)
