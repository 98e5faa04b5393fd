"""Shared fixtures: the virtual network, TLS contexts, loopback connections, fd accounting."""

from __future__ import annotations

import gc
import logging
import os
import ssl
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
import trio
import trustme
from hypothesis import settings

from trionet.testing import VirtualNetwork

# Hypothesis: no per-example deadline (CI machines are noisy); example counts are
# set per test so the suite stays fast. On CI the examples are derandomized, so a
# run is repeatable; locally each run explores new ones.
settings.register_profile("trionet", deadline=None, derandomize=bool(os.environ.get("CI")))
settings.load_profile("trionet")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "net(**options): how the `net` fixture builds its network (see virtual_network())"
    )


def virtual_network(
    *,
    seed: int | str = 0,
    trace: bool = True,
    server: str = "server",
    ipv6: bool = True,
    **link: Any,
) -> VirtualNetwork:
    """The tests' network: host ``server`` at 10.0.0.1 and client at 10.0.0.2.

    Args:
      seed: The network's seed.
      trace: Whether the network records a trace (soak tests save the memory).
      server: The server host's name (a TLS test names it after its certificate).
      ipv6: Whether the hosts also own fd00::1 and fd00::2 (then DNS returns both).
      **link: :class:`~trionet.testing.LinkConfig` options for the client-server
          link (``latency=0.010``...); perfect without them.
    """
    network = VirtualNetwork(seed=seed, trace=trace)
    network.add_host(server, "10.0.0.1", *(["fd00::1"] if ipv6 else []))
    network.add_host("client", "10.0.0.2", *(["fd00::2"] if ipv6 else []))
    if link:
        network.link("client", server, **link)
    return network


@pytest.fixture
async def net(request: pytest.FixtureRequest) -> AsyncIterator[VirtualNetwork]:
    """:func:`virtual_network`, installed for the test's trio run.

    Options come from the closest ``@pytest.mark.net(...)`` (a module sets them
    for all its tests with ``pytestmark``): those of :func:`virtual_network`,
    and ``default_host``, the host of tasks outside ``net.host(...)``; without
    it they cannot make sockets. Every host reaches itself through 127.0.0.1 and
    ::1, so with a ``default_host`` a test written for loopback runs unchanged,
    and exactly under ``autojump_clock``.

    Pytest-trio only runs a test on the mock clock if the test requests
    ``autojump_clock`` itself.
    """
    marker = request.node.get_closest_marker("net")
    options = dict(marker.kwargs) if marker is not None else {}
    default_host = options.pop("default_host", None)
    network = virtual_network(**options)
    with network.install(default_host=default_host):
        yield network


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


def trionet_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """The records of trionet's loggers, without a server's "listening on" and "stopped" lines."""
    return [
        record for record in caplog.records
        if record.name.startswith("trionet")
        and not (record.levelno == logging.INFO and (
            " server listening on " in record.getMessage() or " stopped after " in record.getMessage()
        ))
    ]
