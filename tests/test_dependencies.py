"""The declared dependencies are the ones trionet imports; CI tests the oldest trio and Pythons allowed."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

import trionet

ROOT = Path(trionet.__file__).parent.parent
PACKAGE = Path(trionet.__file__).parent
# The pytest plugin (pytest11 entry point) imports pytest, which only pytest loads it.
PLUGIN = PACKAGE / "testing" / "pytest_plugin.py"


def declared() -> dict[str, str]:
    """The runtime dependencies in pyproject.toml: name -> version specifier."""
    tomllib = pytest.importorskip("tomllib")
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    found = {}
    for requirement in project["dependencies"]:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*(.*)", requirement)
        assert match is not None, requirement
        found[match[1].lower()] = match[2]
    return found


def _runtime_imports(node: ast.AST, names: set[str]) -> None:
    """Collect imported top-level modules, skipping ``if TYPE_CHECKING:`` blocks (typing only)."""
    if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
        for child in node.orelse:
            _runtime_imports(child, names)
        return
    if isinstance(node, ast.Import):
        names.update(alias.name.split(".")[0] for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
        names.add(node.module.split(".")[0])
    for child in ast.iter_child_nodes(node):
        _runtime_imports(child, names)


def imported() -> set[str]:
    """The top-level modules trionet's own code imports at run time, outside the standard library."""
    names: set[str] = set()
    for path in PACKAGE.rglob("*.py"):
        if path == PLUGIN:
            continue  # loaded by pytest only: pytest is there by definition
        _runtime_imports(ast.parse(path.read_text()), names)
    return {name for name in names if name not in sys.stdlib_module_names and name != "trionet"}


# Imports that only an optional feature makes, lazily: module -> (extra, distribution).
OPTIONAL_IMPORTS = {"dns": ("dns", "dnspython")}


def test_every_declared_dependency_is_imported_and_every_import_declared() -> None:
    assert set(declared()) == imported() - set(OPTIONAL_IMPORTS)


def test_every_optional_import_is_in_its_extra() -> None:
    tomllib = pytest.importorskip("tomllib")
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(OPTIONAL_IMPORTS) <= imported()
    for extra, distribution in OPTIONAL_IMPORTS.values():
        assert any(re.match(rf"{distribution}\b", requirement) for requirement in extras[extra])
        assert any(re.match(rf"{distribution}\b", requirement) for requirement in extras["test"])


def test_ci_tests_the_oldest_trio_that_the_bound_allows() -> None:
    bound = declared()["trio"]
    assert re.fullmatch(r">=\d+\.\d+", bound), f"trio's bound is not a plain lower bound: {bound!r}"
    script = (ROOT / ".ci" / "run").read_text()
    # .ci/run reads the bound from pyproject.toml and installs exactly that release series.
    assert 'oldest_trio=$(sed -n \'s/^ *"trio>=' in script
    assert '"trio==$oldest_trio.*"' in script
    assert "compat_setup oldest \"$oldest_python\" \"trio==$oldest_trio.*\"" in script
    # Run the script's own line: it must give the bound alone (an extra asking
    # for a newer trio once made it "0.27\n0.30", which pip refused).
    (line,) = [text for text in script.splitlines() if text.startswith("oldest_trio=")]
    found = subprocess.run(
        ["bash", "-c", f"{line}\nprintf %s \"$oldest_trio\""], cwd=ROOT, capture_output=True,
        text=True, timeout=30, check=True,
    ).stdout
    assert found == bound.removeprefix(">=")
    assert "compat_test oldest" in script


def test_ci_tests_the_oldest_and_newest_python_that_the_metadata_claims() -> None:
    script = (ROOT / ".ci" / "run").read_text()
    # Both read from pyproject.toml: requires-python and the newest classifier.
    assert "oldest_python=$(sed -n 's/^requires-python = " in script
    assert "Programming Language :: Python :: " in script
    assert 'compat_setup newest "$newest_python" ""' in script
    assert "compat_test newest" in script


def test_the_pytest_plugin_imports_only_pytest_trio_and_trionet() -> None:
    names: set[str] = set()
    _runtime_imports(ast.parse(PLUGIN.read_text()), names)
    assert {name for name in names if name not in sys.stdlib_module_names} == {"pytest", "trio"}


def test_with_a_trio_too_old_for_dnspython_the_dns_backend_says_what_to_install() -> None:
    dns_backend = pytest.importorskip("dns.asyncbackend")
    try:
        dns_backend.get_backend("trio")
    except ImportError:
        pass
    else:
        pytest.skip("this trio is new enough for dnspython's trio backend (the usual case)")
    with pytest.raises(ImportError, match=r"trio>=0\.30"):
        trionet.DnsPythonBackend(nameservers=["127.0.0.1"])
