"""The trio adapters and the accept loop, below the public API. Imports private
``trionet._adapters`` and ``trionet._endpoints`` modules: idle tracking
(``IdleTrackingStream``, ``KernelActivity``, ``IdleTimer``, ``wait_idle``), the
reach into trio's socket internals (``stdlib_socket_of``, ``stdlib_socket``), and
the accept loop's batching and back-off (``ACCEPT_BATCH``, ``ACCEPT_BACKOFF_*``,
``ServerCore`` driven with a fake listener) are internal.

Their public effects are tested through ``serve_tcp`` and ``MessageChannel`` in
the other test files.
"""

from __future__ import annotations

import errno
import functools
import logging
import socket
import sys
from typing import Any

import pytest
import trio
import trio.testing

import trionet
from trionet import EventLog, MessageChannel, TCPConnection, TCPServer
from trionet._adapters.idle import IdleEntry, IdleTimer, IdleTrackingStream, KernelActivity, wait_idle
from trionet._adapters.trio_compat import stdlib_socket_of
from trionet._endpoints.options import StreamServerOptions
from trionet._endpoints.server_core import (
    ACCEPT_BACKOFF_INITIAL,
    ACCEPT_BACKOFF_MAX,
    ACCEPT_BATCH,
    ServerCore,
    stdlib_socket,
)
from trionet.testing import VirtualNetwork

from .backlog import accepted_per_pass
from .conftest import tcp_stream_pair, trionet_records
from .test_vnet_tcp import socket_pair

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="TCP_INFO is Linux's")


# ================================================================================================
# Where trionet reaches into trio's sockets
# If one of these fails, a trio release moved the stdlib socket out of
# trio._socket._SocketType._sock: the channel's fast path and the accept loop's
# batching are silently lost. Update trionet/_adapters/trio_compat.py.
# ================================================================================================


async def test_stdlib_socket_of_finds_the_stdlib_socket_inside_a_trio_socket() -> None:
    from trio._socket import _SocketType  # noqa: F401 - must exist

    sock = trio.socket.socket()
    with sock:
        raw = stdlib_socket_of(sock)
        assert raw is not None, "trio changed its socket internals: update trionet/_adapters/trio_compat.py"
        assert type(raw) is socket.socket
        assert raw.fileno() == sock.fileno()
        assert raw.getblocking() is False


async def test_stdlib_socket_of_a_virtual_socket_is_none(autojump_clock: trio.testing.MockClock) -> None:
    net = VirtualNetwork(seed=1)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.001)
    with net.install():
        client, server = await socket_pair(net, 9)
        with client, server:
            assert stdlib_socket_of(client) is None


async def test_trio_still_keeps_the_stdlib_socket_where_the_accept_loop_reads_it() -> None:
    # Fails loudly if trio renames the private attribute: the accept loop would
    # then silently fall back to one accept per scheduler pass.
    sock = trio.socket.socket()
    with sock:
        raw = stdlib_socket(sock)
        assert isinstance(raw, socket.socket)
        assert raw.fileno() == sock.fileno()


# ================================================================================================
# The channel's fast path under the idle-tracking wrapper
# (Was in tests/test_channel_fastpath.py.)
# ================================================================================================


async def test_a_channel_reporting_to_the_idle_tracker_keeps_the_fast_path() -> None:
    client, server = await tcp_stream_pair()
    async with client, server:
        assert MessageChannel(client)._raw is client.socket._sock  # type: ignore[attr-defined]
        tracked = MessageChannel(server, activity=IdleTrackingStream(server))
        assert tracked._raw is server.socket._sock  # type: ignore[attr-defined]
        assert MessageChannel(trio.testing.memory_stream_pair()[0])._raw is None


async def _end_when_blocked(channel: MessageChannel) -> None:
    await trio.testing.wait_all_tasks_blocked()
    channel.end_when_idle()


async def test_end_when_idle_with_the_idle_tracker() -> None:
    client, server = await tcp_stream_pair()
    channel = MessageChannel(server, activity=IdleTrackingStream(server))
    async with client, channel, trio.open_nursery() as nursery:
        nursery.start_soon(_end_when_blocked, channel)
        with pytest.raises(trio.EndOfChannel):
            await channel.receive()


