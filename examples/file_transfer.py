"""A framed file transfer with a progress display: a sender, a receiver, a checksum.

What it teaches:

* **Framing turns a byte stream into messages.** Sender and receiver speak
  ``LengthPrefixed`` frames over TCP: first a header (the file's name and size,
  as JSON), then the file in chunks of 64 KiB, each chunk one frame; the
  receiver answers with the SHA-256 of what it wrote, and the sender checks it.
* **Limits bound memory.** The receiver's codec accepts frames of at most one
  chunk (plus a little): a peer announcing a 4 GiB frame gets ``FrameTooLarge``
  before a byte of it is buffered.
* **Backpressure is free.** ``await channel.send(chunk)`` waits while the
  network and the receiver are behind, so the sender never holds more than a
  chunk in memory, however large the file.
* **Cancellation is clean.** Press Ctrl-C during a transfer: the sender stops
  between frames (a cancelled ``send`` never leaves half a frame on the wire),
  the receiver sees the connection end mid-file and deletes its partial copy.
* File I/O runs in threads (``trio.open_file``), the network in trio's loop.

Run it::

    python examples/file_transfer.py demo                   # both ends, a temporary 32 MiB file
    python examples/file_transfer.py demo --size 200        # ... of 200 MiB

    python examples/file_transfer.py receive --port 9000 --into /tmp/inbox
    python examples/file_transfer.py send some.file --host 127.0.0.1 --port 9000

``demo`` runs the receiver and the sender as two tasks of one nursery on
loopback (127.0.0.1), checks that the copy is identical, and exits.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import signal
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import trio

import trionet

CHUNK = 64 * 1024
# The largest frame the receiver accepts: one chunk, or a header with a long name.
MAX_FRAME = CHUNK + 1024
MiB = 1024 * 1024


class Progress:
    """Prints how far a transfer is: one updating line on a terminal, else every 25%."""

    def __init__(self, verb: str, total: int) -> None:
        self.verb = verb
        self.total = total
        self.done = 0
        self.start = time.monotonic()
        self.interactive = sys.stdout.isatty()
        self.next_quarter = 1
        self.last_draw = 0.0

    def advance(self, count: int) -> None:
        self.done += count
        now = time.monotonic()
        if self.interactive and (now - self.last_draw > 0.1 or self.done == self.total):
            self.last_draw = now
            print("\r" + self.line(), end="", flush=True)
        while not self.interactive and self.total and self.done * 4 >= self.total * self.next_quarter:
            print(f"{self.verb} {25 * self.next_quarter}%", flush=True)
            self.next_quarter += 1

    def line(self) -> str:
        percent = 100 * self.done // self.total if self.total else 100
        bar = "#" * (percent // 4)
        return f"{self.verb} [{bar:<25}] {percent:3d}%  {self.done / MiB:.1f} of {self.total / MiB:.1f} MiB"

    def finish(self) -> str:
        if self.interactive:
            print(flush=True)
        seconds = max(time.monotonic() - self.start, 1e-6)
        return f"{self.total / MiB:.1f} MiB in {seconds:.2f} s ({self.total / MiB / seconds:.1f} MiB/s)"


# ------------------------------------------------------------------ receiving


async def receive_file(conn: trionet.TCPConnection, into: Path, done: trio.Event | None) -> None:
    """Handle one sender: its header, its chunks, then our checksum in reply."""
    channel = conn.channel
    header = json.loads(await channel.receive())
    name = Path(header["name"]).name  # never a path from the peer: only a file name
    size = int(header["size"])
    print(f"receiving {name} ({size / MiB:.1f} MiB) from {conn.peer}", flush=True)
    partial_copy = into / (name + ".part")
    digest = hashlib.sha256()
    progress = Progress("received", size)
    try:
        async with await trio.open_file(partial_copy, "wb") as file:
            while progress.done < size:
                chunk = await channel.receive()
                digest.update(chunk)
                await file.write(chunk)
                progress.advance(len(chunk))
    except BaseException:
        # The sender vanished, sent garbage, or we are cancelled: drop the copy.
        with trio.CancelScope(shield=True):
            await trio.Path(partial_copy).unlink(missing_ok=True)
        print(f"transfer of {name} failed; partial copy deleted", flush=True)
        raise
    await trio.Path(partial_copy).rename(into / name)
    await channel.send(digest.hexdigest().encode())
    print(f"received {name}: {progress.finish()}", flush=True)
    if done is not None:
        done.set()


async def receive(args: argparse.Namespace) -> None:
    into = Path(args.into)
    await trio.Path(into).mkdir(parents=True, exist_ok=True)
    done = trio.Event() if args.once else None
    codec = trionet.LengthPrefixed(max_size=MAX_FRAME)
    async with trionet.open_tcp_server(
        partial(receive_file, into=into, done=done), args.port, host=args.host, codec=codec
    ) as server:
        print(f"listening on port {server.port}; files go to {into}", flush=True)
        if done is None:
            await trio.sleep_forever()
        await done.wait()


# -------------------------------------------------------------------- sending


async def send_file(path: Path, host: str, port: int) -> None:
    size = (await trio.Path(path).stat()).st_size
    digest = hashlib.sha256()
    progress = Progress("sent", size)
    codec = trionet.LengthPrefixed(max_size=MAX_FRAME)
    async with await trionet.connect_tcp(host, port, codec=codec) as conn:
        channel = conn.channel
        await channel.send(json.dumps({"name": path.name, "size": size}).encode())
        async with await trio.open_file(path, "rb") as file:
            while chunk := await file.read(CHUNK):
                digest.update(chunk)
                await channel.send(chunk)  # waits while the receiver is behind
                progress.advance(len(chunk))
        reply = (await channel.receive()).decode()
    summary = progress.finish()
    if reply != digest.hexdigest():
        raise SystemExit(f"checksum mismatch: sent {digest.hexdigest()}, receiver has {reply}")
    print(f"sent {path.name}: {summary}; the receiver's SHA-256 matches", flush=True)


async def send(args: argparse.Namespace) -> None:
    await send_file(args.file, args.host, args.port)


async def demo(args: argparse.Namespace) -> None:
    size = int(args.size * MiB)
    with tempfile.TemporaryDirectory(prefix="trionet-transfer-") as workdir:
        original = Path(workdir) / "original.bin"
        original.write_bytes(random.Random(7).randbytes(size))
        inbox = Path(workdir) / "inbox"
        inbox.mkdir()
        print(f"demo: sending a {args.size:g} MiB file over 127.0.0.1", flush=True)
        codec = trionet.LengthPrefixed(max_size=MAX_FRAME)
        async with trio.open_nursery() as nursery:
            server: trionet.TCPServer = await nursery.start(partial(
                trionet.serve_tcp, partial(receive_file, into=inbox, done=None), 0,
                host="127.0.0.1", codec=codec,
            ))
            await send_file(original, "127.0.0.1", server.port)
            nursery.cancel_scope.cancel()  # the receiver has replied: stop serving
        same = (inbox / original.name).read_bytes() == original.read_bytes()
        print("the copy is identical" if same else "the copy DIFFERS", flush=True)
        if not same:
            raise SystemExit(1)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Send files over framed TCP with trionet.")
    commands = parser.add_subparsers(dest="command", required=True)
    run_demo = commands.add_parser("demo", help="send a temporary file to ourselves on loopback")
    run_demo.add_argument("--size", type=float, default=32, help="MiB to send (default 32)")
    recv = commands.add_parser("receive", help="receive files until Ctrl-C")
    recv.add_argument("--host", default=None, help="address to listen on (default: all)")
    recv.add_argument("--port", type=int, default=9000, help="port; 0 picks a free one")
    recv.add_argument("--into", default=".", help="directory for received files")
    recv.add_argument("--once", action="store_true", help="exit after one file")
    send = commands.add_parser("send", help="send one file")
    send.add_argument("file", type=Path)
    send.add_argument("--host", default="127.0.0.1")
    send.add_argument("--port", type=int, default=9000)
    return parser.parse_args(argv)


async def main(args: argparse.Namespace) -> int:
    commands = {"demo": demo, "receive": receive, "send": send}
    # Ctrl-C (SIGINT) arrives on this channel, and cancels the command.
    with trio.open_signal_receiver(signal.SIGINT) as ctrl_c:
        async with trio.open_nursery() as nursery:

            async def run_command() -> None:
                await commands[args.command](args)
                nursery.cancel_scope.cancel()  # done: stop waiting for Ctrl-C

            nursery.start_soon(run_command)
            async for _ in ctrl_c:
                print("\ninterrupted", flush=True)
                nursery.cancel_scope.cancel()
                return 130
    return 0


if __name__ == "__main__":
    sys.exit(trio.run(main, parse_args(sys.argv[1:])))
