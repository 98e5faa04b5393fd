"""The chat, Happy Eyeballs and file-transfer examples and the tutorial's programs.

Each runs as a user runs it: as a subprocess, bounded in time, its output
checked. Servers are started with ``--port 0`` (or port 0) and tests read the
``listening on port N`` line instead of sleeping.
"""

from __future__ import annotations

import ast
import os
import signal
import socket
import sys
from pathlib import Path

import pytest
import trio

from tests.processes import CLI, EXAMPLES, Lines, run, running
from trionet import LengthPrefixed

TIMEOUT = 30
MINE = [
    "chat_server.py",
    "http_server.py",
    "resp_server.py",
    "tutorial/startable.py",
    "happy_eyeballs.py",
    "file_transfer.py",
    "asyncio_peer.py",
    "tutorial/echo_server.py",
    "tutorial/many_clients.py",
    "tutorial/timeouts.py",
    "tutorial/lossy_requests.py",
]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), *args]


@pytest.mark.parametrize("name", MINE)
def test_each_example_says_what_it_teaches_and_how_to_run_it(name: str) -> None:
    docstring = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
    assert docstring is not None
    assert "What it teaches" in docstring
    assert "Run it" in docstring
    assert f"python examples/{name}" in docstring


# ------------------------------------------------------------------------ chat


