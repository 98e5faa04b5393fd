"""``python -m trionet serve``, ``connect`` and ``resolve``.

Each command is an async function of the parsed arguments that returns an exit
code, run by :func:`trionet._cli.main.main` under ``trio.run``. Expected failures are
raised as :class:`~trionet._cli.common.CommandError` (one line on stderr, exit 1).
"""

from __future__ import annotations

import argparse
import contextlib
import ipaddress
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import Final

import trio

from .. import (
    Address,
    Codec,
    ConnectAttempt,
    Delimited,
    FamilyAnswer,
    Lines,
    PeerUnreachable,
    TCPConnection,
    UDPEndpoint,
    connect_tcp,
    interleave_families,
    listen_fds,
    open_tcp_server,
    open_udp_endpoint,
    resolve_happy_eyeballs,
)
from .._adapters.udp_socket import is_local_address
from .._sansio.escape import escape_text
from .._sansio.hostnames import normalize_host
from .._sansio.ratelimit import SourceRateLimit
from ..errors import AddressError, ConnectError, FramingError, TrionetError
from .common import EXIT_OK, EXIT_USAGE, PROG, CommandError, make_codec

__all__ = ["connect", "resolve", "serve"]

_FAMILIES: Final = {"any": 0, "4": socket.AF_INET, "6": socket.AF_INET6}


def say(line: str) -> None:
    """Print one line of the transcript at once (output may be a pipe)."""
    print(line, flush=True)


def show(message: bytes) -> str:
    """A message as one line of the transcript: printable text as is, the rest as escapes.

    A peer chooses the bytes: a newline would let it forge a transcript line
    (``127.0.0.1:4444 connected``), and ESC, CR or an OSC sequence would move
    the cursor, erase lines or set the operator's window title. Controls and
    other non-printable characters show as ``\\n``, ``\\x1b``, ``\\u202e``, and
    bytes that are not UTF-8 as ``\\xff`` (:func:`escape_text`).
    """
    return escape_text(message)


def describe(exc: BaseException) -> str:
    """An exception as one short, escaped line: its message, or its type when it has none."""
    return escape_text(" ".join(str(exc).split())) or type(exc).__name__


def _reason(error: BaseException | None) -> str:
    if error is None:
        return "still connecting when time ran out"
    if isinstance(error, OSError) and error.errno is not None:
        return os.strerror(error.errno)
    return describe(error)


def decode_datagram(codec: Codec, data: bytes) -> tuple[list[bytes], int]:
    """The messages in one datagram, and how many bytes after them were not a whole frame.

    Datagram boundaries are message boundaries, so with a line codec the last
    line of a datagram needs no newline (``echo -n hi | nc -u`` sends one).
    """
    decoder = codec.decoder()
    decoder.feed(data)
    frames: list[bytes] = []
    while (frame := decoder.next_frame()) is not None:
        frames.append(frame)
    rest = decoder.buffered
    if rest and isinstance(codec, (Lines, Delimited)):
        frames.append(data[len(data) - rest :])
        rest = 0
    return frames, rest


