"""Every Python code block in the docs type-checks under ``mypy --strict`` (issue 19.3).

Which blocks are Python, and how each becomes a module:

* ``.. code-block:: python`` (also ``code``/``sourcecode``, ``py``, ``python3``),
  and every ``::`` literal block: Sphinx highlights a ``::`` block as Python, so
  it must be Python; a block that is not (console output, a tree, a config file)
  says what it is with ``.. code-block:: console`` (or ``text``, ``ini`` ...).
  Each such block is a module of its own, as a reader copies it: it has its own
  imports, and its code is complete (a fragment that awaits sits in an
  ``async def``).
* ``.. testsetup::``, ``.. testcode::``, ``.. doctest::`` (and ``>>>`` lines of a
  ``pycon`` block), ``.. testcleanup::``: checked as the doctest builder runs
  them. One module per page and group, made of ``doctest_global_setup`` from
  docs/conf.py, the page's ``testsetup`` blocks, then the group's blocks in page
  order (they share one namespace, so a later block may use an earlier one's
  names). Of a ``doctest`` block, the ``>>>``/``...`` lines are the code; a
  paragraph that starts with ``>>>`` is a doctest block of the default group.
* ``.. literalinclude::`` of a ``.py`` file: the whole file is checked, once,
  whatever excerpt a page shows (an excerpt is only as right as its file).

Nothing else is Python (``console``, ``text``, ``ini`` or ``rust`` blocks,
``testoutput``, a ``literalinclude`` of another kind of file). Blocks nested in
other directives (a note, a list) count too; ``.. highlight::`` changes what a
``::`` block is, as in Sphinx. A Python block that cannot be checked is marked
by an rst comment ``.. mypy: skip (the reason)`` before it (the marker applies
to the page's next block; a reason is required). The test counts and prints the
skips, so they stay few (one today: a Twisted peer, whose reactor only the
mypy-zope plugin types; tests/test_twisted_interop.py runs it instead).

A block may import an example by its module name (``from resp_server import
Resp``), as it runs beside ``examples/``. One ``mypy --strict`` process (as
Python 3.11, whose ``except*`` the tutorial shows) checks every module, with its
cache in a temporary directory; an error is reported at its line in the rst
page (or the included example file).
"""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
SECONDS = 60
# The docs teach ``except*`` (3.11); trionet itself is checked as 3.10 (pyproject.toml).
PYTHON_VERSION = "3.11"
# The blocks marked ``.. mypy: skip``: each is a decision, reviewed when this changes.
EXPECTED_SKIPS = 1  # docs/howto/interop.rst: the Twisted peer (its reactor needs the mypy-zope plugin)

PYTHON = frozenset({"python", "python3", "py", "py3"})
DOCTEST_LANGUAGES = frozenset({"pycon"})
DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\.\s+(?P<name>[\w:-]+)::(?:\s+(?P<argument>.*?))?\s*$")
OPTION = re.compile(r"^\s+:[\w -]+:")
SKIP = re.compile(r"^\s*\.\.\s+mypy:\s*skip\b\s*(?P<reason>.*?)\s*$")
CODE_DIRECTIVES = frozenset({"code-block", "code", "sourcecode"})
DOCTEST_DIRECTIVES = frozenset({"testsetup", "testcode", "doctest", "testcleanup"})


@dataclass
class Block:
    """One code block: where it starts, its lines, and each line's origin."""

    kind: str  # "code" (own module), a doctest directive name, or "include"
    origin: str  # "docs/page.rst:LINE" of the directive or the paragraph
    lines: list[str]
    origins: list[str]  # "file:line" of each line
    groups: tuple[str, ...] = ("default",)
    include: Path | None = None


@dataclass
class Page:
    path: Path
    blocks: list[Block] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (origin, reason)
    other: int = 0  # blocks that say they are not Python (console, text, ...)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _body(lines: list[str], start: int, base: int) -> tuple[int, int]:
    """The span [first, end) of the indented body that starts at or after ``start``."""
    first = start
    while first < len(lines) and not lines[first].strip():
        first += 1
    end = first
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > base):
        end += 1
    while end > first and not lines[end - 1].strip():
        end -= 1
    return first, end


def _doctest_source(text: list[str], where: list[str]) -> tuple[list[str], list[str]]:
    """The code of a doctest: its ``>>>`` and ``...`` lines, without the prompts."""
    code, origins = [], []
    for line, origin in zip(text, where, strict=True):
        stripped = line.lstrip()
        if stripped.startswith((">>> ", "... ")) or stripped in (">>>", "..."):
            code.append(stripped[4:])
            origins.append(origin)
    return code, origins


