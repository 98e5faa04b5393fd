"""The UDP endpoint runs the same receive drain and send path on the virtual network as on real sockets.

A UDP endpoint reads its socket with non-blocking ``recvfrom`` calls in
batches (``_drain``: at most ``_DRAIN_LIMIT`` datagrams, stopping early when
its queue is full), waits with ``wait_readable`` between batches, and replies
with a non-blocking ``sendto``. The virtual network's UDP sockets offer those
calls (``_nonblocking_view()``), so the endpoint takes that path there too; a
custom socket without them is still read one datagram per ``await recvfrom()``.

Most tests are differential (``tests/differential.py``): one scenario on real
loopback and on a virtual host, the observations compared.
"""

from __future__ import annotations

import errno
import functools
import socket
from typing import Any

import pytest
import trio
import trio.testing

import trionet
from tests.differential import World, both, run_virtual
from trionet._adapters import udp_receive
from trionet._adapters.udp_socket import NonBlockingDatagrams, NonBlockingView, nonblocking_of
from trionet.testing._vcalls import NonBlockingCalls
from trionet.testing._vudp import UDPSocket

LOCAL = "127.0.0.1"


class CountingCalls:
    """An endpoint's non-blocking calls, counting the ``recvfrom`` calls that returned or would block."""

    def __init__(self, calls: NonBlockingDatagrams) -> None:
        self.calls = calls
        self.received = 0
        self.would_block = 0

    def recvfrom(self, bufsize: int, /) -> tuple[bytes, Any]:
        try:
            found = self.calls.recvfrom(bufsize)
        except BlockingIOError:
            self.would_block += 1
            raise
        self.received += 1
        return found

    def send(self, data: Any, /) -> int:
        return self.calls.send(data)

    def sendto(self, data: Any, address: Any, /) -> int:
        return self.calls.sendto(data, address)


def counted(endpoint: trionet.UDPEndpoint) -> CountingCalls:
    raw = endpoint._raw
    assert raw is not None
    counting = CountingCalls(raw)
    endpoint._raw = counting
    return counting


