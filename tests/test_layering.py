"""trionet's layers, checked on the source: no import circle, no import from a layer above.

Every import statement counts: at module level, lazy ones inside functions, and
the typing-only ones under ``if TYPE_CHECKING:``. The files are parsed (``ast``),
not imported, so a lazy import is seen as well as an eager one. Where a lower
module needs to type against a higher one, it defines a Protocol and is handed
the object (``ServerControl`` in ``_endpoints/server_base.py``, ``AcceptingServer``
in ``_endpoints/accept.py``).

The modules checked are every ``.py`` file under ``trionet/`` except those of
``trionet/testing/`` (``tests/test_testing_layering.py`` checks that package;
here it is only a target that the CLI may import). An import names a module of
trionet, or a name in one: ``from .x import y`` is an import of ``x.y`` when
``x/y.py`` exists, else of ``x``.

Rules:

1. The import graph among these modules has no circle (of any length).
2. Each module belongs to a layer, and imports only from the layers listed:

   ==========================  =================================================
   module                      may import (trionet modules only)
   ==========================  =================================================
   ``trionet._sansio.*``       ``trionet._sansio.*``
   ``trionet.errors``          ``trionet._sansio.*``
   ``trionet._adapters.*``     ``trionet._sansio.*``, ``trionet.errors``,
                               ``trionet._adapters.*``
   ``trionet._endpoints.*``    the above and ``trionet._endpoints.*``
   ``trionet`` (the API,       the above (never ``trionet._cli`` nor
   ``__init__.py``)            ``trionet.testing``)
   ``trionet._cli.*`` and      ``trionet`` (the public API), ``trionet.errors``,
   ``trionet.__main__``        ``trionet.testing`` and ``trionet._cli.*``; from
                               the private layers (``_sansio``, ``_adapters``,
                               ``_endpoints``) only the names in
                               ``CLI_PRIVATE_HELPERS``, each imported by name
                               (``from trionet._sansio.escape import
                               escape_text``), never a module whole
   ==========================  =================================================

   A module directly under ``trionet/`` other than ``__init__.py``,
   ``__main__.py`` and ``errors.py`` belongs to no layer, and fails.
3. The sans-IO core does no I/O: no ``_sansio`` module imports trio, anyio,
   asyncio, selectors, select, threading or outcome; the ``socket`` module may
   only lend named constants (``from socket import AF_INET``), never be imported
   whole; and no relative import leaves the package (``from ..x``).
"""

from __future__ import annotations

import ast
import functools
from collections.abc import Iterator
from pathlib import Path

import pytest

import trionet

ROOT = Path(trionet.__file__).parent
SANSIO = ROOT / "_sansio"
FORBIDDEN_MODULES = {"trio", "anyio", "asyncio", "selectors", "select", "threading", "outcome"}
# The socket module may lend constants (AF_INET...) but nothing that does I/O.
SOCKET_NAMES_ALLOWED = {"AF_INET", "AF_INET6", "AF_UNIX", "AF_UNSPEC", "SOCK_STREAM", "SOCK_DGRAM",
                        "AddressFamily", "SocketKind"}

# What each layer may import from (its own layer included where listed).
ALLOWED_LAYERS: dict[str, set[str]] = {
    "sansio": {"sansio"},
    "errors": {"sansio"},
    "adapters": {"sansio", "errors", "adapters"},
    "endpoints": {"sansio", "errors", "adapters", "endpoints"},
    "api": {"sansio", "errors", "adapters", "endpoints"},
    "cli": {"api", "errors", "testing", "cli"},
}
PRIVATE_LAYERS = {"sansio", "adapters", "endpoints"}
# Private helpers the CLI uses that are not public API (yet). Each one here is
# a reason the CLI cannot be written on the public API alone.
CLI_PRIVATE_HELPERS = {
    "normalize_host",  # _sansio/hostnames.py: the CLI shows the name it looks up
    "validate_port",  # _sansio/addresses.py: the --port argument type
    "escape_text",  # _sansio/escape.py: peer text on the terminal
    "SourceRateLimit",  # _sansio/ratelimit.py: the UDP echo guard
    "is_local_address",  # _adapters/udp_socket.py: the UDP echo guard
}


Import = tuple[str, list[str], int]  # (absolute module, names imported from it, line)


