"""Tutorial step 5: UDP requests over a lossy network, retransmitted until answered.

What it teaches: UDP delivers datagrams or loses them, silently. A client that
sends a request and waits for the answer must send it again when the answer does
not come, wait longer each time (so that a struggling network is not flooded),
and give up at some point. ``UDPEndpoint.request()`` does this on a
``RetryPolicy``; an observer prints each transmission and retransmission. The
network is trionet's virtual network with a link that loses 30% of datagrams
(seeded, so the same ones every run), and trio's ``MockClock`` makes the
seconds of waiting pass instantly.

Run it::

    python examples/tutorial/lossy_requests.py              # 30% loss
    python examples/tutorial/lossy_requests.py --loss 0.6   # most requests need several tries
    python examples/tutorial/lossy_requests.py --loss 1     # every request gives up
"""

import argparse

import trio
import trio.testing

import trionet
from trionet.testing import VirtualNetwork

POLICY = trionet.RetryPolicy(initial_timeout=0.1, random_factor=1.0, max_attempts=5)


async def square(datagram: trionet.Datagram) -> bytes:
    """The server's handler: the reply to ``b"7"`` is ``b"7 49"``."""
    number = int(datagram.data)
    return b"%d %d" % (number, number * number)


def narrate(event: trionet.Event) -> None:
    """An observer: print what the client's endpoint does, as it does it."""
    ms = f"{event.time * 1000:7.0f} ms"
    details = event.details
    timeout = details.get("timeout")
    waits = f"waits {timeout * 1000:.0f} ms" if isinstance(timeout, (int, float)) else ""
    if event.kind == "udp.transmit":
        print(f"{ms}  sent, {waits} for an answer")
    elif event.kind == "udp.retransmit":
        print(f"{ms}  no answer: sent again (attempt {details['attempt']}), {waits}")
    elif event.kind == "udp.reply":
        print(f"{ms}  answered, after {details['attempts']} attempt(s)")
    elif event.kind == "udp.give_up":
        print(f"{ms}  gave up after {details['attempts']} attempts")


async def ask(endpoint: trionet.UDPEndpoint, number: int) -> None:
    def answers_this_request(reply: trionet.Datagram) -> bool:
        return reply.data.split()[0] == b"%d" % number

    print(f"request {number}:")
    try:
        reply = await endpoint.request(b"%d" % number, "10.0.0.1:5300", policy=POLICY,
                                       match=answers_this_request)
    except trionet.RequestTimeout:
        print("           no square this time\n")
    else:
        print(f"           the square of {number} is {reply.data.split()[1].decode()}\n")


async def main(loss: float) -> None:
    net = VirtualNetwork(seed=3)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.010, loss=loss)
    with net.install():
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                await nursery.start(trionet.serve_udp, square, 5300)
            with net.host("client"):
                async with trionet.open_udp_endpoint(observer=narrate) as endpoint:
                    for number in range(2, 6):
                        await ask(endpoint, number)
            nursery.cancel_scope.cancel()
    stats = net.statistics()
    print(f"the network carried {stats.datagrams_sent} datagrams and lost {stats.datagrams_dropped}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", type=float, default=0.3, help="fraction of datagrams lost")
    trio.run(main, parser.parse_args().loss, clock=trio.testing.MockClock(autojump_threshold=0))
