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
# A named constant that is not public: docstrings mention it by name.
nitpick_ignore = [("py:data", "SAME_PORT_ATTEMPTS"), ("py:class", "Buffer")]
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
import functools  # noqa: E402
import re  # noqa: E402
import types  # noqa: E402

from docutils import nodes  # noqa: E402
from docutils.parsers.rst import Directive  # noqa: E402
from sphinx.pycode import ModuleAnalyzer  # noqa: E402
from sphinx.util.inspect import safe_getattr  # noqa: E402

_PUBLIC_MODULES = ("trionet", "trionet.testing")


@functools.cache
def _top_level_definitions(module_name: str) -> frozenset[str]:
    """The classes and functions a module's source defines at its top level."""
    tags = ModuleAnalyzer.for_module(module_name).find_tags()
    return frozenset(name for name in tags if "." not in name)


def _source_module_getattr(obj, name, *default):
    """getattr for autodoc, with ``__module__`` the private module that defines obj.

    trionet's public classes and functions report the module users import them
    from (``trionet/__init__.py`` sets ``__module__``, as trio does), so the
    pages print ``trionet.Address``. Their source is in the private modules, and
    autodoc reads from the source what the objects do not say at run time:
    ``@final``, ``@overload`` signatures, ``#:`` attribute comments, source order.
    """
    value = safe_getattr(obj, name, *default)
    if name != "__module__" or value not in _PUBLIC_MODULES:
        return value
    top = safe_getattr(obj, "__qualname__", "").split(".")[0]
    exported = vars(sys.modules[value]).get(top)
    for module_name, module in list(sys.modules.items()):
        if (module_name.startswith(value + ".") and vars(module).get(top) is exported
                and top in _top_level_definitions(module_name)):
            return module_name
    return value


class CliHelp(Directive):
    """``.. trionet-cli-help:: serve``: the ``--help`` text of a command, kept in sync."""

    optional_arguments = 1

    def run(self) -> list[nodes.Node]:
        from trionet._cli.main import build_parser

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


def _reexported_data_docs(app, what, name, obj, options, lines: list[str]) -> None:
    """A public constant's text: the ``#:`` comment above it in its private module.

    autodoc looks for the comment in the public module, which only re-exports the
    constant, and falls back to the docstring of the value's type (int's,
    ReplyMatcher's). Without a ``#:`` comment, the reference page's text stands
    alone.
    """
    module_name, _, attr = name.rpartition(".")
    if what != "data" or module_name not in _PUBLIC_MODULES:
        return
    for candidate, module in list(sys.modules.items()):
        if candidate.startswith(module_name + ".") and vars(module).get(attr) is obj:
            comment = ModuleAnalyzer.for_module(candidate).find_attr_docs().get(("", attr))
            if comment:
                # Prose, not "type: text": a leading ": " tells napoleon so.
                lines[:] = [": " + comment[0], *comment[1:]]
                return
    if getattr(obj, "__doc__", None) == getattr(type(obj), "__doc__", None):
        lines.clear()


def setup(app):
    app.add_directive("trionet-cli-help", CliHelp)
    for kind in (type, types.FunctionType, types.MethodType):
        app.add_autodoc_attrgetter(kind, _source_module_getattr)
    # Before napoleon (priority 500) turns Google sections into fields.
    app.connect("autodoc-process-docstring", _google_style_fixes, priority=400)
    app.connect("autodoc-process-docstring", _reexported_data_docs, priority=300)
    return {"parallel_read_safe": True}
