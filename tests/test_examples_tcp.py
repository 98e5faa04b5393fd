"""The TCP examples run as programs do: as subprocesses, bounded in time, output checked."""

from __future__ import annotations

import ast
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import trio

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
TCP_EXAMPLES = ["echo_server.py", "echo_client.py", "workers_reuse_port.py"]

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and SO_REUSEPORT")


def example(name: str, *args: str) -> list[str]:
    return [sys.executable, str(EXAMPLES / name), *args]


async def run(name: str, *args: str) -> subprocess.CompletedProcess[bytes]:
    with trio.fail_after(30):
        return await trio.run_process(
            example(name, *args), capture_stdout=True, capture_stderr=True, check=False
        )


class LineReader:
    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.lines: list[str] = []

    async def next_line(self) -> str:
        while b"\n" not in self.buffer:
            chunk = await self.stream.receive_some()
            if not chunk:
                raise AssertionError(f"the program ended; it printed: {self.lines}")
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        self.lines.append(line.decode())
        return self.lines[-1]

    async def rest(self) -> list[str]:
        while chunk := await self.stream.receive_some():
            self.buffer += chunk
        self.lines += self.buffer.decode().splitlines()
        return self.lines


@pytest.mark.parametrize("name", TCP_EXAMPLES)
def test_each_example_says_what_it_teaches_and_how_to_run_it(name: str) -> None:
    docstring = ast.get_docstring(ast.parse((EXAMPLES / name).read_text()))
    assert docstring is not None
    assert "What it teaches" in docstring
    assert "Run it" in docstring
    assert "python examples/" + name in docstring


async def test_echo_server_and_client_talk_and_sigint_shuts_the_server_down_gracefully() -> None:
    server = await trio.lowlevel.open_process(
        example("echo_server.py", "--port", "0", "--events", "--exit-after", "30"),
        stdout=subprocess.PIPE,
    )
    assert server.stdout is not None
    try:
        with trio.fail_after(30):
            output = LineReader(server.stdout)
            while not (line := await output.next_line()).startswith("listening on port"):
                pass
            port = line.split()[-1]

            single = await run("echo_client.py", "--port", port, "hello", "world")
            assert single.returncode == 0, single.stderr
            assert single.stdout.decode().splitlines() == [
                "sent 'hello', got back 'hello'",
                "sent 'world', got back 'world'",
                "1 client(s) done, 2 message(s) echoed",
            ]
            many = await run("echo_client.py", "--port", port, "--host", "::1",
                             "--clients", "5", "--repeat", "20", "a", "b")
            assert many.returncode == 0, many.stderr
            assert many.stdout.decode().strip() == "5 client(s) done, 200 message(s) echoed"

            server.send_signal(signal.SIGINT)
            lines = await output.rest()
            assert await server.wait() == 0
    finally:
        if server.returncode is None:
            server.kill()
            await server.wait()
        await server.stdout.aclose()
    assert "got SIGINT" in lines
    assert lines[-1] == "stopped after 6 connection(s)"
    kinds = [line.split()[2] for line in lines if line.startswith("event")]
    assert kinds[0] == "tcp.listening"
    assert kinds.count("tcp.accept") == 6
    assert kinds[-2:] == ["tcp.shutdown.begin", "tcp.shutdown.done"]


async def test_echo_server_stops_by_itself_after_exit_after() -> None:
    result = await run("echo_server.py", "--port", "0", "--host", "127.0.0.1",
                       "--exit-after", "0.2")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert lines[0].startswith("listening on port ")
    assert lines[-1] == "stopped after 0 connection(s)"


async def test_echo_client_reports_a_server_that_is_not_there_and_exits_1() -> None:
    with socket.socket() as probe:  # bound, not listening: refused, and no one else takes it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        result = await run("echo_client.py", "--port", str(port), "hi")
    assert result.returncode == 1
    assert "client 0:" in result.stderr.decode()
    assert "Connection refused" in result.stderr.decode() or "connect" in result.stderr.decode()


async def test_workers_reuse_port_demo_spreads_clients_over_worker_processes() -> None:
    result = await run("workers_reuse_port.py", "--workers", "2", "--port", "0",
                       "--demo", "40", "--exit-after", "25")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    assert "40 clients served by 2 workers" in lines
    assert lines[-1] == "all workers stopped"
    per_worker = [line for line in lines if line.startswith("served by worker")]
    assert len(per_worker) == 2
    assert sum(int(line.split(": ")[1].split()[0]) for line in per_worker) == 40
    assert len([line for line in lines if line.endswith("ready")]) == 2
