"""UDP ping with retransmission and round-trip statistics, shown as a timeline.

What it teaches:

* UDP loses datagrams, so a request must be sent again until its answer
  comes. ``endpoint.request()`` does it: it retransmits on a ``RetryPolicy``
  (CoAP's: each timeout twice the one before, the first spread at random so
  that clients do not retransmit in step) and gives up with ``RequestTimeout``
  after the last attempt.
* The first timeout should follow the path's round-trip time. An
  ``RttEstimator`` measures it as TCP does (RFC 6298: SRTT, RTTVAR, RTO) and
  obeys Karn's rule: a reply to a retransmitted ping says nothing about the
  round-trip time, since it may answer either copy, so it is not sampled.
* A server that must not handle a request twice keeps its replies for a while
  and replays them to retransmissions (``serve_udp(request_key=...)``).
* Everything trionet does is reported to an observer; printed as a timeline it
  shows each transmission, retransmission (with its timeout), reply, give-up
  and replayed duplicate.
* The same code runs on real sockets and on trionet's virtual network, where a
  lossy link and a mock clock make a minute of retransmissions take no time.

Run it::

    python examples/udp_ping.py                          # 5 pings to a built-in server on 127.0.0.1
    python examples/udp_ping.py --drop 0.4 --count 10    # the server ignores 40% of the pings
    python examples/udp_ping.py --virtual --loss 0.3     # a simulated lossy link, in virtual time
    python examples/udp_ping.py --host 127.0.0.1 --port 7000   # ping an echo server of your own

It exits by itself after ``--count`` pings: with status 0 if any reply came, 1
if none did.
"""

from __future__ import annotations

import argparse
import functools
import random
import statistics
import sys
from collections.abc import Callable

import trio
import trio.testing

from trionet import (
    Datagram,
    Event,
    EventLog,
    RequestTimeout,
    RetryPolicy,
    RttEstimator,
    UDPEndpoint,
    UDPServer,
    open_udp_endpoint,
    serve_udp,
)
from trionet.testing import VirtualNetwork


def show(value: object) -> str:
    if isinstance(value, float):
        return f"{value * 1000:.1f}ms" if value < 10 else f"{value:.1f}s"
    return str(value)


def timeline(log: EventLog) -> str:
    origin = log.events[0].time if log.events else 0.0

    def line(event: Event) -> str:
        details = " ".join(f"{key}={show(value)}" for key, value in event.details.items()
                           if key != "size")
        return f"{(event.time - origin) * 1000:9.1f} ms  {event.kind:<26} {details}"

    return "\n".join(line(event) for event in log)


def answers(tag: bytes) -> Callable[[Datagram], bool]:
    """The reply to the ping with this tag (a late reply to an earlier ping is not)."""
    return lambda datagram: datagram.data.startswith(tag)


