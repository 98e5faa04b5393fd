"""trionet.testing is layered: its modules import each other without circles.

Every import counts: module-level ones, lazy ones inside functions, and the
typing-only ones under ``if TYPE_CHECKING:``. A circle that only type checkers
see still ties the modules together: neither can be read, tested or moved
without the other. Where a lower module needs something of a higher one (a
socket needs its host, a host or link needs the network), it names a Protocol
from ``trionet/testing/_vtypes.py`` and is handed the object.

What ``trionet.testing`` may import from the rest of trionet:

* ``trionet._sansio`` and its modules (the conformance suite uses the codecs
  and their errors);
* the package itself, for ``_publish`` only (``from .. import _publish`` in
  ``__init__.py``, which gives the public names their public ``__module__``);
* nothing else: not ``trionet._adapters``, ``trionet._endpoints`` nor
  ``trionet._cli``. The virtual network stands beside the stack, so the stack
  can be tested on it.

``trionet`` itself must not import ``trionet.testing`` when it is imported
(that, with ``from .. import _publish``, would be a circle at import time).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import trionet.testing

PACKAGE = "trionet.testing"
TESTING = Path(trionet.testing.__file__).parent
ALLOWED_OUTSIDE = ("trionet._sansio",)
ALLOWED_FROM_ROOT = {"_publish"}


def package_modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (``__init__`` included)."""
    found = {}
    for path in sorted(TESTING.glob("*.py")):
        name = PACKAGE if path.stem == "__init__" else f"{PACKAGE}.{path.stem}"
        found[name] = path
    return found


def imports_of(module: str, path: Path) -> Iterator[tuple[str, list[str], int]]:
    """(absolute module, imported names, line) for every import anywhere in the file."""
    package = module if path.stem == "__init__" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            yield target, [alias.name for alias in node.names], node.lineno


def import_graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (``from . import x`` counts as ``x``)."""
    modules = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for target, names, _line in imports_of(name, path):
            if target == PACKAGE:
                # `from . import _vnet` imports a module; `from . import X` a name.
                edges = {f"{PACKAGE}.{n}" for n in names if f"{PACKAGE}.{n}" in modules}
                graph[name] |= edges or {PACKAGE}
            elif target in modules:
                graph[name].add(target)
        graph[name].discard(name)
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle (first node repeated at the end) if the graph has one, else None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                return [*path[path.index(nxt) :], nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def short(name: str) -> str:
    return name.removeprefix(PACKAGE + ".")


def test_the_package_has_the_virtual_network_modules() -> None:
    names = {path.stem for path in package_modules().values()}
    assert {"__init__", "_vnet", "_vhost", "_vsocket", "_vtcp", "_vudp", "_vtypes"} <= names
    assert import_graph()[f"{PACKAGE}._vnet"], "the parser found no imports at all"


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert find_cycle(graph) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_testing_modules_import_each_other_without_cycles() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, "import cycle in trionet/testing: " + " -> ".join(map(short, cycle or []))


@pytest.mark.parametrize("module", sorted(package_modules()), ids=short)
def test_testing_imports_nothing_from_trionet_but_sansio(module: str) -> None:
    for target, names, line in imports_of(module, package_modules()[module]):
        where = f"{short(module)}.py:{line} imports {target}"
        if target == "trionet":
            assert set(names) <= ALLOWED_FROM_ROOT, f"{where} {names}"
        elif target.startswith("trionet.") and not target.startswith(PACKAGE):
            assert target.startswith(ALLOWED_OUTSIDE), f"{where}: only trionet._sansio is allowed"


def test_importing_trionet_does_not_import_trionet_testing() -> None:
    code = "import sys, trionet; print('trionet.testing' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
