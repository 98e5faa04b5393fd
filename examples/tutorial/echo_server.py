"""Tutorial step 1: an echo server, and the nursery that owns it.

What it teaches: ``serve_tcp`` runs inside a nursery, like any other task. It
starts one task per connection, calls ``echo()`` in it, and closes the
connection when ``echo()`` returns. Nothing runs in the background: when the
nursery is cancelled (here when you press Ctrl-C), every connection's task is
cancelled and every socket closed before the nursery block ends.

Run it::

    python examples/tutorial/echo_server.py          # port 8000; or give another
    # in a second terminal:
    python -m trionet connect 127.0.0.1 8000         # or: nc localhost 8000

Type lines in the second terminal: each comes back. Ctrl-C stops either program.
"""

import signal
import sys
from functools import partial

import trio

import trionet


async def echo(conn: trionet.TCPConnection) -> None:
    print(f"{conn.peer} connected")
    async for line in conn.channel:
        await conn.channel.send(line)
    print(f"{conn.peer} hung up")


async def main(port: int) -> None:
    # Ctrl-C (SIGINT) arrives on this channel instead of as KeyboardInterrupt.
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:
            server: trionet.TCPServer = await nursery.start(
                partial(trionet.serve_tcp, echo, port, codec=trionet.Lines())
            )
            print(f"listening on port {server.port}")
            async for _ in ctrl_c:  # wait for the first Ctrl-C
                break
            nursery.cancel_scope.cancel()  # cancels serve_tcp and every connection's task
    print("server stopped; every connection was closed first")


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]) if len(sys.argv) > 1 else 8000)