def parse_page(path: Path, *, name: str | None = None, text: str | None = None) -> Page:
    """The code blocks of one rst page, by the rule in this module's docstring."""
    relative = name or path.relative_to(ROOT).as_posix()
    lines = (path.read_text() if text is None else text).splitlines()
    page = Page(path)
    default_language = "python"  # Sphinx's highlight_language: Python (where it parses)
    skip: str | None = None  # the reason, if the next block is marked
    i = 0
    while i < len(lines):
        line = lines[i]
        number = i + 1
        if marker := SKIP.match(line):
            assert marker.group("reason"), f"{relative}:{number}: '.. mypy: skip' needs a reason"
            skip = marker.group("reason")
            i += 1
            continue
        directive = DIRECTIVE.match(line)
        if directive:
            name_ = directive.group("name")
            argument = (directive.group("argument") or "").strip()
            base = len(directive.group("indent"))
            j = i + 1
            options: dict[str, str] = {}
            while j < len(lines) and OPTION.match(lines[j]):
                key, _, value = lines[j].strip()[1:].partition(":")
                options[key.strip()] = value.strip()
                j += 1
            first, end = _body(lines, j, base)
            body = [lines[k] for k in range(first, end)]
            where = [f"{relative}:{k + 1}" for k in range(first, end)]
            origin = f"{relative}:{number}"
            content_indent = min((_indent(b) for b in body if b.strip()), default=0)
            body = [b[content_indent:] for b in body]
            block: Block | None = None
            if name_ == "highlight":
                default_language = argument
            elif name_ in CODE_DIRECTIVES:
                language = argument or default_language
                if language in PYTHON:
                    block = Block("code", origin, body, where)
                elif language in DOCTEST_LANGUAGES:
                    code, code_where = _doctest_source(body, where)
                    block = Block("code", origin, code, code_where)
                else:
                    page.other += 1
            elif name_ in DOCTEST_DIRECTIVES:
                groups = tuple(g.strip() for g in argument.split(",") if g.strip()) or ("default",)
                if name_ == "doctest":
                    body, where = _doctest_source(body, where)
                block = Block(name_, origin, body, where, groups=groups)
            elif name_ == "literalinclude":
                target = (DOCS / argument.lstrip("/")) if argument.startswith("/") else path.parent / argument
                language = options.get("language", "python" if target.suffix == ".py" else "text")
                if language in PYTHON:
                    block = Block("include", origin, [], [], include=target.resolve())
                else:
                    page.other += 1
            elif name_ == "testoutput":
                page.other += 1
            else:
                # Another directive (a note, a list-table): its body is rst and may hold blocks.
                i += 1
                continue
            if block is not None:
                if skip is not None:
                    page.skipped.append((origin, skip))
                else:
                    page.blocks.append(block)
            skip = None
            i = max(end, i + 1)
            continue
        if line.lstrip().startswith(">>>") and (i == 0 or not lines[i - 1].strip()):
            # A doctest block: a paragraph of its own that starts with ">>>".
            end = i
            while end < len(lines) and lines[end].strip():
                end += 1
            body = [lines[m] for m in range(i, end)]
            code, code_where = _doctest_source(body, [f"{relative}:{m + 1}" for m in range(i, end)])
            if skip is not None:
                page.skipped.append((f"{relative}:{number}", skip))
            else:
                page.blocks.append(Block("doctest", f"{relative}:{number}", code, code_where))
            skip = None
            i = end
            continue
        stripped = line.rstrip()
        if stripped.endswith("::") and not stripped.lstrip().startswith(".."):
            # A paragraph that ends with "::" introduces a literal block.
            base = _indent(line)
            k = i
            while k > 0 and lines[k - 1].strip() and _indent(lines[k - 1]) == base:
                k -= 1  # the paragraph's first line: a skip marker goes before it
            first, end = _body(lines, i + 1, base)
            if first < end:
                body = [lines[m] for m in range(first, end)]
                content_indent = min(_indent(b) for b in body if b.strip())
                block_ = Block("code", f"{relative}:{number}", [b[content_indent:] for b in body],
                               [f"{relative}:{m + 1}" for m in range(first, end)])
                if default_language not in PYTHON:
                    page.other += 1
                elif skip is not None:
                    page.skipped.append((block_.origin, skip))
                else:
                    page.blocks.append(block_)
                skip = None
                i = end
                continue
        i += 1
    return page


def doctest_global_setup() -> list[str]:
    """The code docs/conf.py runs before each doctest group."""
    tree = ast.parse((DOCS / "conf.py").read_text())
    for node in tree.body:
        if (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)
                and node.targets[0].id == "doctest_global_setup"):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value.strip("\n").splitlines()
    return []


@dataclass
class Module:
    name: str
    lines: list[str]
    origins: list[str]
    label: str  # what the module is, for messages