def module_files() -> dict[str, Path]:
    """Dotted name -> file for every module of trionet outside trionet/testing/."""
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[1:2] == ["testing"]:
            continue
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


@functools.cache
def all_module_names() -> frozenset[str]:
    """Every module of the package, trionet.testing's included (as import targets)."""
    names = set()
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names.add(".".join(parts))
    return frozenset(names)


def imports_in_source(
    source: str, module: str, *, is_package: bool, known: frozenset[str] | set[str]
) -> Iterator[Import]:
    """Every trionet import in ``source`` (the text of ``module``), anywhere in the file.

    Relative imports are made absolute. ``from x import y`` yields ``x.y`` with no
    names when ``x.y`` is a module in ``known``, else ``x`` with the name ``y``.
    """
    package = module if is_package else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == "trionet":
                    yield alias.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            if target.split(".")[0] != "trionet":
                continue
            names = []
            for alias in node.names:
                submodule = f"{target}.{alias.name}"
                if submodule in known:
                    yield submodule, [], node.lineno
                else:
                    names.append(alias.name)
            if names:
                yield target, names, node.lineno


def imports_of(module: str, path: Path) -> list[Import]:
    return list(imports_in_source(path.read_text(), module, is_package=path.stem == "__init__",
                                  known=all_module_names()))


def import_graph() -> dict[str, set[str]]:
    """Module -> the trionet modules it imports (every import statement counts)."""
    return {
        module: {target for target, _, _ in imports_of(module, path)}
        for module, path in module_files().items()
    }


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One circle (``[a, b, ..., a]``) for each strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []

    def visit(node: str) -> None:  # Tarjan's algorithm; the graph is small
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for succ in sorted(graph.get(node, ())):
            if succ not in graph:
                continue
            if succ not in index:
                visit(succ)
                low[node] = min(low[node], low[succ])
            elif succ in on_stack:
                low[node] = min(low[node], index[succ])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1 or node in graph[node]:
                components.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    cycles = []
    for component in components:
        start = min(component)
        # Breadth-first within the component, from start back to start.
        paths = {succ: [start, succ] for succ in sorted(graph[start]) if succ in component}
        queue = list(paths)
        while start not in paths:
            node = queue.pop(0)
            for succ in sorted(graph[node]):
                if succ in component and succ not in paths:
                    paths[succ] = [*paths[node], succ]
                    queue.append(succ)
        cycles.append(paths[start])
    return cycles


def layer_of(module: str) -> str | None:
    """The layer of a trionet module, or ``None`` if it belongs to none."""
    if module == "trionet":
        return "api"
    if module == "trionet.errors":
        return "errors"
    if module == "trionet.__main__":
        return "cli"
    packages = {"_sansio": "sansio", "_adapters": "adapters", "_endpoints": "endpoints",
                "_cli": "cli", "testing": "testing"}
    parts = module.split(".")
    return packages.get(parts[1]) if parts[0] == "trionet" and len(parts) > 1 else None


def layering_violations(module: str, imports: list[Import]) -> list[str]:
    """What ``module`` imports against the layer rules (see the module docstring)."""
    layer = layer_of(module)
    if layer is None or layer == "testing":
        return [f"{module} belongs to no layer (put it in one of the layer packages)"]
    allowed = ALLOWED_LAYERS[layer]
    problems = []
    for target, names, line in imports:
        target_layer = layer_of(target)
        if target_layer in allowed:
            continue
        if layer == "cli" and target_layer in PRIVATE_LAYERS and names:
            unlisted = [name for name in names if name not in CLI_PRIVATE_HELPERS]
            if not unlisted:
                continue
            problems.append(f"line {line}: imports {', '.join(unlisted)} from {target} "
                            f"(the CLI may use the public API and CLI_PRIVATE_HELPERS only)")
            continue
        what = f"{', '.join(names)} from {target}" if names else target
        problems.append(f"line {line}: imports {what} (layer {target_layer or 'none'}; "
                        f"layer {layer} may import from: {', '.join(sorted(allowed))})")
    return problems


# ---------------------------------------------------------------- the checker


