"""Watch a lossy link at work: a timeline of UDP requests, losses and retransmissions.

What it teaches: on a link that loses 30% of datagrams and duplicates some, a
client that sends a request and waits for the answer must retransmit, and a
server must expect the same request twice. The program runs a tiny "square this
number" protocol over trionet's virtual network and prints every datagram sent,
lost, duplicated and delivered, with the simulated time, so you can follow each
request from first try to answer.

How to run it::

    python examples/lossy_timeline.py

It finishes at once: the network runs on trio's MockClock, which jumps straight
to the next event instead of sleeping. The seed fixes every random decision, so
the output is the same on every run; change SEED to see another story.
"""

from __future__ import annotations

import socket

import trio
import trio.testing

from trionet.testing import VirtualNetwork, format_trace

SEED = 2
PORT = 5300
REQUESTS = 4
RETRY_AFTER = 0.100  # seconds without an answer before the client sends again
ATTEMPTS = 5


async def serve(sock: trio.socket.SocketType) -> None:
    """Answer every request ``n`` with ``n*n``; duplicates are answered again."""
    while True:
        data, client = await sock.recvfrom(100)
        number = int(data)
        await sock.sendto(b"%d=%d" % (number, number * number), client)


async def ask(sock: trio.socket.SocketType, number: int) -> tuple[bytes | None, int]:
    """Send ``number`` until its answer arrives; return (answer, attempts used)."""
    for attempt in range(1, ATTEMPTS + 1):
        await sock.send(b"%d" % number)
        with trio.move_on_after(RETRY_AFTER):
            while True:  # skip stale answers to earlier requests or duplicates
                answer = await sock.recv(100)
                if answer.startswith(b"%d=" % number):
                    return answer, attempt
    return None, ATTEMPTS


async def main() -> None:
    net = VirtualNetwork(seed=SEED)
    net.add_host("server", "10.0.0.1")
    net.add_host("client", "10.0.0.2")
    net.link("client", "server", latency=0.020, jitter=0.010, loss=0.3, duplicate=0.1)
    results = []
    with net.install():
        async with trio.open_nursery() as nursery:
            with net.host("server"):
                server = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await server.bind(("10.0.0.1", PORT))
                nursery.start_soon(serve, server)
            with net.host("client"):
                client = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                await client.connect(("server", PORT))
                for number in range(2, 2 + REQUESTS):
                    results.append((number, *(await ask(client, number))))
            nursery.cancel_scope.cancel()
        client.close()
        server.close()

    print("What crossed the wire (udp.drop with 'loss' is a datagram the link lost):\n")
    print(format_trace(e for e in net.trace if e.event.startswith("udp.")))
    for number, answer, attempts in results:
        outcome = answer.decode() if answer else "no answer"
        print(f"request {number}: {outcome} after {attempts} attempt(s)")
    stats = net.statistics()
    print(
        f"\n{stats.datagrams_sent} datagrams sent, {stats.datagrams_delivered} delivered, "
        f"{stats.datagrams_dropped} dropped"
    )


if __name__ == "__main__":
    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
