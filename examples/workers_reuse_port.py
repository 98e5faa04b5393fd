"""One port, several processes: SO_REUSEPORT spreads connections over worker processes.

What it teaches:

* A trio program runs on one core. To use N cores, run N processes, each with
  its own trio loop and its own server, all listening on the same port with
  ``serve_tcp(..., reuse_port=True)``: the kernel (Linux, the BSDs) hands each
  new connection to one of them.
* The parent is structured like any trio program: one task per worker process in
  a nursery, so a worker that dies is noticed, and leaving the nursery means
  every worker has exited.
* Each worker shuts down gracefully on SIGTERM, as the parent sends when done.

Run it::

    python examples/workers_reuse_port.py --workers 4 --port 8000
    # then, in another terminal, several times:
    nc localhost 8000          # prints "served by worker <pid>"

With ``--demo N`` (and ``--port 0`` for a free port) the parent also runs N
clients, prints how many connections each worker served, stops the workers and
exits: a bounded run, which the tests use.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import socket
import subprocess
import sys

import trio

import trionet

# ---------------------------------------------------------------- the worker


async def worker(args: argparse.Namespace) -> None:
    pid = os.getpid()
    served = 0

    async def greet(conn: trionet.TCPConnection) -> None:
        nonlocal served
        served += 1
        await conn.stream.send_all(f"served by worker {pid}\n".encode())

    # The signal handler is installed first, so a SIGTERM that arrives as soon as
    # "ready" is printed already starts a graceful shutdown.
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trionet.open_tcp_server(
            greet, args.port, host=args.host, reuse_port=True, shutdown_grace=1
        ):
            print(f"worker {pid} ready", flush=True)
            with trio.move_on_after(args.exit_after):
                async for _ in signals:
                    break
    print(f"worker {pid} stopped after serving {served} connection(s)", flush=True)


# ---------------------------------------------------------------- the parent


async def run_worker(
    args: argparse.Namespace, port: int, ready: trio.MemorySendChannel[int], stop: trio.Event
) -> None:
    command = [sys.executable, __file__, "--worker", "--host", args.host, "--port", str(port),
               "--exit-after", str(args.exit_after)]
    process = await trio.lowlevel.open_process(command, stdout=subprocess.PIPE)
    assert process.stdout is not None
    try:
        async with process.stdout:
            buffer = b""
            announced = False
            async with trio.open_nursery() as nursery:

                async def stop_when_asked() -> None:
                    await stop.wait()
                    process.send_signal(signal.SIGTERM)

                nursery.start_soon(stop_when_asked)
                while chunk := await process.stdout.receive_some():
                    buffer += chunk
                    *lines, buffer = buffer.split(b"\n")
                    for line in lines:
                        print(line.decode(), flush=True)
                        if line.endswith(b"ready") and not announced:
                            announced = True
                            await ready.send(process.pid)
                nursery.cancel_scope.cancel()
        status = await process.wait()
        if status != 0:
            raise RuntimeError(f"worker {process.pid} exited with status {status}")
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


async def demo_clients(host: str, port: int, count: int) -> collections.Counter[str]:
    served_by: collections.Counter[str] = collections.Counter()

    async def one_client() -> None:
        async with await trio.open_tcp_stream(host, port) as stream:
            reply = b""
            while chunk := await stream.receive_some():
                reply += chunk
        served_by[reply.decode().strip()] += 1

    async with trio.open_nursery() as nursery:
        for _ in range(count):
            nursery.start_soon(one_client)
    return served_by


def reserve_port(host: str, port: int) -> socket.socket:
    """Bind (without listening) a SO_REUSEPORT socket, to learn a free port for the workers.

    A socket that does not listen receives no connections; it only keeps the
    port from being given to another program until the workers have bound it.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    placeholder = socket.socket(family, socket.SOCK_STREAM)
    placeholder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    placeholder.bind((host, port))
    return placeholder


async def parent(args: argparse.Namespace) -> None:
    placeholder = reserve_port(args.host, args.port)
    port = placeholder.getsockname()[1]
    print(f"starting {args.workers} workers on {args.host} port {port}", flush=True)
    stop = trio.Event()
    send_ready, receive_ready = trio.open_memory_channel[int](args.workers)
    with trio.fail_after(args.exit_after):
        async with trio.open_nursery() as nursery:
            for _ in range(args.workers):
                nursery.start_soon(run_worker, args, port, send_ready, stop)
            for _ in range(args.workers):
                await receive_ready.receive()
            placeholder.close()
            print(f"listening on port {port}", flush=True)
            if args.demo:
                served_by = await demo_clients(args.host, port, args.demo)
                for who, count in sorted(served_by.items()):
                    print(f"{who}: {count} connection(s)", flush=True)
                print(f"{sum(served_by.values())} clients served by {len(served_by)} workers",
                      flush=True)
                stop.set()
            else:
                with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                    async for _ in signals:
                        break
                stop.set()
    print("all workers stopped", flush=True)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="N worker processes serving one port.")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000, help="port; 0 picks a free one")
    parser.add_argument("--demo", type=int, default=0, metavar="N",
                        help="run N clients, print who served them, and exit")
    parser.add_argument("--exit-after", type=float, default=3600.0, metavar="SECONDS",
                        help="upper bound on the run time")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


if __name__ == "__main__":
    arguments = parse_args(sys.argv[1:])
    trio.run(worker if arguments.worker else parent, arguments)
