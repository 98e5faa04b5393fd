"""``python -m trionet``. Imports private ``trionet._cli``: the CLI is a private
package, and parts of it are driven in-process (argument parsing, errors, a
spied server, print mode, the UDP echo guard and its rate limits).

Everything else runs each command as a user runs it, as a subprocess. Servers
print ``listening on ADDRESS`` first; tests read that line for the port instead
of sleeping. Every test is bounded by ``trio.fail_after``.
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import struct
import time
from typing import Any

import pytest
import trio
import trio.testing

import trionet
from tests.peer_text import unsafe_chars
from tests.processes import CLI, run, running
from tests.resolver_fakes import installed_fake
from trionet import (
    DEFAULT_FRAME_TIMEOUT,
    DEFAULT_IDLE_TIMEOUT,
    Address,
    LengthPrefixed,
    Lines,
    Netstring,
    Varint,
)
from trionet._cli import commands as _cli_commands
from trionet._cli.commands import _ECHO_BURST, _ECHO_RATE, _EchoGuard
from trionet._cli.main import CommandError, build_parser, main
from trionet.testing import VirtualNetwork

TIMEOUT = 30
CODEC_FRAMES = {
    "lines": b"hello\n",
    "length": LengthPrefixed().encode(b"hello"),
    "varint": Varint().encode(b"hello"),
    "netstring": Netstring().encode(b"hello"),
}


def port_in(line: str) -> int:
    """The port of the first address in ``listening on 127.0.0.1:8000 (...)``."""
    first = line.removeprefix("listening on ").split()[0].rstrip(",")
    return int(first.rsplit(":", 1)[1])


# ------------------------------------------------------------------------ demo


async def test_demo_tours_servers_and_clients_and_exits_0_within_10_seconds() -> None:
    began = time.monotonic()
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "demo"])
    took = time.monotonic() - began
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert took < 10
    out = result.stdout.decode()
    assert "listening on 127.0.0.1:" in out
    assert "alice    -> b'hello'   <- b'HELLO'" in out
    assert "bob      -> b'every task has a parent'   <- b'EVERY TASK HAS A PARENT'" in out
    # The slow client's half line survived the server's timed-out receive.
    assert "(9 bytes kept); waiting on" in out
    assert "<- b'HALF A LINE, THEN THE REST'" in out
    # One client over the limit ends its own connection, not the server.
    assert "a handler failed (FrameTooLarge(" in out
    assert "mallory  the server hung up" in out
    # Graceful shutdown: carol's handler waits between her lines with nothing
    # buffered, so it is idle and its channel ends at once, long before the grace.
    shutdown = out.index("shutdown begin grace=2 active=1")
    assert shutdown < out.index("was idle at shutdown: its channel ended") < out.index("shutdown done")
    assert "carol    the server ended my idle connection at shutdown (EndOfChannel)" in out
    assert "no task is left running and every socket is closed" in out
    # Happy Eyeballs: IPv6 black-holed, IPv4 started 250 ms later wins.
    assert "tcp.connect.attempt    address=[fd00::1]:80" in out
    assert "tcp.connect.won        address=10.0.0.1:80" in out
    assert "tcp.connect.cancelled  address=[fd00::1]:80" in out
    assert out.rstrip().endswith("none is running now.")


# ---------------------------------------------------------- arguments and help


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
        (["serve", "--port", "http"], "argument --port: invalid port 'http' (0-65535)"),
        (["serve", "--port", "70000"], "argument --port: invalid port '70000' (0-65535)"),
        (["serve", "--codec", "json"], "argument --codec: invalid choice: 'json'"),
        (["serve", "--exit-after", "0"], "argument --exit-after: expected a whole number >= 1"),
        (["connect", "127.0.0.1"], "the following arguments are required: port"),
        (["connect", "127.0.0.1", "7", "--timeout", "-1"], "argument --timeout: expected seconds >= 0"),
        (["resolve"], "the following arguments are required: host"),
        (["resolve", "localhost", "--family", "5"], "argument --family: invalid choice: '5'"),
        # Malformed hosts are argument errors too, found before any lookup.
        (["resolve", ""], "argument host: host must be a non-empty str, not ''"),
        (["resolve", "a" * 64 + ".example"], "is longer than 63 characters"),
        (["resolve", "[example.test]"], "brackets are for an IPv6 address alone"),
        (["connect", "a" * 300, "80"], "argument host: host name 'aaaa"),
    ],
)
def test_bad_arguments_are_one_line_on_stderr_and_exit_code_2(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1, captured.err
    assert lines[0].startswith("python -m trionet: error: ")
    assert message in lines[0]
    assert lines[0].endswith("--help')")


async def test_a_max_size_the_codec_cannot_express_is_a_usage_error() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "serve", "--codec", "length", "--max-size", str(2**40)])
    assert result.returncode == 2
    assert result.stderr.decode().count("\n") == 1
    assert result.stderr.startswith(b"python -m trionet: error: argument --max-size: ")


@pytest.mark.parametrize("command", ["demo", "serve", "connect", "resolve", "bench"])
def test_every_command_explains_itself_in_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: python -m trionet {command}")
    assert len(text.splitlines()) > 3


def test_top_level_help_lists_the_commands_and_the_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for command in ("demo", "serve", "connect", "resolve", "bench"):
        assert f"    {command}" in text
    assert "Exit codes: 0 success, 1 failure" in " ".join(text.split())


# ----------------------------------------------------------- serve and connect


@pytest.mark.parametrize("codec", ["lines", "length", "varint", "netstring"])
async def test_connect_and_serve_echo_messages_with_each_codec(codec: str) -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--host", "127.0.0.1", "--port", "0",
                            "--codec", codec]) as server:
            port = port_in(await server.stdout.until("listening on 127.0.0.1:"))
            result = await run([*CLI, "connect", "127.0.0.1", str(port), "--codec", codec],
                               stdin=b"hello\nstructured concurrency\n")
            assert result.returncode == 0, result.stderr
            assert result.stdout == b"hello\nstructured concurrency\n"
            assert result.stderr == b""
            code, lines = await server.stop()
    assert code == 0
    assert lines[0] == f"listening on 127.0.0.1:{port} (tcp, codec {codec}, echo)"
    assert lines[1].endswith(" connected")
    assert lines[2].endswith(" disconnected")
    assert lines[-1] == "stopped after 1 connection(s)"


@pytest.mark.parametrize("codec", ["lines", "length", "varint", "netstring"])
async def test_serve_speaks_each_codec_to_a_plain_socket_client(codec: str) -> None:
    frame = CODEC_FRAMES[codec]
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--port", "0", "--codec", codec,
                            "--exit-after", "1"]) as server:
            port = port_in(await server.stdout.until("listening on"))
            stream = await trio.open_tcp_stream("::1", port)  # plain trio, no trionet
            async with stream:
                await stream.send_all(frame[:3])  # any chunking is one message
                await stream.send_all(frame[3:] + frame)
                received = b""
                while len(received) < 2 * len(frame):
                    received += await stream.receive_some()
            assert received == frame + frame
            lines = await server.stdout.rest()
            assert await server.process.wait() == 0
    assert lines[-1] == "stopped after 1 connection(s)"


async def test_serve_listens_on_both_families_by_default_and_print_mode_prints() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "print", "--port", "0", "--exit-after", "2"]) as server:
            listening = await server.stdout.until("listening on")
            port = port_in(listening)
            assert f"[::]:{port}" in listening
            assert f"0.0.0.0:{port}" in listening
            for host in ("127.0.0.1", "::1"):
                result = await run([*CLI, "connect", host, str(port)], stdin=f"from {host}\n".encode())
                assert result.returncode == 0, result.stderr
                assert result.stdout == b""  # print mode sends nothing back
            lines = await server.stdout.rest()
            assert await server.process.wait() == 0
    assert any(line.endswith(": from 127.0.0.1") and line.startswith("127.0.0.1:") for line in lines)
    assert any(line.endswith(": from ::1") and line.startswith("[::1]:") for line in lines)


async def test_connect_talks_to_a_plain_socket_server() -> None:
    async def shout(stream: trio.SocketStream) -> None:
        data = b""
        while chunk := await stream.receive_some():
            data += chunk
        await stream.send_all(data.upper())  # after the client's end of input

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, shout, 0)
            port = listeners[0].socket.getsockname()[1]
            result = await run([*CLI, "connect", "127.0.0.1", str(port)], stdin=b"one\ntwo\n")
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ONE\nTWO\n"


async def test_connect_exits_after_n_messages() -> None:
    async def greet_forever(stream: trio.SocketStream) -> None:
        with contextlib.suppress(trio.BrokenResourceError):  # the client leaves early
            for number in range(1000):
                await stream.send_all(b"greeting %d\n" % number)

    with trio.fail_after(TIMEOUT):
        async with trio.open_nursery() as nursery:
            listeners = await nursery.start(trio.serve_tcp, greet_forever, 0)
            port = listeners[0].socket.getsockname()[1]
            result = await run([*CLI, "connect", "127.0.0.1", str(port), "--exit-after", "3"])
            nursery.cancel_scope.cancel()
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"greeting 0\ngreeting 1\ngreeting 2\n"


async def test_connect_to_a_closed_port_fails_with_one_line_and_exit_code_1() -> None:
    # Bound but not listening: connects are refused, and no other program
    # (a test suite running beside this one) can take the port meanwhile.
    with socket.socket() as probe, trio.fail_after(TIMEOUT):
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
        result = await run([*CLI, "connect", "127.0.0.1", str(port)])
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"python -m trionet: error: cannot connect to 127.0.0.1 port {port}: "
        f"127.0.0.1:{port}: Connection refused\n"
    )


async def test_serve_on_a_port_in_use_fails_with_one_line_and_exit_code_1() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with trio.fail_after(TIMEOUT):
            result = await run([*CLI, "serve", "--host", "127.0.0.1", "--port", str(port)])
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith(f"python -m trionet: error: cannot listen on 127.0.0.1 port {port}: ")
    assert "in use" in err


async def test_sigterm_shuts_the_server_down_gracefully_and_a_second_signal_stops_it() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--host", "127.0.0.1", "--port", "0",
                            "--grace", "60"]) as server:
            port = port_in(await server.stdout.until("listening on"))
            client = await trio.open_tcp_stream("127.0.0.1", port)
            async with client:
                await server.stdout.until("127.0.0.1:")  # "... connected"
                # A connection idle at shutdown ends at once; this one is busy: the
                # server holds half a line. One write carries a whole line and the
                # half, so when the whole line's echo is back, the half is buffered.
                await client.send_all(b"whole\nhalf a li")
                echoed = b""
                while not echoed.endswith(b"\n"):
                    echoed += await client.receive_some()
                assert echoed == b"whole\n"
                server.process.send_signal(signal.SIGTERM)
                assert (await server.stdout.next()).startswith("got SIGTERM: shutting down")
                # The open connection may finish for 60 s; a second signal ends it now.
                code, lines = await server.stop(signal.SIGINT)
    assert code == 0
    assert "stopping at once" in lines
    assert lines[-1] == "stopped after 1 connection(s)"


# ------------------------------------------------------------------------- UDP


async def test_udp_connect_and_serve_exchange_datagrams_over_ipv4_and_ipv6() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--udp", "--port", "0", "--exit-after", "3"]) as server:
            listening = await server.stdout.until("listening on")
            # One socket serves both families, and the banner says so.
            assert listening.startswith("listening on [::]:")
            assert ", dual-stack: IPv6 and IPv4 (udp, codec lines, echo)" in listening
            port = port_in(listening)
            first = await run([*CLI, "connect", "--udp", "127.0.0.1", str(port), "--exit-after", "2"],
                              stdin=b"ping\npong\n")
            assert first.returncode == 0, first.stderr
            assert first.stdout == b"ping\npong\n"
            second = await run([*CLI, "connect", "--udp", "::1", str(port), "--exit-after", "1",
                                "--codec", "lines"], stdin=b"over IPv6\n")
            assert second.returncode == 0, second.stderr
            assert second.stdout == b"over IPv6\n"
            lines = await server.stdout.rest()
            assert await server.process.wait() == 0
    assert lines[-1] == "stopped after 3 datagram(s)"


async def test_udp_serve_answers_a_plain_socket_and_takes_a_last_line_without_newline() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--udp", "--host", "127.0.0.1", "--port", "0",
                            "--exit-after", "2"]) as server:
            port = port_in(await server.stdout.until("listening on 127.0.0.1:"))
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                await sock.connect(("127.0.0.1", port))
                await sock.send(b"one\ntwo\n")
                assert await sock.recv(100) == b"one\ntwo\n"
                await sock.send(b"no newline")  # as `echo -n ... | nc -u` sends it
                assert await sock.recv(100) == b"no newline\n"
            assert await server.process.wait() == 0


async def test_udp_connect_to_a_closed_port_reports_it_unreachable() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "connect", "--udp", "127.0.0.1", str(port), "--wait", "10"],
                           stdin=b"anyone?\n")
    assert result.returncode == 1
    assert result.stderr.decode() == (
        f"python -m trionet: error: 127.0.0.1:{port} is unreachable (port unreachable): "
        "nothing listens there\n"
    )


# --------------------------------------------------------------------- resolve


async def test_resolve_localhost_prints_its_addresses() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "resolve", "localhost"])
    assert result.returncode == 0, result.stderr
    addresses = [ipaddress.ip_address(line) for line in result.stdout.decode().splitlines()]
    assert addresses
    assert all(address.is_loopback for address in addresses)


async def test_resolve_shows_ports_and_the_timeline_of_each_familys_answer() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "resolve", "::1", "443", "--timeline"])
    assert result.returncode == 0, result.stderr
    answer, order, address = result.stdout.decode().splitlines()
    assert answer.startswith("IPv6 answered after ")  # a literal is not looked up: one answer
    assert answer.endswith(" ms: [::1]:443")
    assert order.startswith("in the order connect_tcp tries them")
    assert address == "[::1]:443"


async def test_resolve_prints_connect_tcps_order_not_the_combined_lookups(
    capsys: pytest.CaptureFixture[str],
) -> None:
    # The system prefers IPv4 for this name (its combined answer starts with it),
    # but both families answer at once, so connect_tcp tries IPv6 first.
    async with installed_fake() as fake:
        fake.add("prefers-v4.test", "192.0.2.1", "192.0.2.2", "2001:db8::1")
        assert [str(a.ip) for a in await trionet.resolve("prefers-v4.test", 80)] == [
            "192.0.2.1", "2001:db8::1", "192.0.2.2"
        ]
        capsys.readouterr()
        args = argparse.Namespace(host="prefers-v4.test", port=None, family="any", timeline=False)
        assert await _cli_commands.resolve(args) == 0
    assert capsys.readouterr().out.splitlines() == ["2001:db8::1", "192.0.2.1", "192.0.2.2"]


async def test_resolve_failing_for_both_families_names_each_once_ipv6_first(
    capsys: pytest.CaptureFixture[str],
) -> None:
    async with installed_fake():
        args = argparse.Namespace(host="nowhere.test", port=80, family="any", timeline=False)
        with pytest.raises(CommandError) as info:
            await _cli_commands.resolve(args)
    assert str(info.value) == (
        "cannot resolve 'nowhere.test': IPv6: Name or service not known; IPv4: Name or service not known"
    )


async def test_resolve_of_a_name_that_does_not_exist_is_one_line_and_exit_code_1() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "resolve", "no-such-host.invalid"])
    assert result.returncode == 1
    err = result.stderr.decode()
    assert err.count("\n") == 1
    assert err.startswith("python -m trionet: error: cannot resolve 'no-such-host.invalid'")


# ----------------------------------------------------------------------- bench


async def test_bench_prints_a_table_of_rates() -> None:
    with trio.fail_after(TIMEOUT):
        result = await run([*CLI, "bench", "--seconds", "0.02", "--codec", "length"])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.decode().splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("scenario"))
    assert lines[header].split() == ["scenario", "codec", "payload", "messages", "msgs/s", "MB/s"]
    rows = [line.split() for line in lines[header + 2 :]]
    assert [row[0] for row in rows] == ["round", "round", "stream", "stream"]
    assert all("length" in row for row in rows)
    assert all(int(row[-3].replace(",", "")) > 0 for row in rows)  # messages


# ------------------------------------------------- the serve command's limits


def test_the_cli_serves_with_the_library_defaults_and_has_frame_timeout() -> None:
    args = build_parser().parse_args(["serve"])
    assert args.idle_timeout == DEFAULT_IDLE_TIMEOUT
    assert args.frame_timeout == DEFAULT_FRAME_TIMEOUT
    args = build_parser().parse_args(["serve", "--frame-timeout", "5", "--idle-timeout", "7"])
    assert (args.frame_timeout, args.idle_timeout) == (5.0, 7.0)
    args = build_parser().parse_args(["serve", "--frame-timeout", "0", "--idle-timeout", "0"])
    assert (args.frame_timeout, args.idle_timeout) == (None, None)


@pytest.mark.net(ipv6=False, default_host="client")
async def test_the_cli_passes_frame_timeout_to_the_server(
    monkeypatch: pytest.MonkeyPatch, net: VirtualNetwork, autojump_clock: trio.testing.MockClock
) -> None:
    seen: dict[str, Any] = {}
    real = trionet.open_tcp_server  # what the command calls, by that name

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.update(kwargs)
        return real(*args, **kwargs)

    monkeypatch.setattr(_cli_commands, "open_tcp_server", spy)
    args = build_parser().parse_args(["serve", "--port", "80", "--frame-timeout", "5"])
    assert isinstance(args, argparse.Namespace)
    with net.host("server"):
        stop = trio.Event()
        stop.set()
        await _cli_commands._serve_tcp(args, LengthPrefixed(), stop, ["-"])
    assert seen["frame_timeout"] == 5.0
    assert seen["idle_timeout"] == DEFAULT_IDLE_TIMEOUT


# ------------------------------------------- print mode: peer text escaped (issue 15)


def test_udp_print_mode_prints_each_message_on_one_escaped_line(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(mode="print")
    peer = Address("127.0.0.1", 4444)

    async def send(data: bytes, address: Address) -> None:
        raise AssertionError("print mode sends nothing")

    hostile = b"hi\r\x1b[2K\x1b]0;owned\x07\n127.0.0.1:4444 connected\xc2\x9b31m\xff\xe2\x80\xae"
    trio.run(_cli_commands._answer, args, LengthPrefixed(), send, LengthPrefixed().encode(hostile), peer)
    out = capsys.readouterr().out
    assert out.count("\n") == 1
    assert unsafe_chars(out[:-1]) == []
    # escape_text's rendering, spelled out: C0 and C1 controls, a bidi override, a stray byte.
    assert out == (
        "127.0.0.1:4444: hi\\r\\x1b[2K\\x1b]0;owned\\x07\\n127.0.0.1:4444 connected"
        "\\u009b31m\\xff\\u202e\n"
    )


async def test_tcp_print_mode_lets_no_peer_forge_a_line_or_reach_the_terminal() -> None:
    hostile = (b"hello\r\x1b[2K\x1b]0;window title\x07\n127.0.0.1:4444 connected\n"
               b"\xc2\x9b2J \xe2\x80\xae \xff")
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "print", "--codec", "length", "--host", "127.0.0.1",
                            "--port", "0", "--exit-after", "1"]) as server:
            listening = await server.stdout.until("listening on")
            port = int(listening.split()[2].rsplit(":", 1)[1])
            stream = await trio.open_tcp_stream("127.0.0.1", port)
            async with stream:
                await stream.send_all(LengthPrefixed().encode(hostile))
                await stream.send_eof()
                assert await stream.receive_some() == b""
            assert server.process.stdout is not None
            raw = b""
            while chunk := await server.process.stdout.receive_some():
                raw += chunk
            assert await server.process.wait() == 0
    text = raw.decode("utf-8")  # strict: the output is valid UTF-8
    lines = text.split("\n")
    assert lines[-1] == ""
    assert all(unsafe_chars(line) == [] for line in lines)
    client = lines[0].split()[0]
    assert lines[:-1] == [
        f"{client} connected",
        f"{client}: hello\\r\\x1b[2K\\x1b]0;window title\\x07\\n127.0.0.1:4444 connected\\n"
        "\\u009b2J \\u202e \\xff",
        f"{client} disconnected",
        "stopped after 1 connection(s)",
    ]


def test_a_described_error_is_one_escaped_line() -> None:
    assert _cli_commands.describe(ValueError("bad\x1b[2K\r\nframe")) == "bad\\x1b[2K frame"


async def test_lines_print_mode_escapes_too(capsys: pytest.CaptureFixture[str]) -> None:
    args = argparse.Namespace(mode="print")

    async def send(data: bytes, address: Address) -> None:
        raise AssertionError("print mode sends nothing")

    await _cli_commands._answer(args, Lines(), send, b"a\x1b[31m\nb\r", Address("::1", 5))
    assert capsys.readouterr().out == "[::1]:5: a\\x1b[31m\n[::1]:5: b\\r\n"


# ------------------------------------------- the UDP echo guard and its warning (issue 15)
#
# ``serve --udp`` answered any source: one datagram forged to come from the
# server itself looped for ever, and two echo servers ping-ponged without end.
# It now refuses privileged and well-known service source ports and its own
# address, rate-limits each source, and warns when it listens beyond loopback.


@pytest.mark.parametrize("port", [7, 19, 53, 123, 1023, 1900, 3702, 5353, 5683, 11211])
async def test_the_echo_refuses_service_source_ports(port: int) -> None:
    guard = _EchoGuard(9000)
    assert not await guard.admit(Address("192.0.2.1", port))
    assert await guard.admit(Address("192.0.2.1", 40000))


async def test_the_echo_refuses_its_own_address_but_not_a_remote_peer_on_its_port() -> None:
    guard = _EchoGuard(9000)
    assert not await guard.admit(Address("127.0.0.1", 9000))
    assert not await guard.admit(Address("::1", 9000))
    # 192.0.2.0/24 (TEST-NET-1) is never an address of this machine.
    assert await guard.admit(Address("192.0.2.1", 9000))


async def test_each_source_is_echoed_at_most_the_rate_limit(
    autojump_clock: trio.testing.MockClock,
) -> None:
    guard = _EchoGuard(9000)
    start = trio.current_time()
    admitted = 0
    for _ in range(1_000):
        admitted += await guard.admit(Address("192.0.2.1", 40000))
        await trio.sleep(0.001)  # 1,000 datagrams in one virtual second
    elapsed = trio.current_time() - start
    assert admitted <= _ECHO_BURST + _ECHO_RATE * elapsed + 1
    assert admitted >= _ECHO_BURST
    # Another source has a bucket of its own.
    assert await guard.admit(Address("192.0.2.2", 40000))


@pytest.mark.skipif(os.geteuid() != 0, reason="forging a source address needs a raw socket (root)")
async def test_a_datagram_forged_from_the_cli_echo_server_itself_is_not_echoed() -> None:
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--udp", "--host", "127.0.0.1", "--port", "0"]) as server:
            port = port_in(await server.stdout.until("listening on 127.0.0.1:"))
            raw = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP)
            with raw:
                raw.sendto(struct.pack("!HHHH", port, port, 8 + 5, 0) + b"loop\n", ("127.0.0.1", 0))
            line = await server.stdout.next()
            assert "not echoing (this server's own address)" in line, line
            # Still serving others, and it never echoed the forged one: had it
            # looped, it would have refused its own reply, not the forged datagram.
            sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            with sock:
                await sock.connect(("127.0.0.1", port))
                await sock.send(b"hello\n")
                assert await sock.recv(100) == b"hello\n"
            code, lines = await server.stop()
    assert code == 0
    assert sum("not echoing" in line for line in lines) == 1


@pytest.mark.parametrize(("host", "warned"), [(None, True), ("127.0.0.1", False), ("::1", False)])
async def test_serve_warns_on_stderr_when_it_listens_beyond_loopback(
    host: str | None, warned: bool
) -> None:
    where = [] if host is None else ["--host", host]
    with trio.fail_after(TIMEOUT):
        async with running([*CLI, "serve", "--port", "0", *where]) as server:
            await server.stdout.until("listening on ")
            code, _ = await server.stop()
            assert server.process.stderr is not None
            stderr = b""
            while chunk := await server.process.stderr.receive_some():
                stderr += chunk
    assert code == 0
    assert (b"warning: listening beyond loopback" in stderr) is warned, stderr
