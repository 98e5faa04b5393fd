"""Sphinx configuration for trionet's documentation.

Build it offline, warnings as errors, as CI does (tests/test_docs.py)::

    python -m sphinx -W -b html docs docs/_build/html
    python -m sphinx -W -b doctest docs docs/_build/doctest
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import trionet  # noqa: E402  (after the path is set up)

project = "trionet"
author = "The trionet developers"
copyright = "the trionet developers"
version = release = trionet.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.doctest",
    "sphinx.ext.intersphinx",
    "sphinxcontrib_trio",
]

root_doc = "index"
exclude_patterns = ["_build"]
templates_path: list[str] = []
html_theme = "alabaster"
html_static_path: list[str] = []
html_theme_options = {
    "description": "Nursery-scoped networking for trio",
    "fixed_sidebar": True,
}
pygments_style = "default"

# ---- autodoc and napoleon -------------------------------------------------

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True
# The headed paragraphs trionet's docstrings use besides Args/Returns/Raises.
napoleon_custom_sections = [
    "Cancellation",
    "Error handling",
    "Resource handling",
    "Events",
    "Determinism",
    "Limits",
]

# ---- doctest ----------------------------------------------------------------

doctest_global_setup = """
import trio
import trio.testing
import trionet
from trionet import *
from trionet.testing import *
"""

# ---- cross-references ------------------------------------------------------

# No network here (and in CI): intersphinx must not fetch inventories. With
# TRIONET_DOCS_ONLINE=1 the published build links trio's and Python's docs.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}
if os.environ.get("TRIONET_DOCS_ONLINE") == "1":
    intersphinx_mapping = {
        "python": ("https://docs.python.org/3", None),
        "trio": ("https://trio.readthedocs.io/en/stable", None),
    }
intersphinx_disabled_reftypes = ["*"] if not intersphinx_mapping else []
intersphinx_timeout = 5

# Every reference to trionet's own names must resolve (nitpicky). References to
# trio, the standard library and typing cannot resolve offline; they are listed
# here instead of linked.
nitpicky = True
_EXTERNAL = (
    r"trio(\..+)?",
    r"outcome(\..+)?",
    r"ssl(\..+)?",
    r"socket(\..+)?",
    r"ipaddress(\..+)?",
    r"asyncio(\..+)?",
    r"logging(\..+)?",
    r"math(\..+)?",
    r"types\..+",
    r"typing(_extensions)?\..+",
    r"collections\.abc\..+",
    r"contextlib\..+",
    r"random\..+",
    r"enum\..+",
    r"os\..+",
    r"pathlib\..+",
    r"(bytes|bytearray|memoryview|str|int|float|bool|object|type|tuple|list|dict|set|frozenset|None)",
    r"(BaseException|Exception|OSError|ValueError|TypeError|KeyError|RuntimeError|TimeoutError)",
    r"(ConnectionError|ConnectionRefusedError|ConnectionResetError|BlockingIOError|NotImplementedError)",
    r"(Callable|Awaitable|Iterable|Iterator|AsyncIterator|Mapping|Sequence|Hashable|NamedTuple)",
    r"(Any|Literal|TypeAlias|Self|Final|NoReturn|TracebackType|AddressFamily)",
    r"(Ellipsis|NotImplemented|EllipsisType)",
)
nitpick_ignore_regex = [(role, pattern) for role in ("py:class", "py:exc", "py:func", "py:meth",
                                                   "py:mod", "py:obj", "py:data", "py:attr")
                        for pattern in _EXTERNAL]
# Named defaults that live in private modules: docstrings mention them by name,
# the reference gives their values in prose.
nitpick_ignore = [
    ("py:data", name)
    for name in (
        "DEFAULT_MAX_FRAME_SIZE",
        "DEFAULT_MAX_LINE_SIZE",
        "DEFAULT_TTL",
        "SAME_PORT_ATTEMPTS",
    )
] + [("py:class", "Buffer")]
nitpick_ignore_regex += [
    # Private types in signatures (type variables, the server core behind a
    # server object): they have no page to link to.
    ("py:class", r"trionet\.(\w+\.)*_\w+(\.\w+)*"),
]
# The shared base class of TCPConnection and UnixConnection is private; its
# attributes are documented on each public class.
nitpick_ignore += [("py:attr", "Connection.stream"), ("py:attr", "Connection.channel")]


# ---- local extensions ---------------------------------------------------------

import argparse  # noqa: E402
import re  # noqa: E402

from docutils import nodes  # noqa: E402
from docutils.parsers.rst import Directive  # noqa: E402


class CliHelp(Directive):
    """``.. trionet-cli-help:: serve``: the ``--help`` text of a command, kept in sync."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        from trionet._cli import build_parser

        os.environ["COLUMNS"] = "88"
        parser = build_parser()
        if self.arguments:
            commands = next(
                action for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            )
            parser = commands.choices[self.arguments[0]]
        text = parser.format_help().rstrip()
        return [nodes.literal_block(text, text, language="text")]


# A Raises entry names exception types, then a colon: "trio.WouldBlock: ...".
_RAISES_ENTRY = re.compile(r"[\w.]+(\s*,\s*[\w.]+)*\s*:(\s|$)")
# A property docstring that starts with prose and a colon ("The byte stream: a ...").
_PROSE_COLON = re.compile(r"[^:`]*\s[^:`]*:\s")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _google_style_fixes(app, what, name, obj, options, lines: list[str]) -> None:
    """Two Google-style idioms that napoleon misreads, rewritten before it runs.

    * Free text in a "Raises:" section ("The same as :meth:`receive`.") would
      become one bogus exception type per line; it becomes ": text", which
      napoleon renders as a plain ``:raises:`` field.
    * A property whose first line is prose with a colon ("The byte stream: a
      ...") would have the prose taken for its type; a leading ": " says "no type".
    """
    if what in ("property", "attribute") and lines and _PROSE_COLON.match(lines[0]):
        lines[0] = ": " + lines[0]
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        out.append(line)
        i += 1
        if line.strip() != "Raises:":
            continue
        base, entry = _indent(line), None
        while i < len(lines):
            current = lines[i]
            if current.strip() and _indent(current) <= base:
                break  # the section has ended
            if not current.strip():
                out.append(current)
                i += 1
                continue
            entry = _indent(current) if entry is None else entry
            if _indent(current) != entry or _RAISES_ENTRY.match(current.strip()):
                out.append(current)
                i += 1
                continue
            text = [current.strip()]
            i += 1
            while (i < len(lines) and lines[i].strip() and _indent(lines[i]) >= entry
                   and not (_indent(lines[i]) == entry and _RAISES_ENTRY.match(lines[i].strip()))):
                text.append(lines[i].strip())
                i += 1
            out.append(" " * entry + ": " + " ".join(text))
    lines[:] = out


def setup(app):
    app.add_directive("trionet-cli-help", CliHelp)
    # Before napoleon (priority 500) turns Google sections into fields.
    app.connect("autodoc-process-docstring", _google_style_fixes, priority=400)
    return {"parallel_read_safe": True}