async def burst(world: World, port: int, count: int, size: int = 5) -> None:
    """Send ``count`` datagrams numbered from 0 to ``port``, and let them all arrive."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        for i in range(count):
            await sender.sendto(b"%0*d" % (size, i), (LOCAL, port))
    if world.virtual:
        await trio.sleep(1)  # simulated time: what is in flight arrives (loopback is synchronous)


def enough_receive_buffer(needed: int) -> bool:
    try:
        with open("/proc/sys/net/core/rmem_max") as file:
            return int(file.read()) >= needed
    except OSError:  # pragma: no cover - not Linux
        return False


# ---- the drain's batches -------------------------------------------------------------------------


async def take_a_burst(world: World, count: int) -> dict[str, Any]:
    """A burst waits in the socket; one receive(), then receive_nowait() until WouldBlock."""
    async with trionet.open_udp_endpoint(f"{LOCAL}:0", receive_buffer_size=2**21) as endpoint:
        calls = counted(endpoint)
        await burst(world, endpoint.local.port, count)
        got = [(await endpoint.receive()).data]
        totals = [endpoint.statistics().datagrams_received]
        first_queued = endpoint.statistics().datagrams_queued
        drained_again_at = None
        while True:
            try:
                got.append(endpoint.receive_nowait().data)
            except trio.WouldBlock:
                break
            received = endpoint.statistics().datagrams_received
            if received != totals[-1]:
                totals.append(received)
                drained_again_at = len(got)
        return {
            "in order": got == [b"%05d" % i for i in range(count)],
            "received after each drain": totals,
            "queued after the first receive": first_queued,
            "second drain at datagram": drained_again_at,
            "recvfrom calls": calls.received,
            "would block": calls.would_block,
            "dropped": endpoint.statistics().datagrams_dropped,
        }


def test_a_burst_is_taken_in_batches_of_the_drain_limit_on_both(monkeypatch: pytest.MonkeyPatch) -> None:
    # A small limit, so that the burst fits any system's receive buffer.
    monkeypatch.setattr(udp_receive, "_DRAIN_LIMIT", 50)
    real, virtual = both(functools.partial(take_a_burst, count=120))
    assert real == virtual
    assert virtual["in order"]
    assert virtual["received after each drain"] == [50, 100, 120]
    assert virtual["queued after the first receive"] == 49
    # receive_nowait() drains again every _DRAIN_EVERY datagrams taken.
    assert virtual["second drain at datagram"] == 2 * udp_receive._DRAIN_EVERY + 1
    assert virtual["recvfrom calls"] == 120
    assert virtual["dropped"] == 0


@pytest.mark.skipif(not enough_receive_buffer(2**21), reason="net.core.rmem_max holds no 1,224 datagrams")
def test_a_burst_is_taken_in_batches_of_the_real_drain_limit_on_both() -> None:
    limit = udp_receive._DRAIN_LIMIT
    real, virtual = both(functools.partial(take_a_burst, count=limit + 200))
    assert real == virtual
    assert virtual["in order"]
    assert virtual["received after each drain"] == [limit, limit + 200]
    assert virtual["queued after the first receive"] == limit - 1
    assert virtual["second drain at datagram"] == udp_receive._DRAIN_EVERY + 1


async def fill_a_small_queue(world: World) -> dict[str, Any]:
    """With a receive queue of 10, the drain stops at 10 and leaves the rest in the system's buffer."""
    async with trionet.open_udp_endpoint(f"{LOCAL}:0", receive_queue_size=10) as endpoint:
        calls = counted(endpoint)
        await burst(world, endpoint.local.port, 35)
        got = [(await endpoint.receive()).data]
        steps = [(endpoint.statistics().datagrams_received, endpoint.statistics().datagrams_queued)]
        while True:
            try:
                got.append(endpoint.receive_nowait().data)
            except trio.WouldBlock:
                break
            stats = endpoint.statistics()
            steps.append((stats.datagrams_received, stats.datagrams_queued))
        return {
            "in order": got == [b"%05d" % i for i in range(35)],
            "first steps": steps[:12],
            "dropped": endpoint.statistics().datagrams_dropped,
            "recvfrom calls": calls.received,
            "would block": calls.would_block,
        }


def test_a_full_receive_queue_stops_the_drain_on_both() -> None:
    real, virtual = both(fill_a_small_queue)
    assert real == virtual
    assert virtual["in order"]
    assert virtual["dropped"] == 0  # what the queue could not take stayed in the socket
    assert virtual["first steps"][:2] == [(10, 9), (10, 8)]
    assert virtual["first steps"][10] == (20, 9)  # the queue emptied: the next ten
    assert virtual["recvfrom calls"] == 35
    # Drains of 10, 10, 10, then 5 that end empty, and one more when the queue is empty.
    assert virtual["would block"] == 2


async def wait_in_receive(world: World) -> dict[str, Any]:
    """A task waits in receive() (the driver, in wait_readable) when a burst arrives."""
    async with trionet.open_udp_endpoint(f"{LOCAL}:0") as endpoint:
        counted(endpoint)
        got: list[bytes] = []
        async with trio.open_nursery() as nursery:

            async def receiver() -> None:
                got.append((await endpoint.receive()).data)

            nursery.start_soon(receiver)
            await trio.testing.wait_all_tasks_blocked()
            await burst(world, endpoint.local.port, 20)
        while True:
            try:
                got.append(endpoint.receive_nowait().data)
            except trio.WouldBlock:
                break
        return {"got": got}


def test_a_waiting_receiver_takes_the_burst_on_both() -> None:
    real, virtual = both(wait_in_receive)
    assert real == virtual
    assert virtual["got"] == [b"%05d" % i for i in range(20)]


# ---- what recvfrom gives: truncation, ICMP errors ------------------------------------------------


