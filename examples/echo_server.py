"""An echo server whose lifetime is a nursery, with a graceful shutdown on Ctrl-C.

What it teaches:

* ``open_tcp_server`` runs the server inside an ``async with`` block: the server,
  its accept loops and one task per connection all live in a nursery that the
  block owns. When the block ends, nothing of the server is left running.
* A handler is a plain async function that gets a connection: with a codec,
  ``conn.channel`` sends and receives whole messages (here: lines).
* Ctrl-C (SIGINT) or SIGTERM starts a *graceful* shutdown: the server stops
  accepting at once, lets the connections that are open finish for
  ``--grace`` seconds, then cancels what is left.
* ``--events`` prints what the server does (accepts, closes, shutdown phases)
  as a timeline: trionet reports these to any ``observer=`` callable.

Run it::

    python examples/echo_server.py --port 8000 --events
    # in another terminal:
    python examples/echo_client.py --port 8000 hello world
    # or: nc localhost 8000   (type lines; they come back)

Options for a bounded run (tests use them): ``--port 0`` lets the system pick a
free port (the first line printed is ``listening on port N``); ``--exit-after S``
shuts down gracefully by itself after S seconds.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Callable

import trio

import trionet


async def echo(conn: trionet.TCPConnection) -> None:
    print(f"{conn.peer} connected", flush=True)
    async for line in conn.channel:
        await conn.channel.send(line)
    print(f"{conn.peer} hung up", flush=True)


def event_printer() -> Callable[[trionet.Event], None]:
    """An observer that prints each event with its time since the server started."""
    start = trio.current_time()

    def print_event(event: trionet.Event) -> None:
        details = " ".join(f"{key}={value}" for key, value in event.details.items())
        print(f"event {event.time - start:8.3f}s {event.kind} {details}".rstrip(), flush=True)

    return print_event


async def main(args: argparse.Namespace) -> None:
    # Signals are caught from the start, so Ctrl-C is a graceful shutdown as
    # soon as the server listens (without this, trio raises KeyboardInterrupt).
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trionet.open_tcp_server(
            echo,
            args.port,
            host=args.host,
            codec=trionet.Lines(),
            max_connections=args.max_connections,
            idle_timeout=args.idle_timeout,
            shutdown_grace=args.grace,
            observer=event_printer() if args.events else None,
        ) as server:
            print(f"listening on port {server.port}", flush=True)
            print("addresses: " + ", ".join(str(a) for a in server.addresses), flush=True)
            # The block's body decides when the server stops: on a signal, or
            # after --exit-after seconds. Leaving the block is the graceful shutdown.
            with trio.move_on_after(args.exit_after):
                async for signum in signals:
                    print(f"got {signal.Signals(signum).name}", flush=True)
                    break
            print(f"shutting down: {server.connection_count} connection(s) open, "
                  f"grace {args.grace} s", flush=True)
    stats = server.statistics()
    print(f"stopped after {stats.connections_accepted} connection(s)", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="A line echo server built on trionet.")
    parser.add_argument("--host", default=None,
                        help="address to listen on (default: every IPv4 and IPv6 interface)")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--grace", type=float, default=5.0,
                        help="seconds open connections get to finish at shutdown")
    parser.add_argument("--max-connections", type=int, default=None,
                        help="serve at most this many clients at once; others wait")
    parser.add_argument("--idle-timeout", type=float, default=None,
                        help="disconnect clients silent for this many seconds")
    parser.add_argument("--exit-after", type=float, default=float("inf"), metavar="SECONDS",
                        help="shut down by itself after this long (for bounded runs)")
    parser.add_argument("--events", action="store_true", help="print the server's events")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args(sys.argv[1:]))
