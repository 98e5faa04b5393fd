"""Happy Eyeballs as a race of tasks: a dual-stack connect, printed as a timeline.

What it teaches:

* ``connect_tcp`` implements RFC 8305 ("Happy Eyeballs"): it looks up IPv6 and
  IPv4 in parallel, tries the addresses with the families alternating, starts a
  new attempt every 250 ms (or at once when one fails), keeps the first
  connection that succeeds and cancels the others. Each attempt is a task in a
  nursery that ``connect_tcp`` owns; the winner cancels that nursery, so no
  losing attempt outlives the call.
* The virtual network (``trionet.testing.VirtualNetwork``) makes a bad day on
  demand: here the server's IPv6 address is a *black hole* (packets to it
  vanish, so a connect there never finishes, as on a network with broken IPv6
  routing). Under trio's ``MockClock`` the 250 ms pass instantly and exactly.
* An ``EventLog`` observer records what ``connect_tcp`` did; the program prints
  it as a list of events and as a picture of the race.

Run it::

    python examples/happy_eyeballs.py              # IPv6 black-holed: IPv4 wins at 250 ms
    python examples/happy_eyeballs.py --refuse     # IPv6 refused after 100 ms: IPv4 at once
    python examples/happy_eyeballs.py --slow-ipv6-dns 0.03   # IPv4 answers first, waits for IPv6
    python examples/happy_eyeballs.py --slow-ipv6-dns 0.2    # ... but at most 50 ms

It ends by itself in a moment: the simulated time does not pass in real time.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import trio
import trio.testing

import trionet
from trionet.testing import VirtualNetwork

SERVER_V6 = "fd00::1"
SERVER_V4 = "10.0.0.1"
PORT = 443
WIDTH = 50  # characters in the picture's time axis


async def greet(conn: trionet.TCPConnection) -> None:
    await conn.stream.send_all(b"hello from %s\n" % conn.local.host.encode())


def picture(log: trionet.EventLog, origin: float) -> list[str]:
    """Draw each attempt as a bar from its start to its end, on one time axis."""
    starts: dict[str, float] = {}
    ends: dict[str, tuple[float, str]] = {}
    for event in log:
        address = str(event.details.get("address", ""))
        if event.kind == "tcp.connect.attempt":
            starts[address] = event.time
        elif event.kind in ("tcp.connect.won", "tcp.connect.failed", "tcp.connect.cancelled"):
            ends[address] = (event.time, event.kind.removeprefix("tcp.connect."))
    if not starts:
        return []
    last = max(time for time, _ in ends.values()) - origin
    scale = WIDTH / max(last, 0.001)
    lines = [f"{'':>20}0 ms{'':>{WIDTH - 8}}{last * 1000:.0f} ms",
             f"{'':>20}|{'-' * (WIDTH - 1)}|"]
    for event in log.of_kind("tcp.connect.answer"):
        column = round((event.time - origin) * scale)
        family = str(event.details["family"])
        lines.append(f"{family + ' answer':>19} {' ' * column + '*':<{WIDTH}} at "
                     f"{(event.time - origin) * 1000:.1f} ms")
    for address, start in starts.items():
        end, outcome = ends.get(address, (origin + last, "running"))
        left = round((start - origin) * scale)
        length = max(1, round((end - start) * scale))
        bar = " " * left + "=" * length
        lines.append(f"{address:>19} {bar:<{WIDTH}} {outcome} at {(end - origin) * 1000:.1f} ms")
    return lines


async def main(args: argparse.Namespace) -> None:
    net = VirtualNetwork(seed=1)
    net.add_host("server", SERVER_V4, SERVER_V6)
    net.add_host("client", "10.0.0.2", "fd00::2")
    net.link("client", "server", latency=0.05 if args.refuse else 0.001)
    net.set_dns("example.test", SERVER_V6, SERVER_V4, ipv6_delay=args.slow_ipv6_dns)
    if not args.refuse:
        net.blackhole(SERVER_V6)
    log = trionet.EventLog()
    with net.install(default_host="client"):
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                # With --refuse the server listens on IPv4 only, so that a
                # connect to its IPv6 address is refused; otherwise on both.
                host = SERVER_V4 if args.refuse else None
                await nursery.start(partial(trionet.serve_tcp, greet, PORT, host=host))
            began = trio.current_time()
            conn = await trionet.connect_tcp("example.test", PORT, observer=log,
                                             resolver=trionet.Resolver())
            async with conn:
                greeting = await conn.stream.receive_some()
            nursery.cancel_scope.cancel()

    what = "refuses connections" if args.refuse else "is a black hole"
    print(f"example.test has IPv6 {SERVER_V6} (which {what}) and IPv4 {SERVER_V4}")
    print(f"connect_tcp('example.test', {PORT}) connected to {conn.peer} "
          f"after {(log.events[-1].time - began) * 1000:.1f} ms (simulated)")
    print(f"the server said: {greeting.decode().strip()}")
    print("\nWhat connect_tcp did (its observer's events):\n")
    print(log.format_timeline(start=began))
    print("\nThe race: each answer (*) and each attempt task (=) on one time axis:\n")
    print("\n".join(picture(log, began)))


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Watch Happy Eyeballs race on a virtual network.")
    parser.add_argument("--refuse", action="store_true",
                        help="make IPv6 refuse (after a 100 ms round trip) instead of a black hole")
    parser.add_argument("--slow-ipv6-dns", type=float, default=0.0, metavar="SECONDS",
                        help="delay the IPv6 (AAAA) answer by this long")
    return parser.parse_args(argv)


if __name__ == "__main__":
    trio.run(main, parse_args(sys.argv[1:]), clock=trio.testing.MockClock(autojump_threshold=0))