async def truncate(world: World) -> list[tuple[bytes, bool]]:
    async with trionet.open_udp_endpoint(f"{LOCAL}:0", max_receive_size=8) as endpoint:
        counted(endpoint)
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
            for data in (b"12345678", b"123456789", b"x" * 20, b""):
                await sender.sendto(data, (LOCAL, endpoint.local.port))
        if world.virtual:
            await trio.sleep(1)
        found = []
        for _ in range(4):
            datagram = await endpoint.receive()
            found.append((datagram.data, datagram.truncated))
        assert endpoint.statistics().datagrams_truncated == 2
        return found


def test_the_drain_sees_truncation_on_both() -> None:
    real, virtual = both(truncate)
    assert real == virtual == [
        (b"12345678", False), (b"12345678", True), (b"xxxxxxxx", True), (b"", False)
    ]


async def refused(world: World) -> list[str]:
    """A connected endpoint's peer has no socket: the ICMP error comes once, through the drain."""
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as placeholder:
        await placeholder.bind((LOCAL, 0))
        port = placeholder.getsockname()[1]
    seen = []
    async with trionet.open_udp_endpoint(remote=f"{LOCAL}:{port}") as endpoint:
        calls = counted(endpoint)
        await endpoint.send(b"anyone?")
        try:
            await endpoint.receive()
        except trionet.PeerUnreachable:
            seen.append("unreachable")
        try:
            endpoint.receive_nowait()
        except trio.WouldBlock:
            seen.append("then nothing")
        seen.append(f"recvfrom calls {calls.received}")
    return seen


def test_port_unreachable_reaches_a_connected_endpoint_once_on_both() -> None:
    real, virtual = both(refused)
    assert real == virtual == ["unreachable", "then nothing", "recvfrom calls 0"]


# ---- the non-blocking calls themselves -----------------------------------------------------------


def errno_of(call: Any) -> object:
    try:
        return call()
    except OSError as exc:
        return type(exc).__name__, exc.errno


async def calls_of_a_socket(world: World) -> list[object]:
    """What a trio UDP socket's non-blocking calls (nonblocking_of) do, step by step."""
    seen: list[object] = []
    receiver = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await receiver.bind((LOCAL, 0))
    view = nonblocking_of(receiver)
    assert view is not None
    calls = view.calls
    seen.append(errno_of(lambda: calls.recvfrom(100)))
    with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sender:
        await sender.bind((LOCAL, 0))
        sender_view = nonblocking_of(sender)
        assert sender_view is not None
        sent = sender_view.calls.sendto(b"0123456789", receiver.getsockname())
        seen.append(sent)
        with trio.CancelScope() as scope:
            scope.cancel()
            await view.wait_readable()
        seen.append(("cancelled wait", scope.cancelled_caught))
        await view.wait_readable()
        data, address = calls.recvfrom(4)  # a longer datagram: the rest is discarded
        seen.append((data, address == sender.getsockname()))
        seen.append(errno_of(lambda: calls.recvfrom(100)))
        await sender_view.wait_writable()
        # Connected to a port where nothing listens: ECONNREFUSED once.
        port = receiver.getsockname()[1]
        receiver.close()
        await sender.connect((LOCAL, port))
        seen.append(sender_view.calls.send(b"x"))
        await sender_view.wait_readable()
        seen.append(errno_of(lambda: sender_view.calls.recvfrom(100)))
        seen.append(errno_of(lambda: sender_view.calls.recvfrom(100)))
    seen.append(errno_of(lambda: sender_view.calls.recvfrom(100)))
    return seen


def test_the_non_blocking_calls_behave_as_a_system_socket_on_both() -> None:
    real, virtual = both(calls_of_a_socket)
    assert real == virtual
    assert virtual == [
        ("BlockingIOError", errno.EAGAIN),
        10,
        ("cancelled wait", True),
        (b"0123", True),
        ("BlockingIOError", errno.EAGAIN),
        1,
        ("ConnectionRefusedError", errno.ECONNREFUSED),
        ("BlockingIOError", errno.EAGAIN),
        ("OSError", errno.EBADF),
    ]