async def _watch_signals(
    stop: trio.Event, cancel_scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
) -> None:
    """The first SIGINT/SIGTERM sets ``stop`` (a graceful stop); the second cancels."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for signum in signals:
            if not stop.is_set():
                say(f"got {signal.Signals(signum).name}: shutting down (again to stop at once)")
                stop.set()
            else:
                say("stopping at once")
                cancel_scope.cancel()


# ---------------------------------------------------------------------- serve


async def serve(args: argparse.Namespace) -> int:
    """``serve``: an echo or print server, until Ctrl-C or ``--exit-after``."""
    codec = make_codec(args.codec, args.max_size)
    serving = _serve_udp if args.udp else _serve_tcp
    summary = ["stopped before listening"]  # each server keeps its last line up to date
    async with trio.open_nursery() as nursery:
        stop = trio.Event()
        await nursery.start(_watch_signals, stop, nursery.cancel_scope)
        await serving(args, codec, stop, summary)
        nursery.cancel_scope.cancel()
    say(summary[0])
    return EXIT_OK


def _warn_if_reachable(addresses: Sequence[Address]) -> None:
    """Warn on stderr when a server listens beyond loopback (issue 15.7)."""
    if all(ipaddress.ip_address(address.host).is_loopback for address in addresses):
        return
    print(f"{PROG}: warning: listening beyond loopback: anyone who can reach this machine "
          "can use this server; --host 127.0.0.1 or --host ::1 keeps it local",
          file=sys.stderr, flush=True)


async def _serve_tcp(
    args: argparse.Namespace, codec: Codec, stop: trio.Event, summary: list[str]
) -> None:
    ended = 0

    async def handle(conn: TCPConnection) -> None:
        nonlocal ended
        peer = conn.peer
        say(f"{peer} connected")
        if conn.server is not None:
            accepted = conn.server.statistics().connections_accepted
            summary[0] = f"stopped after {accepted} connection(s)"
        try:
            async for message in conn.channel:
                if args.mode == "print":
                    say(f"{peer}: {show(message)}")
                else:
                    await conn.channel.send(message)
            say(f"{peer} disconnected")
        except (FramingError, trio.BrokenResourceError) as exc:
            # A bad or vanished peer ends its own connection, not the server.
            say(f"{peer} dropped: {describe(exc)}")
        finally:
            ended += 1
            if args.exit_after is not None and ended >= args.exit_after:
                stop.set()

    # Started by systemd with socket activation: serve the sockets it passed.
    handed = listen_fds()
    try:
        async with open_tcp_server(
            handle, None if handed else args.port, sockets=handed or None,
            host=None if handed else args.host, codec=codec,
            max_connections=args.max_connections, idle_timeout=args.idle_timeout,
            frame_timeout=args.frame_timeout, shutdown_grace=args.grace,
        ) as server:
            where = ", ".join(str(address) for address in server.addresses)
            origin = ", sockets passed by the service manager" if handed else ""
            say(f"listening on {where} (tcp, codec {args.codec}, {args.mode}{origin})")
            _warn_if_reachable(server.addresses)
            summary[0] = "stopped after 0 connection(s)"
            await stop.wait()
    except OSError as exc:
        where = f"{args.host or 'every address'} port {args.port}"
        raise CommandError(f"cannot listen on {where}: {describe(exc)}") from exc


async def _serve_udp(
    args: argparse.Namespace, codec: Codec, stop: trio.Event, summary: list[str]
) -> None:
    count = 0
    local = args.port if args.host is None else (args.host, args.port)
    try:
        async with open_udp_endpoint(local) as endpoint:
            # TCP lists a socket per family; one dual-stack UDP socket serves both.
            stack = ", dual-stack: IPv6 and IPv4" if endpoint.dual_stack else ""
            say(f"listening on {endpoint.local}{stack} (udp, codec {args.codec}, {args.mode})")
            _warn_if_reachable([endpoint.local])
            summary[0] = "stopped after 0 datagram(s)"
            async with trio.open_nursery() as nursery:

                guard = _EchoGuard(endpoint.local.port)

                async def receive_all() -> None:
                    nonlocal count
                    async for datagram in endpoint:
                        if args.mode == "echo" and not await guard.admit(datagram.address):
                            continue
                        await _answer(args, codec, endpoint.send, datagram.data, datagram.address)
                        count += 1
                        summary[0] = f"stopped after {count} datagram(s)"
                        if args.exit_after is not None and count >= args.exit_after:
                            stop.set()
                            return

                nursery.start_soon(receive_all)
                await stop.wait()
                nursery.cancel_scope.cancel()
    except OSError as exc:
        where = f"{args.host or 'every address'} port {args.port}"
        raise CommandError(f"cannot listen on {where}: {describe(exc)}") from exc


# Echoing to any source makes a reflector (issue 15.2): a datagram forged to
# come from another echo-like service, or from this server itself, starts a
# loop that never ends. The CLI's echo answers no privileged source port (echo
# 7, chargen 19, DNS 53, NTP 123, ...) and none of these well-known UDP
# services above 1023: SSDP 1900, WS-Discovery 3702, mDNS 5353, CoAP 5683,
# memcached 11211. It answers each source at most _ECHO_RATE times a second.
_REFLECTING_PORTS: Final = frozenset({1900, 3702, 5353, 5683, 11211})
_ECHO_RATE: Final = 100.0
_ECHO_BURST: Final = 200.0
# How many refused sources are reported by name; the rest only counted.
_REPORTED_REFUSALS: Final = 20


class _EchoGuard:
    """Which datagrams the CLI's UDP echo answers; says why it refuses the others."""

    def __init__(self, port: int) -> None:
        self._port = port
        self._limit = SourceRateLimit(_ECHO_RATE, _ECHO_BURST)
        self._local: dict[str, bool] = {}
        self._reported: set[tuple[str, str]] = set()

    async def admit(self, peer: Address) -> bool:
        if peer.port < 1024 or peer.port in _REFLECTING_PORTS:
            return self._refuse(peer, "a privileged or well-known service port")
        if peer.port == self._port:
            local = self._local.get(peer.host)
            if local is None:
                local = await is_local_address(peer)
                if len(self._local) < 1024:
                    self._local[peer.host] = local
            if local:
                return self._refuse(peer, "this server's own address")
        if not self._limit.allow(peer.host, trio.current_time()):
            return self._refuse(peer, f"over {_ECHO_RATE:g} datagrams a second")
        return True

    def _refuse(self, peer: Address, why: str) -> bool:
        key = (peer.host, why)
        if key not in self._reported and len(self._reported) < _REPORTED_REFUSALS:
            self._reported.add(key)
            say(f"{escape_text(str(peer))}: not echoing ({why}); such datagrams are dropped")
        return False


