"""Resolver backends: DnsPythonBackend against getaddrinfo, cache misses, one local DNS server.

Run from the repository root (about a minute; needs dnspython, ``pip install -e '.[dns]'``)::

    .venv/bin/python -m benchmarks.resolver_backends

Both backends ask the same DNS server, a separate process on 127.0.0.1 that
answers every A query with one record (and every AAAA query with none) from
pre-built bytes, so the server costs the same for both. Every lookup is of a
new name, so no cache answers. getaddrinfo asks the servers of
``/etc/resolv.conf``, so to point it at the local server the client runs in
a private mount namespace (``unshare -m``) where a temporary resolv.conf
saying ``nameserver 127.0.0.1`` is bind-mounted over the real one, and the
server listens on port 53: that needs root and ``unshare``; without them only
DnsPythonBackend is measured.

Reported, as medians of several runs with the backends interleaved:

* sequential: one lookup at a time, microseconds per lookup (latency);
* concurrent: lookups from 20 tasks at once (the resolver's default
  ``max_concurrent_lookups``), lookups per second;

each for one family (an A query) and for both (A and AAAA in parallel, as
``resolve(host, port)`` asks).
"""

from __future__ import annotations

import argparse
import itertools
import os
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

import trionet

CONCURRENCY = 20  # trionet.DEFAULT_MAX_CONCURRENT_LOOKUPS
_names = itertools.count()


# ------------------------------------------------------------------ the server


def _reply(query: bytes) -> bytes:
    """The reply to ``query``: one A record (192.0.2.1, TTL 300) for an A query, else none."""
    end = 12
    while query[end]:
        end += query[end] + 1
    end += 5  # the root label, QTYPE, QCLASS
    qtype = struct.unpack_from("!H", query, end - 4)[0]
    answers = 1 if qtype == 1 else 0
    header = query[:2] + struct.pack("!HHHHH", 0x8180, 1, answers, 0, 0)
    record = struct.pack("!HHHIH", 0xC00C, 1, 1, 300, 4) + socket.inet_aton("192.0.2.1")
    return header + query[12:end] + (record if answers else b"")


def serve(port: int) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        sock.bind(("127.0.0.1", port))
        print(sock.getsockname()[1], flush=True)
        while True:
            data, peer = sock.recvfrom(4096)
            sock.sendto(_reply(data), peer)


# ------------------------------------------------------------------ the client


def _resolver(backend_name: str, port: int) -> trionet.Resolver:
    if backend_name == "getaddrinfo":
        return trionet.Resolver(backend=trionet.GetaddrinfoBackend())
    return trionet.Resolver(backend=trionet.DnsPythonBackend(["127.0.0.1"], port=port))


async def _sequential(resolver: trionet.Resolver, count: int, family: int) -> float:
    """Microseconds per lookup, one at a time."""
    start = time.perf_counter()
    for _ in range(count):
        await resolver.resolve(f"n{next(_names)}.bench.test", 80, family=family)
    return (time.perf_counter() - start) / count * 1e6


async def _concurrent(resolver: trionet.Resolver, count: int, family: int) -> float:
    """Lookups per second from CONCURRENCY tasks."""
    remaining = iter(range(count))

    async def worker() -> None:
        for _ in remaining:
            await resolver.resolve(f"n{next(_names)}.bench.test", 80, family=family)

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(CONCURRENCY):
            nursery.start_soon(worker)
    return count / (time.perf_counter() - start)


def client(port: int, backends: list[str], runs: int, count: int) -> None:
    families = {"one family (A)": socket.AF_INET, "both families": 0}
    samples: dict[tuple[str, str, str], list[float]] = {}
    for run in range(runs):
        order = backends[run % len(backends):] + backends[: run % len(backends)]
        for label, family in families.items():
            for backend in order:
                for kind, measure, n in (("sequential", _sequential, count // 4),
                                         ("concurrent", _concurrent, count)):
                    resolver = _resolver(backend, port)
                    value = trio.run(measure, resolver, n, family)
                    samples.setdefault((label, kind, backend), []).append(value)
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    print(f"{runs} runs, medians; {count} lookups per concurrent run, {count // 4} sequential; "
          f"{os.cpu_count()} CPUs, load average {load} at the end")
    print(f"{'':16} {'':11} " + " ".join(f"{b:>16}" for b in backends)
          + ("  dnspython/getaddrinfo" if len(backends) == 2 else ""))
    for label in families:
        for kind, unit in (("sequential", "us/lookup"), ("concurrent", "lookups/s")):
            values = [statistics.median(samples[(label, kind, b)]) for b in backends]
            line = f"{label:16} {kind:11} " + " ".join(f"{v:>6.0f} {unit:>9}" for v in values)
            if len(values) == 2:
                # For latency, lower is better: report the speed-up either way.
                speedup = values[1] / values[0] if kind == "sequential" else values[0] / values[1]
                line += f"  {speedup:.2f}x faster" if speedup >= 1 else f"  {1 / speedup:.2f}x slower"
            print(line)


# ------------------------------------------------------------------ the driver


def _can_redirect_getaddrinfo() -> bool:
    return os.geteuid() == 0 and shutil.which("unshare") is not None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--lookups", type=int, default=2000, help="per concurrent measurement")
    parser.add_argument("--quick", action="store_true", help="1 run of 40 lookups: a smoke test")
    parser.add_argument("--dnspython-only", action="store_true")
    parser.add_argument("--serve", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--client", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--backends", default="dnspython,getaddrinfo", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.quick:
        args.runs, args.lookups = 1, 40
    if args.serve is not None:
        serve(args.serve)
        return
    if args.client is not None:
        client(args.client, args.backends.split(","), args.runs, args.lookups)
        return

    both = not args.dnspython_only and _can_redirect_getaddrinfo()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.resolver_backends",
                               "--serve", "53" if both else "0"], stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        port = int(server.stdout.readline())
        command = [sys.executable, "-m", "benchmarks.resolver_backends", "--client", str(port),
                   "--runs", str(args.runs), "--lookups", str(args.lookups)]
        if not both:
            print("getaddrinfo is not measured (it needs root and unshare to reach the local server)")
            subprocess.run([*command, "--backends", "dnspython"], check=True)
            return
        with tempfile.TemporaryDirectory() as scratch:
            conf = Path(scratch) / "resolv.conf"
            conf.write_text("nameserver 127.0.0.1\noptions attempts:1 timeout:2\n")
            quoted = " ".join(f"'{part}'" for part in command)
            subprocess.run(
                ["unshare", "-m", "sh", "-c", f"mount --bind '{conf}' /etc/resolv.conf && exec {quoted}"],
                check=True,
            )
    finally:
        server.kill()
        server.wait()


if __name__ == "__main__":
    main()