def modules_of(pages: list[Page]) -> list[Module]:
    """The modules to check: one per code block, per page's doctest group, per included file."""
    setup = doctest_global_setup()
    setup_origins = [f"docs/conf.py:doctest_global_setup+{n + 1}" for n in range(len(setup))]
    modules: list[Module] = []
    included: set[Path] = set()
    for page in pages:
        stem = re.sub(r"\W", "_", page.path.relative_to(ROOT).with_suffix("").as_posix()
                      if page.path.is_relative_to(ROOT) else page.path.stem)
        groups: dict[str, list[Block]] = {}
        setups = [b for b in page.blocks if b.kind == "testsetup"]
        for block in page.blocks:
            if block.kind == "code":
                line = block.origin.rsplit(":", 1)[1]
                modules.append(Module(f"{stem}_L{line}", block.lines, block.origins, block.origin))
            elif block.kind == "include":
                assert block.include is not None
                if block.include in included:
                    continue
                included.add(block.include)
                text = block.include.read_text().splitlines()
                shown = (block.include.relative_to(ROOT).as_posix()
                         if block.include.is_relative_to(ROOT) else str(block.include))
                modules.append(Module(
                    re.sub(r"\W", "_", shown.removesuffix(".py")), text,
                    [f"{shown}:{n + 1} (included at {block.origin})" for n in range(len(text))],
                    f"{shown} (included at {block.origin})",
                ))
            elif block.kind != "testsetup":
                for group in block.groups:
                    groups.setdefault(group, []).append(block)
        for group, blocks in groups.items():
            lines, origins = list(setup), list(setup_origins)
            for block in [s for s in setups if group in s.groups or "*" in s.groups] + blocks:
                lines += block.lines
                origins += block.origins
            group_name = re.sub(r"\W", "_", group)
            modules.append(Module(f"{stem}_doctest_{group_name}", lines, origins,
                                  f"{page.path.name} doctest group {group!r}"))
    return modules


@dataclass
class Report:
    errors: list[str]  # "origin: error: message", in the docs' terms
    output: str
    seconds: float


MYPY_LINE = re.compile(r"^(?P<file>[^:\n]+\.py):(?P<line>\d+): (?P<severity>error|note): (?P<message>.*)$")


def check(modules: list[Module], directory: Path) -> Report:
    """Run one ``mypy --strict`` over all the modules; errors point into the docs."""
    directory.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, Module] = {}
    names = Counter(m.name for m in modules)
    assert not [n for n, c in names.items() if c > 1], names
    sources = directory / "blocks"
    sources.mkdir(exist_ok=True)
    errors: list[str] = []
    for module in modules:
        text = "\n".join(module.lines) + "\n"
        # A syntax error stops mypy before it checks anything: it would hide every
        # other block's errors. Such a block is reported here and left out.
        try:
            ast.parse(text, feature_version=(3, int(PYTHON_VERSION.split(".")[1])))
        except SyntaxError as error:
            number = error.lineno or 0
            where = module.origins[number - 1] if 0 < number <= len(module.origins) else module.label
            errors.append(f"{where}: error: {error.msg}  [syntax]")
            continue
        file = sources / f"{module.name}.py"
        file.write_text(text)
        by_file[file.name] = module
    # trionet from this tree; an example imported by name (``from resp_server import Resp``).
    config = directory / "mypy.ini"  # none of pyproject.toml's: its files are trionet's
    config.write_text("[mypy]\n")
    environment = {**os.environ, "MYPYPATH": os.pathsep.join([str(ROOT), str(ROOT / "examples")])}
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--warn-unreachable", "--python-version", PYTHON_VERSION,
         "--config-file", str(config), "--cache-dir", str(directory / "cache"),
         # Errors in trionet itself are its own check's (pyproject.toml); here only the docs'.
         "--follow-imports", "silent", "--no-error-summary", "--show-error-codes", "--no-pretty",
         "--hide-error-context",
         *sorted(str(sources / name) for name in by_file)],
        cwd=directory, env=environment, capture_output=True, text=True, timeout=4 * SECONDS, check=False,
    )
    seconds = time.monotonic() - started
    for line in result.stdout.splitlines():
        match = MYPY_LINE.match(line)
        if not match:
            continue
        source = by_file.get(Path(match.group("file")).name)
        if source is None:
            if match.group("severity") == "error":
                errors.append(line)  # not in a docs module (trionet itself?)
            continue
        number = int(match.group("line"))
        where = source.origins[number - 1] if 0 < number <= len(source.origins) else source.label
        errors.append(f"{where}: {match.group('severity')}: {match.group('message')}")
    errors.sort(key=_natural)
    if result.returncode != 0 and not errors:
        errors.append(f"mypy exited {result.returncode}: {result.stdout}{result.stderr}")
    return Report(errors, result.stdout + result.stderr, seconds)