class ChatClient:
    """A plain-socket chat client that reads the server's lines one at a time."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.lines = Lines(stream)

    async def say(self, line: bytes) -> None:
        await self.stream.send_all(line)

    async def hear(self) -> str:
        return await self.lines.next()


async def join(port: int, name: bytes, *, rcvbuf: int | None = None) -> ChatClient:
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if rcvbuf is not None:  # a small receive buffer: a slow reader fills up fast
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    await sock.connect(("127.0.0.1", port))
    client = ChatClient(trio.SocketStream(sock))
    assert await client.hear() == "welcome! what is your name?"
    await client.say(name + b"\r\n")  # as telnet sends it
    assert (await client.hear()).startswith(f"hello {name.decode()}! here now: ")
    return client


async def test_chat_server_broadcasts_lines_to_the_others_and_announces_arrivals() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(example("chat_server.py", "--port", "0")) as server:
            port = int((await server.stdout.until("listening on port")).split()[-1])
            alice = await join(port, b"alice")
            async with alice.stream:
                bob = await join(port, b"bob")
                async with bob.stream:
                    assert await alice.hear() == "* bob joined"
                    await bob.say(b"hi alice\n")
                    assert await alice.hear() == "bob: hi alice"
                    await alice.say(b"hi bob, over telnet\r\n")
                    assert await bob.hear() == "alice: hi bob, over telnet"
                    await bob.say(b"")
                assert await alice.hear() == "* bob left"
            code, lines = await server.stop(signal.SIGINT)
    assert code == 0
    assert "alice joined from 127.0.0.1:" in "\n".join(lines)
    assert "bob left" in lines
    assert lines[-1] == "server stopped"


async def test_chat_server_disconnects_a_client_that_reads_slower_than_the_room_talks() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(example("chat_server.py", "--port", "0", "--backlog", "4")) as server:
            port = int((await server.stdout.until("listening on port")).split()[-1])
            slow = await join(port, b"slow", rcvbuf=4096)  # and never reads again
            talker = await join(port, b"talker")
            line = b"x" * 4000 + b"\n"
            async with slow.stream, talker.stream, trio.open_nursery() as nursery:

                async def talk() -> None:
                    for _ in range(5_000):  # 20 MB at most; the buffers fill long before
                        await talker.say(line)

                nursery.start_soon(talk)
                await server.stdout.until("slow is too slow; disconnecting them")
                assert await server.stdout.next() == "slow left"
                nursery.cancel_scope.cancel()
            code, _ = await server.stop(signal.SIGINT)
    assert code == 0


# -------------------------------------------------------------- Happy Eyeballs


async def test_happy_eyeballs_ipv6_black_hole_loses_to_ipv4_started_at_250_ms() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run(example("happy_eyeballs.py"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "connected to 10.0.0.1:443 after 252.0 ms (simulated)" in out
    assert "      0.0 ms  tcp.connect.attempt    address=[fd00::1]:443" in out
    assert "    250.0 ms  tcp.connect.attempt    address=10.0.0.1:443" in out
    assert "    252.0 ms  tcp.connect.cancelled  address=[fd00::1]:443" in out
    picture = out.split("on one time axis:\n\n")[1].splitlines()
    assert picture[-2].split()[0] == "[fd00::1]:443"
    assert picture[-2].endswith("= cancelled at 252.0 ms")
    assert picture[-1].endswith("= won at 252.0 ms")
    # the IPv4 bar starts where the IPv6 bar has almost reached the end
    assert picture[-1].index("=") > 0.9 * picture[-2].rindex("=")
    assert out == (await run(example("happy_eyeballs.py"))).stdout.decode()  # deterministic


async def test_happy_eyeballs_refused_ipv6_starts_the_ipv4_attempt_at_once() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run(example("happy_eyeballs.py", "--refuse"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "    100.0 ms  tcp.connect.failed     address=[fd00::1]:443" in out
    assert "    100.0 ms  tcp.connect.attempt    address=10.0.0.1:443" in out
    assert "won at 200.0 ms" in out


async def test_happy_eyeballs_slow_ipv6_answer_waits_at_most_the_50_ms_resolution_delay() -> None:
    with trio.fail_after(TIMEOUT):
        short = await run(example("happy_eyeballs.py", "--slow-ipv6-dns", "0.03"))
        long = await run(example("happy_eyeballs.py", "--slow-ipv6-dns", "0.2"))
    assert "     30.0 ms  tcp.connect.attempt    address=[fd00::1]:443" in short.stdout.decode()
    out = long.stdout.decode()
    assert "     50.0 ms  tcp.connect.attempt    address=10.0.0.1:443" in out
    assert "fd00::1" not in out.split("What connect_tcp did")[1]


# -------------------------------------------------------------- file transfer


async def test_file_transfer_demo_sends_a_file_with_progress_and_verifies_it() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run(example("file_transfer.py", "demo", "--size", "3"))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0] == "demo: sending a 3 MiB file over 127.0.0.1"
    for percent in (25, 50, 75, 100):
        assert f"sent {percent}%" in lines
        assert f"received {percent}%" in lines
    assert any(line.startswith("sent original.bin: 3.0 MiB in ") and
               line.endswith("; the receiver's SHA-256 matches") for line in lines)
    assert lines[-1] == "the copy is identical"


async def test_file_transfer_between_two_processes(tmp_path: Path) -> None:
    original = tmp_path / "photo.jpg"
    original.write_bytes(os.urandom(300_000))
    inbox = tmp_path / "inbox"
    with trio.fail_after(TIMEOUT):
        async with running(example("file_transfer.py", "receive", "--host", "127.0.0.1",
                                   "--port", "0", "--into", str(inbox), "--once")) as receiver:
            listening = await receiver.stdout.until("listening on port")
            port = listening.split()[3].rstrip(";")
            sent = await run(example("file_transfer.py", "send", str(original), "--port", port))
            assert sent.returncode == 0, sent.stderr
            lines = await receiver.stdout.rest()
            assert await receiver.process.wait() == 0
    assert (inbox / "photo.jpg").read_bytes() == original.read_bytes()
    assert not (inbox / "photo.jpg.part").exists()
    assert lines[-1].startswith("received photo.jpg: 0.3 MiB in ")


async def test_file_transfer_receiver_deletes_the_partial_copy_when_the_sender_vanishes(
    tmp_path: Path,
) -> None:
    inbox = tmp_path / "inbox"
    codec = LengthPrefixed()
    with trio.fail_after(TIMEOUT):
        async with running(example("file_transfer.py", "receive", "--host", "127.0.0.1",
                                   "--port", "0", "--into", str(inbox))) as receiver:
            port = int((await receiver.stdout.until("listening on port")).split()[3].rstrip(";"))
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:  # a plain socket sender that gives up half-way
                await stream.send_all(codec.encode(b'{"name": "big.iso", "size": 1000000}'))
                await stream.send_all(codec.encode(bytes(65536)))
                await receiver.stdout.until("receiving big.iso")
            await receiver.stdout.until("transfer of big.iso failed; partial copy deleted")
            code, _ = await receiver.stop(signal.SIGINT)
    assert code == 130
    assert list(inbox.iterdir()) == []


# ------------------------------------------------------------------ interop


@pytest.mark.parametrize(("codec", "flag"), [("length", []), ("lines", ["--lines"])])
async def test_an_asyncio_peer_talks_to_a_trionet_server_by_wire_format(codec: str, flag: list[str]) -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--host", "127.0.0.1", "--port", "0", "--codec", codec,
                            "--exit-after", "1"]) as server:
            port = (await server.stdout.until("listening on")).split()[2].rsplit(":", 1)[1]
            result = await run(example("asyncio_peer.py", "--port", port, *flag, "hello", "wire format"))
            assert await server.process.wait() == 0
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().splitlines() == [
        "asyncio sent 'hello', trionet echoed 'hello'",
        "asyncio sent 'wire format', trionet echoed 'wire format'",
    ]


# -------------------------------------------------------------------- tutorial


async def test_tutorial_echo_server_echoes_and_many_clients_show_what_a_failure_does() -> None:
    with trio.fail_after(TIMEOUT):
        async with running(example("tutorial/echo_server.py", "0")) as server:
            port = (await server.stdout.until("listening on port")).split()[-1]
            echoed = await run([*CLI, "connect", "127.0.0.1", port], stdin=b"hello\nworld\n")
            assert echoed.stdout == b"hello\nworld\n"

            ok = await run(example("tutorial/many_clients.py", "--port", port))
            assert ok.returncode == 0, ok.stderr
            lines = ok.stdout.decode().splitlines()
            assert sorted(lines[:-1]) == sorted(f"client {n}: done" for n in range(10))
            assert lines[-1] == "the nursery exited normally: every client finished"

            failing = await run(example("tutorial/many_clients.py", "--port", port, "--fail", "3"))
            assert failing.returncode == 1, failing.stderr
            lines = failing.stdout.decode().splitlines()
            assert lines[-2:] == [
                "the nursery raised ExceptionGroup with 1 error(s):",
                "  RuntimeError: client 3 gives up",
            ]
            others = [f"client {n}" for n in range(10) if n != 3]
            assert all(f"{c}: done" in lines or f"{c}: cancelled" in lines for c in others)
            assert any(f"{c}: cancelled" in lines for c in others)

            isolated = await run(example("tutorial/many_clients.py", "--port", port,
                                         "--fail", "3", "--isolate"))
            assert isolated.returncode == 1, isolated.stderr
            lines = isolated.stdout.decode().splitlines()
            assert "client 3: failed with RuntimeError: client 3 gives up; the others go on" in lines
            assert sum(line.endswith(": done") for line in lines) == 9
            assert lines[-1] == "the nursery exited normally: 9 of 10 clients finished"

            code, output = await server.stop(signal.SIGINT)
    assert code == 0
    assert output[-1] == "server stopped; every connection was closed first"
    assert sum(line.endswith(" connected") for line in output) == 1 + 10 + 10 + 10
    # Clients cancelled in the failing run may close with echoes unread, which
    # resets their connections: those handlers end with an error, not "hung up".
    assert 1 + 10 + 10 <= sum(line.endswith(" hung up") for line in output) <= 1 + 10 + 10 + 10

    # With the server gone every connection is refused: exit 1, and equal
    # errors are one line with a count, not ten reprs on one line. (Loopback
    # refuses at once, so all ten fail before any is cancelled; a client
    # still connecting when the first failed would print "cancelled".)
    refused = await run(example("tutorial/many_clients.py", "--port", port))
    assert refused.returncode == 1, refused.stderr
    *cancelled, head, summary = refused.stdout.decode().splitlines()
    assert all(line.endswith(": cancelled") for line in cancelled)
    assert head == f"the nursery raised ExceptionGroup with {10 - len(cancelled)} error(s):"
    count = f"{10 - len(cancelled)} x " if len(cancelled) < 9 else ""
    assert summary.startswith(f"  {count}ConnectError: the connection attempt to '127.0.0.1' port ")
    assert summary.endswith(f" failed: 127.0.0.1:{port}: Connection refused (ECONNREFUSED)")
    isolated = await run(example("tutorial/many_clients.py", "--port", port, "--isolate"))
    assert isolated.returncode == 1, isolated.stderr
    lines = isolated.stdout.decode().splitlines()
    assert sum("failed with ConnectError: " in line for line in lines) == 10
    assert lines[-1] == "the nursery exited normally: 0 of 10 clients finished"


async def test_tutorial_timeouts_show_what_a_cancel_does_to_naive_framing() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run(example("tutorial/timeouts.py"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "naive reader   got b'lo'" in out
    assert "naive reader   got b'ld'" in out
    assert "MessageChannel got b'hello'" in out
    assert "MessageChannel got b'world'" in out
    assert "server: the framing broke: IncompleteFrame(" in out
    sending = out.split("with MessageChannel.send():")[1]
    assert "the timeout took effect at the next checkpoint: True" in sending
    assert "server received a message of 6291456 bytes" in sending
    assert "server received a message of 4 bytes" in sending


async def test_tutorial_lossy_requests_are_retransmitted_until_answered() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run(example("tutorial/lossy_requests.py"))
        hopeless = await run(example("tutorial/lossy_requests.py", "--loss", "1"))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert "    100 ms  no answer: sent again (attempt 2), waits 200 ms" in out
    for number in range(2, 6):
        assert f"the square of {number} is {number * number}" in out
    assert out.rstrip().endswith("the network carried 10 datagrams and lost 2")
    assert hopeless.returncode == 0, hopeless.stderr
    lines = hopeless.stdout.decode().splitlines()
    assert lines.count("           no square this time") == 4
    assert "   1500 ms  no answer: sent again (attempt 5), waits 1600 ms" in lines
    assert "   3100 ms  gave up after 5 attempts" in lines
