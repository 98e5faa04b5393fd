"""What the command line's modules share: its name, exit codes, errors and codecs.

:mod:`trionet._cli.main` parses the arguments and dispatches to the commands
(``commands.py``, ``bench.py``, ``demo.py``); they import these from here, not
from ``main``, so that no module of the CLI imports one that imports it.
"""

from __future__ import annotations

import os
import sys
from typing import Final, NoReturn

from .. import Codec, LengthPrefixed, Lines, Netstring, Varint

__all__ = [
    "CODECS",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_USAGE",
    "PROG",
    "CommandError",
    "fail",
    "leaf_exceptions",
    "make_codec",
]

# How the user ran us, for usage lines and messages: the ``trionet`` command
# that installing creates, or ``python -m trionet``.
_COMMAND: Final = os.path.basename(sys.argv[0]) if sys.argv else ""
PROG: Final = "trionet" if _COMMAND == "trionet" else "python -m trionet"

#: The ``--codec`` choices and what each stands for.
CODECS: Final = {
    "lines": "one message per line (b'\\n'; a b'\\r\\n' ending is accepted); nc and telnet speak it",
    "length": "4-byte big-endian length, then the payload (tokio, Twisted, Netty)",
    "varint": "unsigned LEB128 length, then the payload (protobuf's delimited format)",
    "netstring": "b'5:hello,' (D. J. Bernstein's netstrings)",
}

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2
# 128 + SIGINT, as shells report a program that Ctrl-C stopped.
EXIT_INTERRUPTED: Final = 130


class CommandError(Exception):
    """A command failed: reported as one line on stderr, exit with ``code``.

    Raised anywhere in a command, child tasks included: ``main()`` finds it
    inside the exception groups that nurseries wrap errors in.
    """

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def leaf_exceptions(exc: BaseException) -> list[BaseException]:
    """The exceptions inside ``exc`` and any exception groups nested in it."""
    nested = getattr(exc, "exceptions", None)
    if not isinstance(nested, tuple):
        return [exc]
    return [leaf for inner in nested for leaf in leaf_exceptions(inner)]


def fail(message: str, code: int = EXIT_FAILURE) -> NoReturn:
    """Print ``python -m trionet: error: message`` (one line) to stderr and exit."""
    one_line = " ".join(message.split())
    print(f"{PROG}: error: {one_line}", file=sys.stderr, flush=True)
    sys.exit(code)


def make_codec(name: str, max_size: int | None) -> Codec:
    """The codec ``--codec name`` stands for, with ``--max-size`` if given."""
    try:
        return _make_codec(name, max_size)
    except ValueError as exc:  # a --max-size the header cannot express
        raise CommandError(f"argument --max-size: {exc}", EXIT_USAGE) from exc


def _make_codec(name: str, max_size: int | None) -> Codec:
    if name == "lines":
        return Lines() if max_size is None else Lines(max_size=max_size)
    if name == "length":
        return LengthPrefixed() if max_size is None else LengthPrefixed(max_size=max_size)
    if name == "varint":
        return Varint() if max_size is None else Varint(max_size=max_size)
    if name == "netstring":
        return Netstring() if max_size is None else Netstring(max_size=max_size)
    raise CommandError(f"unknown codec {name!r}", EXIT_USAGE)