def test_the_parser_sees_lazy_typing_only_and_relative_imports() -> None:
    source = (
        "from __future__ import annotations\n"
        "from typing import TYPE_CHECKING\n"
        "import trio\n"
        "from .. import errors, Address\n"
        "from .sibling import thing\n"
        "if TYPE_CHECKING:\n"
        "    from .._endpoints.server_core import ServerCore\n"
        "def f():\n"
        "    import trionet._cli.main\n"
        "    from . import sibling\n"
    )
    known = {"trionet", "trionet.errors", "trionet._adapters.sibling", "trionet._adapters.here",
             "trionet._endpoints.server_core", "trionet._cli.main"}
    found = sorted(imports_in_source(source, "trionet._adapters.here", is_package=False, known=known))
    assert found == [
        ("trionet", ["Address"], 4),
        ("trionet._adapters.sibling", [], 10),
        ("trionet._adapters.sibling", ["thing"], 5),
        ("trionet._cli.main", [], 9),
        ("trionet._endpoints.server_core", ["ServerCore"], 7),
        ("trionet.errors", [], 4),
    ]


def test_the_cycle_finder_reports_a_circle_of_any_length() -> None:
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"a"}}) == [["a", "a"]]


def test_the_layer_rules_refuse_an_upward_import() -> None:
    assert layering_violations("trionet._adapters.x", [("trionet._endpoints.server_base", ["f"], 3)])
    assert layering_violations("trionet._sansio.x", [("trionet.errors", ["E"], 1)])
    assert layering_violations("trionet", [("trionet._cli.main", [], 1)])
    assert layering_violations("trionet._cli.x", [("trionet._sansio.escape", [], 1)])
    assert layering_violations("trionet._cli.x", [("trionet._sansio.escape", ["secret"], 1)])
    assert not layering_violations("trionet._cli.x", [("trionet._sansio.escape", ["escape_text"], 1)])
    assert layering_violations("trionet._stray", [])


def test_the_graph_has_the_modules_and_imports_it_should() -> None:
    graph = import_graph()
    assert {"trionet", "trionet.errors", "trionet.__main__", "trionet._sansio.codecs",
            "trionet._endpoints.tcp_server", "trionet._cli.main"} <= set(graph)
    assert not any(module.startswith("trionet.testing") for module in graph)
    assert "trionet._endpoints.connection" in graph["trionet._endpoints.tcp_server"]
    assert "trionet._cli.commands" in graph["trionet._cli.main"]  # a lazy import
    assert "trionet.testing" in graph["trionet._cli.demo"]  # a lazy import


# ------------------------------------------------------------------ the rules


def test_no_import_circle() -> None:
    cycles = find_cycles(import_graph())
    assert not cycles, "import circles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)


@pytest.mark.parametrize(
    ("module", "path"), sorted(module_files().items()), ids=lambda value: str(value)
)
def test_module_imports_only_from_its_layer_or_below(module: str, path: Path) -> None:
    problems = layering_violations(module, imports_of(module, path))
    assert not problems, f"{path.relative_to(ROOT.parent)}:\n" + "\n".join(problems)


def test_the_sansio_package_has_modules_to_check() -> None:
    names = {path.stem for path in sansio_modules()}
    assert {"codecs", "errors"} <= names


def sansio_modules() -> list[Path]:
    return sorted(SANSIO.glob("*.py"))


def raw_imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in a file, as written."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, [alias.name for alias in node.names]))
    return found


@pytest.mark.parametrize("path", sansio_modules(), ids=lambda path: path.name)
def test_sansio_module_imports_no_io(path: Path) -> None:
    for module, names in raw_imports_of(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_MODULES, f"{path.name} imports {module}"
        if top == "socket":
            assert names, f"{path.name} imports the socket module whole"
            assert set(names) <= SOCKET_NAMES_ALLOWED, (
                f"{path.name} imports socket I/O: {module} {names} (only constants are allowed)"
            )
        if module.startswith(".."):
            raise AssertionError(f"{path.name} reaches outside the sans-IO package: {module}")


def test_no_module_is_over_500_lines_and_few_private_modules_sit_at_the_top() -> None:
    # Issue 16's bounds: a module a reader can hold in mind, and the layers in
    # the tree (packages), not in a flat directory.
    package = Path(trionet.__file__).parent
    long = {str(path.relative_to(package)): count for path in package.rglob("*.py")
            if (count := len(path.read_text().splitlines())) > 500}
    assert long == {}
    top = [path.name for path in package.glob("_*.py") if path.name not in ("__init__.py", "__main__.py")]
    assert len(top) <= 8, top
