"""A line-based chat server: every line a client sends goes to every other client.

What it teaches:

* **One task per client, and a nursery that owns them.** ``serve_tcp`` runs
  ``chat()`` in a task of its own for every connection, in the server's nursery.
  Inside, each client has two tasks in a nursery of its own: one reads the
  client's lines, one writes what others said. When either ends, the client's
  nursery is cancelled, so the other ends too, and the connection closes.
* **Broadcast over memory channels.** Each member of the room has an *outbox*, a
  ``trio.open_memory_channel``. Broadcasting puts a line in every outbox with
  ``send_nowait``; each member's writer task takes lines from its own outbox.
  Nobody waits for anybody else's socket.
* **Backpressure has a policy.** An outbox holds at most ``--backlog`` lines. A
  client that reads slower than the room talks fills it, and is disconnected
  (its tasks' cancel scope is cancelled) rather than allowed to slow everyone
  down or to make the server's memory grow.
* **Codecs speak the terminal's language.** ``Lines()`` frames on ``\\n`` and
  accepts ``\\r\\n``, which is what ``telnet`` and ``nc -C`` send.

Run it::

    python examples/chat_server.py --port 8000
    # then, in two or more other terminals:
    nc localhost 8000          # or: telnet localhost 8000
    python -m trionet connect 127.0.0.1 8000

Each client is asked for a name first; then every line it types is sent to the
others as ``name: line``. Ctrl-C stops the server: the cancellation reaches
every client's tasks, and every connection is closed before it exits.
"""

from __future__ import annotations

import argparse
import signal
import sys
from functools import partial

import trio

import trionet

MAX_NAME = 32


class Room:
    """The members of the chat: for each, an outbox of lines and the scope of its tasks."""

    def __init__(self, backlog: int) -> None:
        self.backlog = backlog
        self.members: dict[str, tuple[trio.MemorySendChannel[bytes], trio.CancelScope]] = {}

    def join(self, name: str, scope: trio.CancelScope) -> trio.MemoryReceiveChannel[bytes]:
        outbox, inbox = trio.open_memory_channel[bytes](self.backlog)
        self.members[name] = (outbox, scope)
        return inbox

    def leave(self, name: str) -> None:
        outbox, _ = self.members.pop(name)
        outbox.close()

    def broadcast(self, line: bytes, *, sender: str | None = None) -> None:
        for name, (outbox, scope) in list(self.members.items()):
            if name == sender:
                continue
            try:
                outbox.send_nowait(line)
            except trio.WouldBlock:
                # Its outbox is full: this member reads slower than the room talks.
                print(f"{name} is too slow; disconnecting them", flush=True)
                scope.cancel()  # ends the member's tasks, and so its connection
                self.leave(name)


async def ask_name(channel: trionet.MessageChannel, room: Room) -> str | None:
    await channel.send(b"welcome! what is your name?")
    async for line in channel:
        name = line.decode("utf-8", "replace").strip()[:MAX_NAME]
        if not name:
            await channel.send(b"a name, please:")
        elif name in room.members:
            await channel.send(b"that name is taken; another one:")
        else:
            return name
    return None  # hung up before choosing a name


async def write_lines(inbox: trio.MemoryReceiveChannel[bytes], channel: trionet.MessageChannel) -> None:
    try:
        async for line in inbox:
            await channel.send(line)
    except trio.BrokenResourceError:
        pass  # the client is gone (or was cut off mid-line after abort_timeout)


async def chat(room: Room, conn: trionet.TCPConnection) -> None:
    # Our own channel, for a short abort_timeout: when a slow client is
    # disconnected in the middle of a line, it gets one second to take the rest.
    channel = trionet.MessageChannel(conn.stream, trionet.Lines(max_size=4096), abort_timeout=1)
    name = await ask_name(channel, room)
    if name is None:
        return
    print(f"{name} joined from {conn.peer}", flush=True)
    try:
        async with trio.open_nursery() as nursery:
            inbox = room.join(name, nursery.cancel_scope)
            members = ", ".join(sorted(room.members))
            await channel.send(f"hello {name}! here now: {members}".encode())
            room.broadcast(f"* {name} joined".encode(), sender=name)
            nursery.start_soon(write_lines, inbox, channel)
            async for line in channel:  # ends when the client hangs up
                room.broadcast(f"{name}: ".encode() + line, sender=name)
            nursery.cancel_scope.cancel()  # stop the writer too
    finally:
        if name in room.members:
            room.leave(name)
        room.broadcast(f"* {name} left".encode())
        print(f"{name} left", flush=True)


async def main(args: argparse.Namespace) -> None:
    room = Room(args.backlog)
    # Ctrl-C (SIGINT) arrives on this channel instead of as KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            server: trionet.TCPServer = await nursery.start(
                partial(trionet.serve_tcp, partial(chat, room), args.port, host=args.host)
            )
            print(f"listening on port {server.port}", flush=True)
            async for _ in ctrl_c:
                break
            nursery.cancel_scope.cancel()  # every client's tasks are cancelled, then closed
    print("server stopped", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A line-based chat server built on trionet.")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: every IPv4 and IPv6 address)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--backlog", type=int, default=100,
                        help="lines a client may fall behind before it is disconnected")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args(sys.argv[1:]))