def _natural(text: str) -> list[str | int]:
    """Sort "page.rst:9" before "page.rst:10"."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", text)]


def all_pages() -> list[Page]:
    return [parse_page(path) for path in sorted(DOCS.rglob("*.rst")) if "_build" not in path.parts]


PAGES = [path.relative_to(DOCS).as_posix() for path in sorted(DOCS.rglob("*.rst"))
         if "_build" not in path.parts]


@dataclass
class Checked:
    pages: list[Page]
    modules: list[Module]
    report: Report
    seconds: float


@pytest.fixture(scope="module")
def checked(tmp_path_factory: pytest.TempPathFactory) -> Checked:
    """Every page's blocks, checked by one mypy run for the whole module."""
    started = time.monotonic()
    pages = all_pages()
    modules = modules_of(pages)
    report = check(modules, tmp_path_factory.mktemp("docs-types"))
    return Checked(pages, modules, report, time.monotonic() - started)


def _on_page(error: str, page: str) -> bool:
    return error.startswith(f"docs/{page}:") or f"(included at docs/{page}:" in error


def test_the_docs_code_is_all_checked_by_one_mypy_run_in_under_a_minute(checked: Checked) -> None:
    pages, modules = checked.pages, checked.modules
    # What was checked, for the CI log (pytest -rA shows it).
    print(f"\n{len(modules)} modules from {sum(len(p.blocks) for p in pages)} blocks, "
          f"checked in {checked.seconds:.1f} s")
    for page in pages:
        if page.blocks or page.skipped:
            kinds = Counter(b.kind for b in page.blocks)
            print(f"  {page.path.relative_to(DOCS)}: {dict(kinds)}, skipped {len(page.skipped)}")
    skipped = [s for p in pages for s in p.skipped]
    for origin, reason in skipped:
        print(f"  skipped {origin}: {reason}")
    assert len(modules) > 20  # the extractor found the blocks
    assert len(skipped) == EXPECTED_SKIPS, "a skip is a decision: review it, then update EXPECTED_SKIPS"
    # Every error belongs to a page (its test below names it); none is mypy's own failure.
    orphans = [e for e in checked.report.errors if not any(_on_page(e, page) for page in PAGES)]
    assert orphans == [], checked.report.output
    assert checked.seconds < SECONDS


@pytest.mark.parametrize("page", PAGES)
def test_every_python_block_on_the_page_passes_mypy_strict(checked: Checked, page: str) -> None:
    errors = [e for e in checked.report.errors if _on_page(e, page)]
    assert errors == [], f"mypy --strict, on the code of docs/{page}:\n" + "\n".join(errors)


WRONG_PAGE = """\
A page
======

Some prose, then a block that is right::

    import trionet

    codec: trionet.LengthPrefixed = trionet.LengthPrefixed()

.. mypy: skip (a fragment on purpose)

.. code-block:: python

    this is not python

.. code-block:: console

    $ not python either

.. testsetup::

    setup_value = 1

.. doctest::

    >>> x = setup_value + 1
    >>> x
    2

>>> z = x * 2

And one that is wrong:

.. code-block:: python

    import trionet

    def frame(codec: trionet.LengthPrefixed) -> int:
        return codec.encode(b"hello")

.. testcode::

    y: str = x

And one that does not parse, which must not hide the others' errors::

    def broken(:
"""


def test_the_checker_finds_a_wrong_block_and_names_its_line_in_the_page(tmp_path: Path) -> None:
    page = parse_page(tmp_path / "wrong.rst", name="docs/wrong.rst", text=WRONG_PAGE)
    kinds = ["code", "testsetup", "doctest", "doctest", "code", "testcode", "code"]
    assert [b.kind for b in page.blocks] == kinds
    assert page.skipped == [("docs/wrong.rst:12", "(a fragment on purpose)")]
    assert page.other == 1
    report = check(modules_of([page]), tmp_path / "check")
    assert len(report.errors) == 3, report.output
    returned, assigned, unparsed = report.errors
    # The return of bytes where an int is promised: the line of the return in the page.
    assert returned.startswith("docs/wrong.rst:39: error: Incompatible return value type"), returned
    # The doctest group shares a namespace: x (an int) from the doctest reaches the testcode.
    assert assigned.startswith("docs/wrong.rst:43: error: Incompatible types in assignment"), assigned
    assert unparsed == "docs/wrong.rst:47: error: invalid syntax  [syntax]", unparsed


def test_a_skip_marker_needs_a_reason(tmp_path: Path) -> None:
    with pytest.raises(AssertionError, match="needs a reason"):
        parse_page(tmp_path / "x.rst", name="docs/x.rst",
                   text=".. mypy: skip\n\n.. code-block:: python\n\n    x\n")
