"""The command line: ``python -m trionet COMMAND``."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import trio

from ._demo import run_demo

__all__ = ["main"]


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m trionet",
        description="trionet: nursery-scoped networking for trio.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    commands.add_parser(
        "demo",
        help="a short tour: a server and clients in one nursery, printed as they go",
        description="Run a line-echo server and clients on loopback in one nursery, "
        "print what each does, and exit when all are done.",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line with ``argv`` (``sys.argv[1:]`` by default); return the exit code."""
    args = _build_parser().parse_args(argv)
    if args.command == "demo":
        trio.run(run_demo, lambda line: print(line, flush=True))
        return 0
    raise AssertionError(f"unhandled command {args.command!r}")  # argparse rejects unknown ones


if __name__ == "__main__":
    sys.exit(main())
