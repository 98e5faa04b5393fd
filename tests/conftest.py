"""Shared fixtures: loopback connections and file-descriptor accounting."""

from __future__ import annotations

import gc
import os
import ssl
from collections.abc import AsyncIterator, Iterator

import pytest
import trio
import trustme
from hypothesis import settings

# Hypothesis: no per-example deadline (CI machines are noisy); example counts are
# set per test so the suite stays fast. On CI the examples are derandomized, so a
# run is repeatable; locally each run explores new ones.
settings.register_profile("trionet", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("trionet")


def open_fd_count() -> int:
    """How many file descriptors this process has open (Linux: /proc/self/fd)."""
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_fd_leak() -> Iterator[None]:
    """Fail the test if it leaves file descriptors open."""
    gc.collect()
    before = open_fd_count()
    yield
    gc.collect()
    after = open_fd_count()
    assert after == before, f"file descriptors leaked: {before} open before, {after} after"


async def tcp_stream_pair(host: str = "127.0.0.1") -> tuple[trio.SocketStream, trio.SocketStream]:
    """Two connected TCP SocketStreams over real loopback."""
    family = trio.socket.AF_INET6 if ":" in host else trio.socket.AF_INET
    listener = trio.socket.socket(family)
    with listener:
        await listener.bind((host, 0))
        listener.listen(1)
        client = trio.socket.socket(family)
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    return trio.SocketStream(client), trio.SocketStream(server)


@pytest.fixture
async def tcp_pair() -> AsyncIterator[tuple[trio.SocketStream, trio.SocketStream]]:
    a, b = await tcp_stream_pair()
    async with a, b:
        yield a, b


#: The name the ``contexts`` fixture's test certificate is issued for.
TLS_HOSTNAME = "server.trionet.test"


@pytest.fixture(scope="module")
def contexts() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """A TLS server context and a client context that trusts it (trustme)."""
    ca = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(TLS_HOSTNAME).configure_cert(server_context)
    client_context = ssl.create_default_context()
    ca.configure_trust(client_context)
    return server_context, client_context
