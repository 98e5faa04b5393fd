"""The tour that ``python -m trionet demo`` runs: a server and clients in one nursery."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio

from ._channel import MessageChannel
from ._sansio.codecs import Lines

__all__ = ["run_demo"]

Printer = Callable[[str], None]


async def run_demo(say: Printer = print) -> None:
    """Run the demo, reporting each step through ``say``.

    A line-echo server and three clients live in one nursery on real loopback TCP.
    The clients exchange framed messages. One sends half a line and pauses, so the
    server's receive times out with the half line buffered; when the rest arrives
    the line is whole, because a cancelled receive loses nothing. Then the nursery
    cancels the server, and every task and socket is gone when it exits.

    Cancellation:
      Cancelling the demo closes the server and every connection it opened.
    """
    start = trio.current_time()

    def log(who: str, text: str) -> None:
        say(f"{trio.current_time() - start:7.3f}s  {who:<9} {text}")

    async def echo(stream: trio.SocketStream) -> None:
        host, port = stream.socket.getpeername()[:2]
        peer = f"{host}:{port}"
        log("server", f"accepted a connection from {peer}")
        async with MessageChannel(stream, Lines()) as channel:
            while True:
                # A timeout is a cancel scope. A receive it cancels loses nothing:
                # bytes of a half-arrived line stay buffered in the channel.
                with trio.move_on_after(0.05) as scope:
                    try:
                        line = await channel.receive()
                    except trio.EndOfChannel:
                        break
                if scope.cancelled_caught:
                    kept = channel.statistics().buffered_bytes
                    log("server", f"no whole line from {peer} in 50 ms ({kept} bytes kept); waiting on")
                    continue
                log("server", f"<- {line!r} from {peer}, echoing it upper-cased")
                await channel.send(line.upper())
        log("server", f"{peer} hung up; its handler task ends")

    async def client(name: str, port: int, lines: list[bytes]) -> None:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with MessageChannel(stream, Lines()) as channel:
            log(name, f"connected from port {stream.socket.getsockname()[1]}")
            for line in lines:
                await channel.send(line)
                log(name, f"-> {line!r}   <- {await channel.receive()!r}")

    async def slow_client(port: int) -> None:
        # Sends half a line, pauses past the server's timeout, then the rest.
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        async with MessageChannel(stream, Lines()) as channel:
            await stream.send_all(b"half a li")
            log("slow", "-> b'half a li' ... (pausing)")
            await trio.sleep(0.08)
            await stream.send_all(b"ne, then the rest\n")
            log("slow", f"-> b'ne, then the rest'   <- {await channel.receive()!r}")

    say("trionet demo: a line-echo server and its clients, all in one nursery")
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        log("server", f"listening on 127.0.0.1:{port}")
        async with trio.open_nursery() as clients:
            clients.start_soon(client, "alice", port, [b"hello", b"structured concurrency"])
            clients.start_soon(client, "bob", port, [b"every task has a parent"])
            clients.start_soon(slow_client, port)
        log("demo", "all clients are done; cancelling the server's nursery")
        nursery.cancel_scope.cancel()
    log("demo", "the nursery has exited: no task is left running and every socket is closed")
