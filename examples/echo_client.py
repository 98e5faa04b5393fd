"""A client for echo_server.py: send lines, read the echoes, with a timeout.

What it teaches:

* A ``MessageChannel`` turns a byte stream into whole messages; with the
  ``Lines`` codec each message is one line, the wire format ``nc`` speaks.
* Timeouts are cancel scopes: ``trio.fail_after`` bounds the whole exchange,
  and a cancelled receive loses nothing (the channel keeps partial frames).
* Many clients are many tasks in one nursery (``--clients N``); the nursery
  waits for all of them. An exception escaping one task would cancel the
  others (the nursery's rule), so each client reports its network errors
  instead of raising them.

Run it against a running server::

    python examples/echo_server.py --port 8000
    python examples/echo_client.py --port 8000 hello world
    python examples/echo_client.py --port 8000 --clients 20 --repeat 100

It exits by itself: after the replies, or with an error after ``--timeout``
seconds (10 by default).
"""

from __future__ import annotations

import argparse
import sys

import trio

import trionet


async def client(number: int, args: argparse.Namespace, failures: list[str]) -> None:
    try:
        stream = await trio.open_tcp_stream(args.host, args.port)
        async with trionet.MessageChannel(stream, trionet.Lines()) as channel:
            for _ in range(args.repeat):
                for message in args.messages:
                    await channel.send(message.encode())
                    reply = await channel.receive()
                    if args.clients == 1 and args.repeat == 1:
                        print(f"sent {message!r}, got back {reply.decode()!r}", flush=True)
                    elif reply != message.encode():
                        failures.append(f"client {number}: sent {message!r}, got {reply!r}")
                        return
    except (OSError, trio.BrokenResourceError, trio.EndOfChannel) as exc:
        # Reported, not raised: one client's failure should not cancel the others.
        failures.append(f"client {number}: {type(exc).__name__}: {exc}")


async def main(args: argparse.Namespace) -> int:
    failures: list[str] = []
    try:
        with trio.fail_after(args.timeout):
            async with trio.open_nursery() as nursery:
                for number in range(args.clients):
                    nursery.start_soon(client, number, args, failures)
    except trio.TooSlowError:
        print(f"no complete answer within {args.timeout} s", file=sys.stderr)
        return 1
    for failure in failures:
        print(failure, file=sys.stderr)
    if failures:
        return 1
    exchanged = args.clients * args.repeat * len(args.messages)
    print(f"{args.clients} client(s) done, {exchanged} message(s) echoed", flush=True)
    return 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send lines to an echo server.")
    parser.add_argument("messages", nargs="*", default=["hello", "world"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--clients", type=int, default=1, help="concurrent connections")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of messages per client")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds for everything")
    return parser.parse_args(argv)


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args(sys.argv[1:])))