# ================================================================================================
# KernelActivity: idle time read from the kernel (Linux TCP_INFO), no wrapper
# Real loopback sockets and trio's real clock: the kernel's times are real
# milliseconds. The public effects (a plain TCP handler gets trio's own stream; a
# silent connection is shed) are in tests/test_idle_kernel.py.
# ================================================================================================


async def loopback_pair() -> tuple[socket.socket, socket.socket]:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        client = socket.create_connection(listener.getsockname())
        server, _ = listener.accept()
    server.setblocking(False)
    client.setblocking(False)
    return server, client


@linux_only
async def test_data_the_handler_has_not_read_yet_is_activity() -> None:
    server, client = await loopback_pair()
    with server, client:
        activity = KernelActivity(server)
        created = activity.last_activity
        client.send(b"ping")
        await trio.lowlevel.wait_readable(server)  # arrived, and nobody read it
        before = trio.current_time()
        last = activity.last_activity
        # The kernel counts in milliseconds; and on a virtual machine two reads
        # of the monotonic clock from different CPUs can disagree by
        # microseconds (a CI run saw last exceed a later read by 5 us).
        assert created <= last <= trio.current_time() + 0.001
        assert last >= before - 0.5  # just now, to the kernel's millisecond


@linux_only
async def test_the_kernels_whole_milliseconds_never_move_the_activity_back() -> None:
    # A CI run saw a later read come out 4 us earlier: the kernel said "0 ms
    # ago", then "1 ms ago" a fraction of a millisecond later.
    class Kernel:
        ago = 0

        def getsockopt(self, level: int, option: int, size: int) -> bytes:
            info = bytearray(size)
            info[44:48] = info[52:56] = self.ago.to_bytes(4, sys.byteorder)
            return bytes(info)

    kernel = Kernel()
    activity = KernelActivity(kernel)  # type: ignore[arg-type]
    first = activity.last_activity  # "0 ms ago": now
    kernel.ago = 1
    assert activity.last_activity >= first  # not now - 1 ms, microseconds later


@linux_only
async def test_a_send_stuck_behind_a_peer_that_stopped_reading_counts_as_sending() -> None:
    server, client = await loopback_pair()
    with server, client:
        activity = KernelActivity(server)
        assert activity.sending == 0
        chunk = b"x" * 65536
        for _ in range(10_000):  # bounded: loopback buffers hold a few MiB
            try:
                server.send(chunk)
            except BlockingIOError:
                break
        else:  # pragma: no cover
            pytest.fail("the send buffer never filled")
        assert activity.sending == 1


@linux_only
async def test_a_time_set_by_the_server_is_kept_when_it_is_later() -> None:
    server, client = await loopback_pair()
    with server, client:
        activity = KernelActivity(server)
        later = trio.current_time() + 100
        activity.last_activity = later
        assert activity.last_activity == later
        activity.last_activity = later - 50  # never moves back
        assert activity.last_activity == later


@linux_only
async def test_a_closed_socket_reports_the_last_known_time() -> None:
    server, client = await loopback_pair()
    with client:
        activity = KernelActivity(server)
        server.close()
        assert activity.last_activity <= trio.current_time()
        assert activity.sending == 0


@linux_only
def test_under_a_mock_clock_the_stream_is_wrapped_instead() -> None:
    async def main() -> None:
        server, client = await loopback_pair()
        with server, client:
            assert KernelActivity.for_socket(server) is None
            assert KernelActivity.for_socket(None) is None

    trio.run(main, clock=trio.testing.MockClock())


@linux_only
async def test_a_socket_of_the_virtual_network_is_wrapped_instead() -> None:
    network = VirtualNetwork(seed=0)
    network.add_host("server", "10.0.0.1")
    network.add_host("client", "10.0.0.2")
    network.link("client", "server", latency=0.001)
    streams: list[object] = []

    async def handler(conn: TCPConnection) -> None:
        streams.append(conn.stream)

    with network.install(), network.host("server"):
        async with trionet.open_tcp_server(handler, 80, idle_timeout=60) as server:
            with network.host("client"):
                stream = await trio.open_tcp_stream("10.0.0.1", server.port)
                assert await stream.receive_some() == b""
                await stream.aclose()
    assert [type(s) for s in streams] == [IdleTrackingStream]