async def _answer(
    args: argparse.Namespace,
    codec: Codec,
    send: Callable[[bytes, Address], Awaitable[None]],
    data: bytes,
    peer: Address,
) -> None:
    try:
        messages, rest = decode_datagram(codec, data)
    except FramingError as exc:
        say(f"{peer}: ignored a datagram: {describe(exc)}")
        return
    if rest:
        say(f"{peer}: ignored {rest} byte(s) that are not a whole frame")
    if args.mode == "print":
        for message in messages:
            say(f"{peer}: {show(message)}")
    elif messages:
        try:
            await send(codec.encode_many(messages), peer)
        except OSError as exc:
            say(f"{peer}: reply not sent: {describe(exc)}")


# -------------------------------------------------------------------- connect


class _StdinLines:
    """Standard input, line by line, read by a worker thread that is safe to abandon.

    trio cannot wait on a terminal or a pipe portably without making it
    non-blocking, which would change it for the whole shell session; so a
    thread reads. The thread calls ``os.read`` on the descriptor, never
    ``sys.stdin.buffer``: when the session ends while a read is still blocked
    (the server hung up, stdin is a terminal or a pipe still open), the thread
    is abandoned, and a thread blocked inside the buffered reader would hold
    its lock while the interpreter shuts down, which Python ends with "Fatal
    Python error: _enter_buffered_busy" (issue 17.3). A blocked ``os.read``
    holds nothing.
    """

    _READ_SIZE = 65536

    def __init__(self) -> None:
        self._fd = sys.stdin.fileno()
        self._buffer = b""
        self._eof = False

    async def readline(self) -> bytes:
        """The next line with its newline; the last one without; ``b""`` at the end."""
        while b"\n" not in self._buffer and not self._eof:
            chunk = await trio.to_thread.run_sync(
                os.read, self._fd, self._READ_SIZE, abandon_on_cancel=True
            )
            if chunk:
                self._buffer += chunk
            else:
                self._eof = True
        line, newline, self._buffer = self._buffer.partition(b"\n")
        return line + newline


def _write_message(message: bytes) -> None:
    sys.stdout.buffer.write(message + b"\n")
    sys.stdout.buffer.flush()


def _strip_newline(line: bytes) -> bytes:
    if line.endswith(b"\r\n"):
        return line[:-2]
    return line[:-1] if line.endswith(b"\n") else line


async def connect(args: argparse.Namespace) -> int:
    """``connect``: standard input to the server, the server to standard output."""
    codec = make_codec(args.codec, args.max_size)
    if args.udp:
        return await _connect_udp(args, codec)
    try:
        conn = await connect_tcp(args.host, args.port, codec=codec,
                                 connect_timeout=args.timeout or None)
    except ConnectError as exc:
        reasons = "; ".join(
            f"{attempt.address}: {_reason(attempt.error)}"
            for attempt in exc.attempts if isinstance(attempt, ConnectAttempt)
        ) or describe(exc)
        raise CommandError(f"cannot connect to {args.host} port {args.port}: {reasons}") from exc
    except AddressError as exc:  # a malformed host: an argument error
        raise CommandError(f"argument host: {describe(exc)}", EXIT_USAGE) from exc
    except (OSError, TrionetError) as exc:
        raise CommandError(describe(exc)) from exc
    received = 0
    async with conn, trio.open_nursery() as nursery:
        channel = conn.channel

        async def send_lines() -> None:
            stdin = _StdinLines()
            while line := await stdin.readline():
                try:
                    await channel.send(_strip_newline(line))
                except TrionetError as exc:  # FrameTooLarge, InvalidMessage
                    raise CommandError(f"cannot send that line: {describe(exc)}") from exc
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    return  # the server went away; the receiving side reports it
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await channel.send_eof()  # the server's receive ends after our messages

        nursery.start_soon(send_lines)
        try:
            async for message in channel:
                _write_message(message)
                received += 1
                if args.exit_after is not None and received >= args.exit_after:
                    break
        except (FramingError, trio.BrokenResourceError) as exc:
            raise CommandError(f"connection to {conn.peer} lost: {describe(exc)}") from exc
        nursery.cancel_scope.cancel()
    return EXIT_OK


