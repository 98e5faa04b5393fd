"""A server out of file descriptors (EMFILE) survives, backs off, logs, and serves again.

The server runs in a subprocess whose RLIMIT_NOFILE is lowered, so that this
test process keeps its own descriptors.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
import trio

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="RLIMIT_NOFILE is POSIX")

#: The server process's soft descriptor limit: room for the interpreter, trio's
#: own descriptors, the listener and a couple of dozen connections.
FD_LIMIT = 40
FLOOD = 100

SERVER = textwrap.dedent(
    f"""
    import logging, resource, sys
    import trio
    from trionet import Lines, open_tcp_server

    logging.basicConfig(stream=sys.stderr, level=logging.WARNING,
                        format="%(name)s %(levelname)s %(message)s")
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, ({FD_LIMIT}, hard))

    async def echo(conn):
        async for line in conn.channel:
            await conn.channel.send(line)

    async def main():
        with trio.move_on_after(60):  # bounded, whatever the test does
            async with open_tcp_server(echo, 0, host="127.0.0.1", codec=Lines(),
                                       shutdown_grace=0) as server:
                print(server.port, flush=True)
                await trio.to_thread.run_sync(sys.stdin.read)  # until stdin closes
                stats = server.statistics()
                print("accepted", stats.connections_accepted,
                      "accept_errors", stats.accept_errors, flush=True)

    trio.run(main)
    """
)


async def read_line(stream: trio.abc.ReceiveStream, buffer: bytearray) -> bytes:
    while b"\n" not in buffer:
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"the server process ended; it said: {bytes(buffer)!r}")
        buffer += chunk
    line, _, rest = bytes(buffer).partition(b"\n")
    buffer[:] = rest
    return line


async def test_emfile_flood_is_survived_with_backoff_and_a_log_line_then_serving_resumes() -> None:
    process = await trio.lowlevel.open_process(
        [sys.executable, "-c", SERVER],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    assert process.stdin is not None
    assert process.stdout is not None
    assert process.stderr is not None
    out, err = bytearray(), bytearray()
    try:
        with trio.fail_after(30):
            port = int(await read_line(process.stdout, out))

            flood = []
            for _ in range(FLOOD):  # the kernel completes these into the backlog
                flood.append(await trio.open_tcp_stream("127.0.0.1", port))

            # The server ran out of descriptors, said so, and is still running.
            while True:
                line = await read_line(process.stderr, err)
                if b"EMFILE" in line:
                    break
            assert line.startswith(b"trionet.server WARNING accept() failed with EMFILE")
            assert process.returncode is None

            for stream in flood:
                await stream.aclose()

            async with await trio.open_tcp_stream("127.0.0.1", port) as client:
                await client.send_all(b"alive?\n")
                reply = b""
                while not reply.endswith(b"\n"):
                    chunk = await client.receive_some()
                    assert chunk, "the server closed the connection"
                    reply += chunk
            assert reply == b"alive?\n"

            await process.stdin.aclose()
            summary = (await read_line(process.stdout, out)).split()
            assert await process.wait() == 0
        accepted, accept_errors = int(summary[1]), int(summary[3])
        assert accept_errors >= 1
        assert accepted == FLOOD + 1  # every flooding connection was accepted in the end
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        await process.stdout.aclose()
        await process.stderr.aclose()
