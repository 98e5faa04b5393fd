"""Memory an idle MessageChannel keeps after one large message (issue 14.1).

N real loopback TCP connections (default 100), each a ``MessageChannel`` over a
``trio.SocketStream`` on both ends, all in one ``trio.run``. Every receiving
channel waits in ``receive()``. Memory is measured with every connection open and
idle, then each connection in turn receives one 8,000,000-byte message (the
receiver keeps only its length) and goes back to waiting in ``receive()``, and
memory is measured again. The difference over N is what one idle connection keeps
of its last large message. The sender's payload is one bytes object allocated
before the first measurement; each frame it encodes is freed once sent.

Figures: Python allocations (``tracemalloc``, exact), the process's VmRSS after
``malloc_trim(0)`` (glibc keeps some freed memory even so: a near-constant few MiB
that does not grow with N, so divided by N it shrinks as N grows), and the mean of
the decoders' ``held``.
Target: under 64 KiB more per connection than before the message.

Run: python -m benchmarks.idle_memory [--connections N] [--size BYTES]
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import gc
import tracemalloc

import trio
import trio.testing

from trionet import MessageChannel

TARGET_PER_CONNECTION = 64 * 1024  # the acceptance bound of issue 14


def rss_bytes() -> int:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def malloc_trim() -> None:
    # glibc keeps freed memory in its heap (and raises its mmap threshold after
    # a large block is freed), so VmRSS also counts memory nobody holds; trimming
    # before each reading makes the RSS figure about what is still allocated.
    name = ctypes.util.find_library("c")
    if name is not None:
        libc = ctypes.CDLL(name)
        if hasattr(libc, "malloc_trim"):
            libc.malloc_trim(0)


def snapshot() -> tuple[int, int]:
    gc.collect()
    malloc_trim()
    return tracemalloc.get_traced_memory()[0], rss_bytes()


async def run(connections: int, size: int) -> dict[str, float]:
    payload = b"p" * size
    listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
    port = listener.socket.getsockname()[1]
    senders: list[MessageChannel] = []
    receivers: list[MessageChannel] = []
    for _ in range(connections):
        client = await trio.open_tcp_stream("127.0.0.1", port)
        server = await listener.accept()
        senders.append(MessageChannel(client))
        receivers.append(MessageChannel(server))
    received = [trio.Event() for _ in range(connections)]
    sizes = [0] * connections

    async def receive_loop(index: int) -> None:
        channel = receivers[index]
        while True:
            sizes[index] = len(await channel.receive())  # the message itself is dropped
            received[index].set()

    figures: dict[str, float] = {}
    async with trio.open_nursery() as nursery:
        for index in range(connections):
            nursery.start_soon(receive_loop, index)
        await trio.testing.wait_all_tasks_blocked()
        traced_before, rss_before = snapshot()
        for index in range(connections):
            await senders[index].send(payload)
            await received[index].wait()
        await trio.testing.wait_all_tasks_blocked()  # every receiver waits again
        traced_after, rss_after = snapshot()
        held = sum(getattr(channel._decoder, "held", -1) for channel in receivers)
        assert sizes == [size] * connections
        nursery.cancel_scope.cancel()
    for channel in senders + receivers:
        await channel.aclose()
    await listener.aclose()
    figures["traced_per_connection"] = (traced_after - traced_before) / connections
    figures["rss_per_connection"] = (rss_after - rss_before) / connections
    figures["held_per_connection"] = held / connections
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=100)
    parser.add_argument("--size", type=int, default=8_000_000)
    args = parser.parse_args()
    tracemalloc.start()
    figures = trio.run(run, args.connections, args.size)
    tracemalloc.stop()
    kib = 1024
    print(f"{args.connections} idle loopback connections, after one {args.size:,}-byte message each")
    traced, rss = figures["traced_per_connection"] / kib, figures["rss_per_connection"] / kib
    print(f"  Python allocations (tracemalloc):  {traced:9.2f} KiB more per connection")
    print(f"  VmRSS (after malloc_trim):         {rss:9.2f} KiB more per connection")
    held = figures["held_per_connection"]
    if held >= 0:
        print(f"  decoder.held:                      {held / kib:9.2f} KiB per connection")
    else:
        print("  decoder.held:                      n/a (this trionet has no Decoder.held)")
    worst = max(figures["traced_per_connection"], figures["rss_per_connection"])
    verdict = "PASS" if worst < TARGET_PER_CONNECTION else "FAIL"
    print(f"  {verdict}: target < {TARGET_PER_CONNECTION // kib} KiB more per connection (both figures)")


if __name__ == "__main__":
    main()