async def _connect_udp(args: argparse.Namespace, codec: Codec) -> int:
    try:
        async with open_udp_endpoint(remote=(args.host, args.port)) as endpoint:
            await _udp_session(endpoint, args, codec)
    except (OSError, TrionetError) as exc:  # opening failed (errors inside come in groups)
        raise CommandError(describe(exc)) from exc
    return EXIT_OK


async def _udp_session(endpoint: UDPEndpoint, args: argparse.Namespace, codec: Codec) -> None:
    received = 0
    async with trio.open_nursery() as nursery:

        async def send_lines() -> None:
            stdin = _StdinLines()
            while line := await stdin.readline():
                try:
                    await endpoint.send(codec.encode(_strip_newline(line)))
                except (OSError, TrionetError) as exc:
                    raise CommandError(f"cannot send that line: {describe(exc)}") from exc
            await trio.sleep(args.wait)  # for the last replies
            nursery.cancel_scope.cancel()

        nursery.start_soon(send_lines)
        try:
            async for datagram in endpoint:
                messages, _ = decode_datagram(codec, datagram.data)
                for message in messages:
                    _write_message(message)
                    received += 1
                    if args.exit_after is not None and received >= args.exit_after:
                        nursery.cancel_scope.cancel()
                        return
        except PeerUnreachable as exc:
            raise CommandError(f"{describe(exc)}: nothing listens there") from exc


# -------------------------------------------------------------------- resolve


def _host_text(address: Address, with_port: bool) -> str:
    if with_port:
        return str(address)
    return f"{address.host}%{address.scope_id}" if address.scope_id else address.host


async def resolve(args: argparse.Namespace) -> int:
    """``resolve``: the addresses in the order connect_tcp tries them.

    The lookups are connect_tcp's own (resolve_happy_eyeballs: IPv6 and IPv4
    in parallel, with the resolution delay), and the order is what
    connect_tcp makes of the answers in the order they were delivered
    (interleave_families). ``resolve()`` orders one combined getaddrinfo
    answer instead, which differs when both families answer together and
    the system prefers IPv4.
    """
    family = _FAMILIES[args.family]
    port = args.port or 0
    try:
        normalize_host(args.host)  # a malformed name is an argument error, before any lookup
    except AddressError as exc:
        raise CommandError(f"argument host: {describe(exc)}", EXIT_USAGE) from exc
    try:
        answers = await _happy_eyeballs_answers(args.host, port, family, args.timeline, args.port is not None)
    except (OSError, TrionetError) as exc:
        raise CommandError(describe(exc)) from exc
    arrived = [address for answer in answers for address in answer.addresses]
    if not arrived:
        reasons = "; ".join(
            f"{_family_label(answer.family)}: {answer.error.reason if answer.error else 'no address'}"
            for answer in sorted(answers, key=lambda answer: answer.family != socket.AF_INET6)
        )
        raise CommandError(f"cannot resolve {args.host!r}: {reasons or 'no address'}")
    if args.timeline:
        say("in the order connect_tcp tries them (the first family to be delivered, then alternating; "
            "RFC 8305 sections 3 and 4):")
    for address in interleave_families(arrived):
        say(_host_text(address, args.port is not None))
    return EXIT_OK


def _family_label(family: int) -> str:
    return "IPv6" if family == socket.AF_INET6 else "IPv4"


async def _happy_eyeballs_answers(
    host: str, port: int, family: int, timeline: bool, with_port: bool
) -> list[FamilyAnswer]:
    """Each family's answer, in the order connect_tcp would receive them."""
    send, receive = trio.open_memory_channel[FamilyAnswer](2)
    start = trio.current_time()
    answers: list[FamilyAnswer] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(resolve_happy_eyeballs, host, port, send)
        async for answer in receive:
            if family and answer.family != family:
                continue
            answers.append(answer)
            if not timeline:
                continue
            answered = (answer.answered_at - start) * 1000
            delivered = (trio.current_time() - start) * 1000
            held = f", held until {delivered:.1f} ms" if delivered - answered > 1 else ""
            found = ", ".join(_host_text(a, with_port) for a in answer.addresses)
            reason = answer.error.reason if answer.error is not None else "none found"
            outcome = found or f"no address ({reason})"
            say(f"{_family_label(answer.family)} answered after {answered:.1f} ms{held}: {outcome}")
    return answers