# ================================================================================================
# IdleTimer: every connection's idle timeout in one task
# (Was in tests/test_tcp_server_accept.py.)
# ================================================================================================


class Quiet(trio.abc.Stream):
    async def send_all(self, data: object) -> None: ...
    async def wait_send_all_might_not_block(self) -> None: ...
    async def receive_some(self, max_bytes: int | None = None) -> bytes: return b""
    async def aclose(self) -> None: ...


async def test_the_idle_timer_fires_exactly_one_period_after_each_streams_last_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    fired: list[tuple[str, float]] = []
    timer = IdleTimer(10, lambda entry: fired.append((entry.address, trio.current_time())))
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(timer.run)
        quiet, busy, done = (IdleTrackingStream(Quiet()) for _ in range(3))
        for name, stream in (("quiet", quiet), ("busy", busy), ("done", done)):
            timer.watch(stream, trio.CancelScope(), None, name)  # type: ignore[arg-type]
        entry_done = timer._heap[-1] if timer._heap[-1].address == "done" else next(
            e for e in timer._heap if e.address == "done")
        await trio.sleep(5)
        timer.unwatch(entry_done)  # finished before its deadline: never fires
        await trio.sleep(2)
        for _ in range(3):  # activity at 7, 14 and 21 s
            busy.last_activity = trio.current_time()
            await trio.sleep(7)
        await trio.sleep(100)
        timer.stop()
    assert fired == [("quiet", start + 10), ("busy", start + 31)]


async def test_the_idle_heap_drops_the_entries_of_finished_connections() -> None:
    timer = IdleTimer(3600, lambda entry: None)
    entries: list[IdleEntry] = [
        timer.watch(IdleTrackingStream(Quiet()), trio.CancelScope(), None, n)  # type: ignore[arg-type]
        for n in range(1000)
    ]
    for entry in entries[:990]:
        timer.unwatch(entry)
    # Rebuilt whenever the finished ones were more than half: never 1000 entries.
    assert len(timer) <= 10 + 64 + 1


# ================================================================================================
# IdleTrackingStream and wait_idle
# (Was in tests/test_tcp_server_limits.py.)
# ================================================================================================


