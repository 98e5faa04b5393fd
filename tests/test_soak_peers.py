"""Slow and idle peers: 500 slow lorises and 500 silent peers against a guarded server.

The scenario's loopback literals run on the virtual network (``net``), under
``MockClock(autojump_threshold=0)``: exact timings, and a clock that cannot jump
while a kernel is still delivering bytes. The scenario is
``tests/soak/peers.py``, the long form ``python -m tests.soak --long``.
"""

from __future__ import annotations

import resource
from collections.abc import Iterator

import pytest
import trio
import trio.testing

from tests.soak.common import ensure_fd_limit, tls_contexts
from tests.soak.peers import descriptors_needed, run_slow_and_idle
from trionet import LengthPrefixed, MessageChannel, TCPConnection, open_tcp_server
from trionet.testing import VirtualNetwork

pytestmark = pytest.mark.net(default_host="client", trace=False)

# 500 + 500, the scenario's own default: about 8 s since the virtual network
# wakes only the sockets an event concerns (it woke every parked socket, so
# 500 + 500 took 27 s and this ran 200 + 200). The long form, python -m
# tests.soak --long, runs larger counts.
SLOW = 500
IDLE = 500
FRAME_TIMEOUT = 10.0
IDLE_TIMEOUT = 30.0


@pytest.fixture
def enough_file_descriptors() -> Iterator[None]:
    try:
        previous = ensure_fd_limit(descriptors_needed(SLOW, IDLE))
    except OSError as exc:
        pytest.skip(f"cannot open {SLOW + IDLE} connections here: {exc}")
    yield
    if previous is not None:
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        resource.setrlimit(resource.RLIMIT_NOFILE, (previous, hard))


@pytest.mark.usefixtures("enough_file_descriptors")
async def test_slow_loris_and_silent_peers_are_shed_while_a_good_client_is_served(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    report = await run_slow_and_idle(
        slow=SLOW, idle=IDLE, frame_timeout=FRAME_TIMEOUT, idle_timeout=IDLE_TIMEOUT,
        probe_every=2.5, probe_deadline=1.0,
    )
    assert report.problems == []
    # Each slow loris was shed by the frame timeout, each silent peer by the idle
    # timeout, on time (the clock is virtual, so "on time" is nearly exact).
    assert report.frame_timeouts == SLOW
    assert report.idle_sheds == IDLE
    assert len(report.slow_shed_after) == SLOW
    assert all(FRAME_TIMEOUT <= t <= FRAME_TIMEOUT + 1.5 for t in report.slow_shed_after)
    assert len(report.idle_shed_after) == IDLE
    assert all(IDLE_TIMEOUT <= t <= IDLE_TIMEOUT + 1.5 for t in report.idle_shed_after)
    # Probes ran during the attack (from t=0) and after it, and each was served
    # within its 1 s deadline.
    assert len(report.probe_latencies) >= (IDLE_TIMEOUT + FRAME_TIMEOUT) // 2.5
    assert max(report.probe_latencies) < 1.0
    assert report.tasks_after == report.tasks_before


async def test_over_tls_slow_loris_and_silent_peers_are_shed_too(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    # The peers complete the TLS handshake first; a shed then closes a TLS
    # connection, whose close_notify must not trip the server.
    report = await run_slow_and_idle(
        slow=50, idle=50, frame_timeout=FRAME_TIMEOUT, idle_timeout=IDLE_TIMEOUT,
        tls=tls_contexts(),
    )
    assert report.problems == []
    assert report.frame_timeouts == 50
    assert report.idle_sheds == 50


# Found by this suite: a peer that stops reading was announced as shed at the
# idle timeout (a "tcp.shed" event), but its connection stayed open
# abort_timeout (10 s) longer: the handler's send was mid-frame, and the channel
# gives a cancelled sender that long to finish the frame.
async def test_a_peer_that_stops_reading_is_closed_at_the_idle_timeout_not_later(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    async def echo(conn: TCPConnection) -> None:
        async for message in conn.channel:
            await conn.channel.send(message)

    frame = LengthPrefixed().encode(bytes(1 << 20))
    async with open_tcp_server(
        echo, 0, host="127.0.0.1", codec=LengthPrefixed(), idle_timeout=IDLE_TIMEOUT
    ) as server:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        start = trio.current_time()
        # Send without ever reading: the echoes fill our receive buffer, the
        # handler's send blocks mid-frame, it stops reading, and our send blocks.
        with trio.fail_after(4 * IDLE_TIMEOUT), pytest.raises(trio.BrokenResourceError):
            await send_forever(stream, frame)
        closed_after = trio.current_time() - start
        await stream.aclose()
    assert closed_after <= IDLE_TIMEOUT + 1.5


# Found by this suite: frame_timeout counted from the read that brought a frame's
# first bytes, also while the handler was busy elsewhere. A handler that took
# longer than frame_timeout between two receives then got FrameTimeout for a
# frame whose rest had been waiting in the socket buffer all along: a
# well-behaved peer was shed for the server's own slowness.
async def test_a_handler_slower_than_frame_timeout_does_not_shed_a_peer_that_sent_in_time(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    received: list[int] = []

    async def slow_handler(conn: TCPConnection) -> None:
        received.append(len(await conn.channel.receive()))
        await trio.sleep(FRAME_TIMEOUT * 1.5)  # work that takes longer than frame_timeout
        received.append(len(await conn.channel.receive()))

    async with open_tcp_server(
        slow_handler, 0, host="127.0.0.1", codec=LengthPrefixed(), frame_timeout=FRAME_TIMEOUT,
        strict=True,
    ) as server:
        channel = MessageChannel(await trio.open_tcp_stream("127.0.0.1", server.port))
        async with channel:
            # Both at once: the server's first read brings the first message and
            # the start of the second; the rest waits in the socket buffer.
            await channel.send_many([b"a" * 100, b"b" * 200_000])
            with trio.fail_after(4 * FRAME_TIMEOUT):
                while len(received) < 2:
                    await trio.sleep(1)
    assert received == [100, 200_000]


async def send_forever(stream: trio.SocketStream, frame: bytes) -> None:
    for _ in range(10_000):
        await stream.send_all(frame)