async def close_while_waiting(world: World) -> list[str]:
    """Closing the socket wakes a task in wait_readable() with ClosedResourceError."""
    seen = []
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    await sock.bind((LOCAL, 0))
    view = nonblocking_of(sock)
    assert view is not None

    async def waiter() -> None:
        try:
            await view.wait_readable()
        except trio.ClosedResourceError:
            seen.append("closed")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(waiter)
        await trio.testing.wait_all_tasks_blocked()
        seen.append("waiting")
        sock.close()
    return seen


def test_closing_the_socket_wakes_wait_readable_on_both() -> None:
    real, virtual = both(close_while_waiting)
    assert real == virtual == ["waiting", "closed"]


# ---- which path an endpoint takes ----------------------------------------------------------------


async def path_of(world: World) -> str:
    async with trionet.open_udp_endpoint(f"{LOCAL}:0") as endpoint:
        return type(endpoint._raw).__name__


def test_real_endpoints_call_the_stdlib_socket_and_virtual_ones_the_view() -> None:
    real, virtual = both(path_of)
    assert real == "socket"
    assert virtual == "NonBlockingCalls"
    assert all(callable(getattr(NonBlockingCalls, name, None)) for name in dir(NonBlockingView)
               if not name.startswith("_"))


def test_a_custom_socket_without_the_view_is_read_one_datagram_per_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delattr(UDPSocket, "_nonblocking_view")

    async def scenario(world: World) -> dict[str, Any]:
        async with trionet.open_udp_endpoint(f"{LOCAL}:0") as endpoint, trionet.open_udp_endpoint(
            f"{LOCAL}:0"
        ) as peer:
            assert endpoint._raw is None
            await burst(world, endpoint.local.port, 5)
            first = await endpoint.receive()
            after_first = endpoint.statistics().datagrams_received
            with pytest.raises(trio.WouldBlock):
                endpoint.receive_nowait()  # nothing queued, and no non-blocking call to drain with
            rest = [(await endpoint.receive()).data for _ in range(4)]
            # Requests and replies still work through the async calls.
            async with trio.open_nursery() as nursery:

                async def echo() -> None:
                    datagram = await peer.receive()
                    await peer.send(datagram.data.upper(), datagram.address)

                nursery.start_soon(echo)
                reply = await endpoint.request(b"ping", peer.local, match=lambda _: True)
            return {"first": first.data, "after first": after_first, "rest": rest, "reply": reply.data}

    found = run_virtual(scenario)
    assert found == {
        "first": b"00000",
        "after first": 1,
        "rest": [b"%05d" % i for i in range(1, 5)],
        "reply": b"PING",
    }


# ---- a server's replies --------------------------------------------------------------------------


async def replies_in_order(world: World) -> list[bytes]:
    """A blocked handler, then a burst: the replies keep the burst's order."""
    release = trio.Event()

    async def handler(datagram: trionet.Datagram) -> bytes:
        if datagram.data == b"slow":
            await release.wait()
        return datagram.data

    async with trio.open_nursery() as nursery:
        server: trionet.UDPServer = await nursery.start(
            functools.partial(trionet.serve_udp, handler, (LOCAL, 0))
        )
        with trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as client:
            await client.sendto(b"slow", (LOCAL, server.port))
            for i in range(5):
                await client.sendto(b"fast %d" % i, (LOCAL, server.port))
            got = [await client.recv(100) for _ in range(5)]
            release.set()
            got.append(await client.recv(100))
        server.shutdown_nowait(grace=0)
    return got


def test_a_servers_replies_to_a_burst_keep_its_order_on_both() -> None:
    real, virtual = both(replies_in_order)
    assert real == virtual == [b"fast %d" % i for i in range(5)] + [b"slow"]