async def test_wait_idle_returns_exactly_one_period_after_the_last_byte(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    tracked = IdleTrackingStream(left)
    begin = trio.current_time()
    async with trio.open_nursery() as nursery:

        async def chatter() -> None:
            for _ in range(3):
                await trio.sleep(1.5)
                await right.send_all(b"x")
                await tracked.receive_some(10)

        nursery.start_soon(chatter)
        await wait_idle(tracked, 2)
    assert trio.current_time() - begin == 4.5 + 2


async def test_idle_tracking_stream_passes_everything_through(
    autojump_clock: trio.testing.MockClock,
) -> None:
    left, right = trio.testing.memory_stream_pair()
    tracked = IdleTrackingStream(left)
    created = tracked.last_activity
    await trio.sleep(1)
    await tracked.send_all(b"abc")
    assert tracked.last_activity == created + 1
    assert await right.receive_some(10) == b"abc"
    await tracked.wait_send_all_might_not_block()
    await tracked.send_eof()
    assert await right.receive_some(10) == b""
    await right.send_eof()
    await trio.sleep(1)
    assert await tracked.receive_some(10) == b""
    assert tracked.last_activity == created + 1  # an end of stream is not a byte
    await tracked.aclose()
    with pytest.raises(trio.ClosedResourceError):
        await left.receive_some(1)


async def test_idle_tracking_stream_cannot_half_close_a_stream_that_cannot() -> None:
    class OneWay(trio.abc.Stream):
        async def send_all(self, data: bytes | bytearray | memoryview) -> None: ...
        async def wait_send_all_might_not_block(self) -> None: ...
        async def receive_some(self, max_bytes: int | None = None) -> bytes:
            return b""
        async def aclose(self) -> None: ...

    with pytest.raises(TypeError, match="OneWay cannot half-close"):
        await IdleTrackingStream(OneWay()).send_eof()


# ================================================================================================
# The accept loop: batches per scheduler pass, and the back-off after accept errors
# (Was in tests/test_tcp_server_accept.py and tests/test_tcp_server_limits.py.)
# ================================================================================================


async def test_a_backlog_is_accepted_in_batches_of_accept_batch_per_scheduler_pass(
    no_fd_leak: None,
) -> None:
    # Before: trio's accept() took one connection per scheduler pass, so a
    # backlog of 100 took 100 passes.
    count = ACCEPT_BATCH + 36
    assert await accepted_per_pass(count) == [ACCEPT_BATCH, count - ACCEPT_BATCH]


async def virtual_pair() -> tuple[trio.socket.SocketType, trio.socket.SocketType]:
    """Two connected TCP sockets on the installed virtual network."""
    with trio.socket.socket() as listener:
        await listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        client = trio.socket.socket()
        await client.connect(listener.getsockname())
        server, _ = await listener.accept()
    return server, client


class FlakyListener:
    """A stand-in for a listening socket whose accept() fails with EMFILE on cue."""

    def __init__(self, script: list[str]) -> None:
        self.script = script  # "emfile", "ok", "reset"; then blocks for ever
        self.accept_times: list[float] = []
        self.pairs: list[Any] = []
        self.script_done = trio.Event()

    async def accept(self) -> tuple[trio.socket.SocketType, Any]:
        self.accept_times.append(trio.current_time())
        await trio.lowlevel.checkpoint()
        if not self.script:
            self.script_done.set()
            await trio.sleep_forever()
        step = self.script.pop(0)
        if step == "emfile":
            raise OSError(errno.EMFILE, "Too many open files")
        if step == "reset":
            raise OSError(errno.ECONNABORTED, "Software caused connection abort")
        a, b = await virtual_pair()
        self.pairs.append(b)
        return a, ("127.0.0.1", 1)

    def close(self) -> None:
        for sock in self.pairs:
            sock.close()


async def run_core_on(listener: FlakyListener, log: EventLog) -> None:
    async def handler(conn: TCPConnection) -> None:
        pass

    options = StreamServerOptions(idle_timeout=None, observer=log)
    core: ServerCore[TCPConnection] = ServerCore(handler, options, kind="tcp", describe_peer=str)

    def make(stream: trio.abc.Stream, sock: Any, peer: Any, channel: Any, proxy: Any) -> TCPConnection:
        return TCPConnection(stream, socket=sock, peer=peer, channel=channel)

    async with trio.open_nursery() as nursery:
        server = TCPServer(core, ())
        await nursery.start(
            functools.partial(core.run, [listener], make, server, listening=())  # type: ignore[list-item]
        )
        await listener.script_done.wait()
        await trio.testing.wait_all_tasks_blocked()
        await server.shutdown(grace=0)


@pytest.mark.net(default_host="client")
async def test_accept_errors_back_off_from_5ms_doubling_to_1s_and_reset_after_a_success(
    net: VirtualNetwork, autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="trionet")
    listener = FlakyListener(["emfile"] * 10 + ["ok"] + ["emfile"] * 2 + ["reset", "ok"])
    log = EventLog()
    await run_core_on(listener, log)
    delays = [event.details["delay"] for event in log.of_kind("tcp.accept_error")]
    assert delays == [0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.0, 1.0, 0.005, 0.01]
    assert ACCEPT_BACKOFF_INITIAL == 0.005
    assert ACCEPT_BACKOFF_MAX == 1.0
    gaps = [b - a for a, b in zip(listener.accept_times, listener.accept_times[1:], strict=False)]
    assert gaps[:10] == pytest.approx(delays[:10])
    assert gaps[13] == 0  # a connection reset before accept is skipped without delay
    assert len(log.of_kind("tcp.accept")) == 2
    warnings = trionet_records(caplog)
    assert len(warnings) == 12
    assert "EMFILE" in warnings[0].getMessage()
    assert "retries in 0.005 s" in warnings[0].getMessage()
    listener.close()


async def test_an_unexpected_accept_error_is_raised() -> None:
    class Broken(FlakyListener):
        async def accept(self) -> tuple[trio.socket.SocketType, Any]:
            await trio.lowlevel.checkpoint()
            raise OSError(errno.EINVAL, "Invalid argument")

    with pytest.RaisesGroup(OSError, flatten_subgroups=True):
        await run_core_on(Broken([]), EventLog())
