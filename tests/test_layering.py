"""The sans-IO core stays free of I/O: no trio, no event loops, no socket calls."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import trionet

SANSIO = Path(trionet.__file__).parent / "_sansio"
FORBIDDEN_MODULES = {"trio", "anyio", "asyncio", "selectors", "select", "threading", "outcome"}
# The socket module may lend constants (AF_INET...) but nothing that does I/O.
SOCKET_NAMES_ALLOWED = {"AF_INET", "AF_INET6", "AF_UNIX", "AF_UNSPEC", "SOCK_STREAM", "SOCK_DGRAM",
                        "AddressFamily", "SocketKind"}


def sansio_modules() -> list[Path]:
    return sorted(SANSIO.glob("*.py"))


def imports_of(path: Path) -> list[tuple[str, list[str]]]:
    """(module, imported names) for every import statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            module = "." * node.level + (node.module or "")
            found.append((module, [alias.name for alias in node.names]))
    return found


def test_the_sansio_package_has_modules_to_check() -> None:
    names = {path.stem for path in sansio_modules()}
    assert {"codecs", "errors"} <= names


@pytest.mark.parametrize("path", sansio_modules(), ids=lambda path: path.name)
def test_sansio_module_imports_no_io(path: Path) -> None:
    for module, names in imports_of(path):
        top = module.split(".")[0]
        assert top not in FORBIDDEN_MODULES, f"{path.name} imports {module}"
        if top == "socket":
            assert names, f"{path.name} imports the socket module whole"
            assert set(names) <= SOCKET_NAMES_ALLOWED, (
                f"{path.name} imports socket I/O: {module} {names} (only constants are allowed)"
            )
        if module.startswith(".."):
            raise AssertionError(f"{path.name} reaches outside the sans-IO package: {module}")
