"""The command line: ``python -m trionet COMMAND``.

Exit codes: 0 when a command did what it was asked, 1 when it failed at run time
(a refused connection, a name that does not resolve, a port in use), 2 for bad
arguments, 130 when interrupted by Ctrl-C where that is not the normal way to
stop (``serve`` treats Ctrl-C as a graceful shutdown and exits 0). Errors go to
standard error as one line: ``python -m trionet: error: ...``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Awaitable, Callable, Sequence
from typing import NoReturn

import trio

from .. import DEFAULT_FRAME_TIMEOUT, DEFAULT_IDLE_TIMEOUT, DEFAULT_SHUTDOWN_GRACE
from .._sansio.addresses import validate_port
from ..errors import AddressError
from .common import (
    CODECS,
    EXIT_FAILURE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    PROG,
    CommandError,
    fail,
    leaf_exceptions,
    make_codec,
)

# CODECS, PROG, CommandError... live in common.py (the commands import them
# from there, so that they need not import this module back); re-exported.
__all__ = [
    "CODECS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CommandError",
    "build_parser",
    "fail",
    "leaf_exceptions",
    "main",
    "make_codec",
]

class _Parser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr, then exit code 2."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix(PROG).strip()
        hint = f"{PROG} {command} --help" if command else f"{PROG} --help"
        fail(f"{message} (see '{hint}')", EXIT_USAGE)


def _port(text: str) -> int:
    try:
        return validate_port(int(text))
    except (ValueError, AddressError):
        raise argparse.ArgumentTypeError(f"invalid port {text!r} (0-65535)") from None


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, not {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, not {text!r}")
    return value


def _seconds_or_off(text: str) -> float | None:
    """Seconds for a limit; 0 turns the limit off (``None``)."""
    value = _seconds(text)
    return value if value > 0 else None


def _add_codec_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--codec", choices=list(CODECS), default="lines",
        help="how messages are framed (default: lines): "
        + "; ".join(f"{name}: {text}" for name, text in CODECS.items()),
    )
    parser.add_argument("--max-size", type=_positive_int, metavar="BYTES",
                        help="the largest message accepted (default: the codec's: 64 KiB for "
                        "lines, 8 MiB for the others)")
    parser.add_argument("--udp", action="store_true",
                        help="use UDP: each datagram carries whole frames of the codec")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m trionet`` and its commands."""
    from .. import __version__

    parser = _Parser(
        prog=PROG,
        description="trionet: nursery-scoped networking for trio. Try 'demo' first.",
        epilog="Exit codes: 0 success, 1 failure (refused, unresolvable, port in use), "
        "2 bad arguments, 130 interrupted. Loopback examples: "
        f"'{PROG} serve --port 8000' in one terminal, "
        f"'{PROG} connect 127.0.0.1 8000' in another.",
    )
    parser.add_argument("--version", action="version", version=f"trionet {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True,
                                     parser_class=_Parser)

    commands.add_parser(
        "demo",
        help="a tour: a server and its clients in one nursery, printed as they go",
        description="Run a line-echo server and several clients on loopback in one "
        "nursery, shut the server down gracefully, then race IPv6 against IPv4 on a "
        "virtual network (Happy Eyeballs). Prints what each task does and exits when all "
        "are done, in about a second.",
    )

    serve = commands.add_parser(
        "serve",
        help="run an echo or print server (TCP or UDP) until Ctrl-C",
        description="Listen, print the bound addresses, and for each message either "
        "send it back (echo) or print it (print). Ctrl-C or SIGTERM shuts down gracefully; "
        "a second Ctrl-C stops at once.",
    )
    serve.add_argument("mode", nargs="?", choices=["echo", "print"], default="echo",
                       help="echo messages back, or print them (default: echo)")
    serve.add_argument("--host", default=None,
                       help="address to listen on (default: every IPv4 and IPv6 address)")
    serve.add_argument("--port", type=_port, default=8000, help="port (default 8000; 0: any free one)")
    _add_codec_options(serve)
    serve.add_argument("--exit-after", type=_positive_int, metavar="N",
                       help="stop after N connections have ended (TCP) or N datagrams (UDP)")
    serve.add_argument("--max-connections", type=_positive_int, metavar="N",
                       help="serve at most N connections at once; more wait their turn (TCP)")
    serve.add_argument("--idle-timeout", type=_seconds_or_off, metavar="SECONDS",
                       default=DEFAULT_IDLE_TIMEOUT,
                       help=f"close connections silent for this long (TCP; default "
                       f"{DEFAULT_IDLE_TIMEOUT:g}; 0: never)")
    serve.add_argument("--frame-timeout", type=_seconds_or_off, metavar="SECONDS",
                       default=DEFAULT_FRAME_TIMEOUT,
                       help=f"drop a connection whose message is not complete this long after "
                       f"its first byte, a slow-loris defence (TCP; default "
                       f"{DEFAULT_FRAME_TIMEOUT:g}; 0: no limit)")
    serve.add_argument("--grace", type=_seconds, default=DEFAULT_SHUTDOWN_GRACE, metavar="SECONDS",
                       help="how long busy connections may finish at shutdown; idle ones end "
                            f"at once, and a second signal stops at once (default "
                            f"{DEFAULT_SHUTDOWN_GRACE:g}, as the library's)")

    connect = commands.add_parser(
        "connect",
        help="connect stdin and stdout to a server, one message per line (netcat-like)",
        description="Send each line of standard input as one message, and write each "
        "message received as one line to standard output. At the end of input the "
        "sending side is closed (TCP) and replies are awaited until the server closes; "
        "with --udp, until --wait seconds pass without a reply.",
    )
    connect.add_argument("host", help="host name or IP address")
    connect.add_argument("port", type=_port, help="port")
    _add_codec_options(connect)
    connect.add_argument("--timeout", type=_seconds, default=10.0, metavar="SECONDS",
                         help="give up connecting after this long (default 10)")
    connect.add_argument("--exit-after", type=_positive_int, metavar="N",
                         help="exit once N messages have been received")
    connect.add_argument("--wait", type=_seconds, default=1.0, metavar="SECONDS",
                         help="with --udp: after the end of input, wait this long for "
                         "replies (default 1)")

    resolve = commands.add_parser(
        "resolve",
        help="print a host's addresses in the order connect_tcp tries them",
        description="Look the name up the way connect_tcp does: IPv6 and IPv4 in parallel, "
        "a first IPv4 answer waiting up to 50 ms for the IPv6 one (RFC 8305 section 3); then "
        "print the addresses in the order connect_tcp tries them: the first family delivered "
        "first, then the families alternating (section 4), each in the system's order. "
        "One address per line. (trionet.resolve() orders one combined lookup by the "
        "system's preference instead, which may start with IPv4.)",
    )
    resolve.add_argument("host", help="host name or IP address")
    resolve.add_argument("port", type=_port, nargs="?", default=None,
                         help="a port to show with each address")
    resolve.add_argument("--family", choices=["any", "4", "6"], default="any",
                         help="only IPv4 (4) or IPv6 (6) addresses (default: any)")
    resolve.add_argument("--timeline", action="store_true",
                         help="also show when each family's answer arrived (Happy Eyeballs input)")

    bench = commands.add_parser(
        "bench",
        help="a quick loopback benchmark of framed messages, printed as a table",
        description="Measure MessageChannel round trips and streaming on TCP loopback "
        "(127.0.0.1) for a few codecs and message sizes. Takes a few seconds.",
    )
    bench.add_argument("--seconds", type=_seconds, default=0.3, metavar="SECONDS",
                       help="how long each row is measured (default 0.3)")
    bench.add_argument("--codec", choices=list(CODECS), action="append", dest="codecs",
                       help="only this codec (repeatable; default: lines and length)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    args = build_parser().parse_args(argv)
    # Imported here so that --help and argument errors stay fast.
    from . import bench as _cli_bench
    from . import commands as _cli_commands
    from . import demo as _demo

    commands: dict[str, Callable[[argparse.Namespace], Awaitable[int]]] = {
        "demo": _demo.main,
        "serve": _cli_commands.serve,
        "connect": _cli_commands.connect,
        "resolve": _cli_commands.resolve,
        "bench": _cli_bench.main,
    }
    try:
        return trio.run(commands[args.command], args)
    except BaseException as exc:  # sorted out below, or re-raised
        leaves = leaf_exceptions(exc)
        if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
            print(f"{PROG}: interrupted", file=sys.stderr, flush=True)
            return EXIT_INTERRUPTED
        for leaf in leaves:
            if isinstance(leaf, CommandError):
                hint = f" (see '{PROG} {args.command} --help')" if leaf.code == EXIT_USAGE else ""
                fail(str(leaf) + hint, leaf.code)
        if any(isinstance(leaf, BrokenPipeError) for leaf in leaves):
            return EXIT_FAILURE  # stdout was closed (for example by `| head`)
        raise


if __name__ == "__main__":
    sys.exit(main())


def console_main() -> None:
    """The ``trionet`` command that installing the package creates (``python -m trionet`` too)."""
    sys.exit(main())