async def ping(endpoint: UDPEndpoint, target: str, args: argparse.Namespace,
               log: EventLog) -> int:
    # A LAN answers in well under a millisecond: start from a short timeout
    # (the policy's, until the estimator has measured the path) and let the RTO
    # floor go far below RFC 6298's 1 s (see RttEstimator).
    rtt = RttEstimator(min_rto=args.timeout / 10)
    policy = RetryPolicy(initial_timeout=args.timeout, max_attempts=args.attempts,
                         rng=random.Random(args.seed).random)
    times: list[float] = []
    for seq in range(1, args.count + 1):
        tag = b"ping %d " % seq
        try:
            reply = await endpoint.request(tag + b"." * 48, target, policy=policy, rtt=rtt,
                                           match=answers(tag))
        except RequestTimeout as exc:
            print(f"seq={seq} no reply after {exc.attempts} transmissions", flush=True)
        else:
            answered = log.of_kind("udp.reply")[-1].details
            elapsed = float(answered["rtt"])  # type: ignore[arg-type]
            times.append(elapsed)
            print(f"seq={seq} reply from {reply.address}: time={elapsed * 1000:.3f} ms, "
                  f"{answered['attempts']} transmission(s)", flush=True)
        if seq < args.count:
            await trio.sleep(args.interval)

    lost = args.count - len(times)
    print(f"\n--- {target} ping statistics ---")
    print(f"{args.count} sent, {len(times)} received, {100 * lost / args.count:.0f}% loss, "
          f"{endpoint.statistics().retransmissions} retransmissions")
    if times:
        spread = statistics.pstdev(times)
        print(f"rtt min/avg/max/mdev = {min(times) * 1000:.3f}/"
              f"{statistics.fmean(times) * 1000:.3f}/{max(times) * 1000:.3f}/"
              f"{spread * 1000:.3f} ms")
    assert rtt.srtt is None or rtt.rttvar is not None
    srtt = "n/a" if rtt.srtt is None else f"{rtt.srtt * 1000:.3f} ms"
    rttvar = "n/a" if rtt.rttvar is None else f"{rtt.rttvar * 1000:.3f} ms"
    print(f"estimator: srtt={srtt} rttvar={rttvar} rto={rtt.rto * 1000:.3f} ms "
          f"({rtt.samples} samples; retransmitted pings are not sampled)")
    print("\nTimeline:")
    print(timeline(log))
    return 0 if times else 1


async def real(args: argparse.Namespace) -> int:
    log = EventLog()
    drop = random.Random(args.seed)

    async def echo(datagram: Datagram) -> bytes | None:
        if drop.random() < args.drop:
            return None  # ignored, as if the ping had been lost
        return datagram.data

    async with trio.open_nursery() as nursery:
        port = args.port
        if args.host is None:
            server: UDPServer = await nursery.start(functools.partial(serve_udp, echo, 0, host="127.0.0.1"))
            port = server.port
        host = args.host or "127.0.0.1"
        target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        async with open_udp_endpoint(observer=log) as endpoint:
            status = await ping(endpoint, target, args, log)
        nursery.cancel_scope.cancel()
    return status


async def virtual(args: argparse.Namespace) -> int:
    net = VirtualNetwork(seed=args.seed)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.020, jitter=0.005, loss=args.loss)
    log = EventLog()

    async def echo(datagram: Datagram) -> bytes:
        return datagram.data

    def ping_id(datagram: Datagram) -> bytes:
        return datagram.data.split(b" ")[1]

    with net.install():
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                await nursery.start(functools.partial(
                    serve_udp, echo, 7, request_key=ping_id, observer=log))
            with net.host("client"):
                async with open_udp_endpoint(observer=log) as endpoint:
                    status = await ping(endpoint, "server:7", args, log)
            nursery.cancel_scope.cancel()
    return status


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5, help="pings to send (default 5)")
    parser.add_argument("--interval", type=float, default=0.2,
                        help="seconds between pings (default 0.2)")
    parser.add_argument("--attempts", type=int, default=5,
                        help="transmissions per ping before giving up (default 5)")
    parser.add_argument("--timeout", type=float, default=0.2,
                        help="first timeout before any round trip is measured (default 0.2 s)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every random choice")
    parser.add_argument("--host", help="ping this echo server instead of a built-in one")
    parser.add_argument("--port", type=int, default=7, help="its port (default 7)")
    parser.add_argument("--drop", type=float, default=0.0,
                        help="fraction of pings the built-in server ignores (default 0)")
    parser.add_argument("--virtual", action="store_true",
                        help="run on a simulated network, in virtual time")
    parser.add_argument("--loss", type=float, default=0.3,
                        help="loss rate of the simulated link, each way (default 0.3)")
    args = parser.parse_args(argv)
    if args.count < 1 or args.attempts < 1 or args.timeout <= 0 or args.interval < 0:
        parser.error("--count and --attempts must be >= 1, --timeout > 0, --interval >= 0")
    if args.virtual:
        return trio.run(virtual, args, clock=trio.testing.MockClock(autojump_threshold=0))
    return trio.run(real, args)


if __name__ == "__main__":
    sys.exit(main())
