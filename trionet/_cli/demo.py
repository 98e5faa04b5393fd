"""The tour that ``python -m trionet demo`` runs: servers and clients in one nursery.

Three stops, each a lesson of structured concurrency, printed as it happens:

1. A line-echo server (``serve_tcp``) and four clients (``connect_tcp``) on real
   loopback, all tasks of one nursery. One client sends half a line and pauses:
   the server's receive times out with the half line buffered, and the line is
   whole when the rest arrives, because a cancelled receive loses nothing. One
   client sends a line over the server's limit: its handler fails, its
   connection closes, and the server goes on serving the others.
2. A graceful shutdown: the server stops accepting while a client is still
   talking, lets it finish, and its task ends; the nursery then exits with no
   task and no socket left behind.
3. Happy Eyeballs on the virtual network: the server's IPv6 address is a black
   hole, so ``connect_tcp`` starts an IPv4 attempt 250 ms later, which wins; the
   IPv6 attempt is cancelled. A race of tasks, printed as a timeline.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from functools import partial
from typing import Final

import trio

from .. import Event, EventLog, Lines, Resolver, TCPConnection, connect_tcp, serve_tcp
from ..errors import FramingError

__all__ = ["main", "run_demo"]

Printer = Callable[[str], None]

#: The server's line limit in the tour: small, so that one client can exceed it.
DEMO_MAX_LINE: Final = 1024
#: How long the server waits for a line before it says so and waits on.
SERVER_PATIENCE: Final = 0.05


async def run_demo(say: Printer = print) -> None:
    """Run the tour, reporting each step through ``say``.

    Cancellation:
      Cancelling the tour closes every server, connection and task it opened.
    """
    start = trio.current_time()

    def log(who: str, text: str) -> None:
        say(f"{trio.current_time() - start:7.3f}s  {who:<8} {text}")

    say("trionet demo: servers and clients as tasks of one nursery, printed as they go")
    say("")
    say("1. A line-echo server and its clients (serve_tcp, connect_tcp, real loopback)")
    await _echo_tour(log, say)
    say("")
    say("3. Happy Eyeballs: connect_tcp races a host's addresses (virtual network)")
    await _happy_eyeballs_tour(log, say)
    say("")
    say("Every task above had a parent that waited for it; none is running now.")


async def _echo_tour(log: Callable[[str, str], None], say: Printer) -> None:
    accepted = 0
    half_line_kept = trio.Event()

    async def echo(conn: TCPConnection) -> None:
        nonlocal accepted
        accepted += 1
        peer = conn.peer
        where = "; its handler is a task in the server's nursery" if accepted == 1 else ""
        log("server", f"accepted {peer}{where}")
        channel = conn.channel
        while True:
            # A timeout is a cancel scope. A receive it cancels loses nothing:
            # the bytes of a half-arrived line stay buffered in the channel.
            with trio.move_on_after(SERVER_PATIENCE) as scope:
                try:
                    line = await channel.receive()
                except trio.EndOfChannel:
                    break
            if scope.cancelled_caught:
                kept = channel.statistics().buffered_bytes
                if kept:
                    log("server", f"no whole line from {peer} in 50 ms ({kept} bytes kept); waiting on")
                    half_line_kept.set()
                continue
            await channel.send(line.upper())
        if conn.server is not None and conn.server.statistics().shutting_down:
            log("server", f"{peer} was idle at shutdown: its channel ended; its handler returns")
        else:
            log("server", f"{peer} hung up; its handler returns")

    def on_event(event: Event) -> None:
        if event.kind == "tcp.handler_error":
            log("server", f"a handler failed ({event.details['error']!r}): that connection is "
                "closed, the server goes on")
        elif event.kind.startswith("tcp.shutdown."):
            log("server", event.kind.removeprefix("tcp.").replace(".", " ") + " "
                + " ".join(f"{key}={value}" for key, value in event.details.items()))

    async def client(name: str, port: int, lines: list[bytes]) -> None:
        async with await connect_tcp("127.0.0.1", port, codec=Lines()) as conn:
            log(name, f"connected from port {conn.local.port}")
            for line in lines:
                await conn.channel.send(line)
                log(name, f"-> {line!r}   <- {await conn.channel.receive()!r}")

    async def slow_client(port: int) -> None:
        async with await connect_tcp("127.0.0.1", port) as conn:  # no codec: raw bytes
            await conn.stream.send_all(b"half a li")
            log("slow", "-> b'half a li' ... (pausing longer than the server waits)")
            with trio.move_on_after(5):  # until the server's receive has timed out
                await half_line_kept.wait()
            await conn.stream.send_all(b"ne, then the rest\n")
            reply = await conn.stream.receive_some()
            log("slow", f"-> b'ne, then the rest'   <- {reply.rstrip()!r}")

    async def mallory(port: int) -> None:
        async with await connect_tcp("127.0.0.1", port, codec=Lines(max_size=10**6)) as conn:
            log("mallory", f"-> a 100000-byte line (the server's limit is {DEMO_MAX_LINE} bytes)")
            try:
                await conn.channel.send(b"x" * 100_000)
                await conn.channel.receive()
            except (trio.EndOfChannel, trio.BrokenResourceError, FramingError) as exc:
                log("mallory", f"the server hung up ({type(exc).__name__})")

    async def carol(port: int) -> None:
        async with await connect_tcp("127.0.0.1", port, codec=Lines()) as conn:
            try:
                for number in range(1, 4):
                    await conn.channel.send(b"still here %d" % number)
                    log("carol", f"<- {await conn.channel.receive()!r}")
                    await trio.sleep(0.1)
            except (trio.EndOfChannel, trio.BrokenResourceError) as exc:
                # Between lines her handler waits in receive() with nothing
                # buffered: idle, so a graceful shutdown ends it at once (the
                # server's end_idle_on_shutdown); a busy handler gets the grace.
                log("carol", f"the server ended my idle connection at shutdown ({type(exc).__name__}); "
                    "every reply had arrived")
                return
            log("carol", "done talking; hangs up")

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(
            serve_tcp, echo, 0, host="127.0.0.1", codec=Lines(max_size=DEMO_MAX_LINE),
            observer=on_event,
        ))
        log("server", f"listening on {server.addresses[0]}")
        async with trio.open_nursery() as clients:
            clients.start_soon(client, "alice", server.port, [b"hello", b"structured concurrency"])
            clients.start_soon(client, "bob", server.port, [b"every task has a parent"])
            clients.start_soon(slow_client, server.port)
            clients.start_soon(mallory, server.port)
        log("demo", "the clients' nursery has exited: every client is done")
        say("")
        say("2. A graceful shutdown while a client is connected")
        nursery.start_soon(carol, server.port)
        await trio.sleep(0.05)
        log("demo", "server.shutdown(grace=2): stop accepting; idle connections end at once, "
            "busy handlers get the grace")
        await server.shutdown(grace=2)
        stats = server.statistics()
        log("server", f"stopped: {stats.connections_accepted} connections served, "
            f"{stats.handler_errors} handler error")
    log("demo", "the server's nursery has exited: no task is left running and every socket is closed")


async def _happy_eyeballs_tour(log: Callable[[str, str], None], say: Printer) -> None:
    # Imported here: the virtual network is a testing tool, loaded only for this stop.
    from ..testing import VirtualNetwork

    net = VirtualNetwork(seed=0)
    net.add_host("server", "10.0.0.1", "fd00::1")
    net.add_host("client", "10.0.0.2", "fd00::2")
    net.blackhole("fd00::1")  # packets to it vanish: a connect there never finishes
    log("demo", "server has IPv6 fd00::1 (a black hole) and IPv4 10.0.0.1")

    async def greet(conn: TCPConnection) -> None:
        await conn.stream.send_all(b"hello over %s\n" % str(conn.local.host).encode())

    events = EventLog(kinds=("tcp.connect.",))
    with net.install(default_host="client"):
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                await nursery.start(serve_tcp, greet, 80)
            async with await connect_tcp("server", 80, observer=events, resolver=Resolver()) as conn:
                greeting = await conn.stream.receive_some()
            nursery.cancel_scope.cancel()
    for line in events.format_timeline().splitlines():
        say("          " + line)
    log("client", f"<- {greeting.rstrip()!r}: the IPv4 attempt, started 250 ms after the IPv6 one, won")


async def main(args: argparse.Namespace) -> int:
    """``python -m trionet demo``."""
    await run_demo(lambda line: print(line, flush=True))
    return 0
