"""Run the examples in a private module's docstrings, its public classes' included.

``doctest.testmod`` only looks into the classes and functions whose
``__module__`` is the module. trionet's public names report the module users
import them from (``trionet.Address``, as trio's names do), so testmod would skip
them; this runs the examples of everything the module's source defines.
"""

from __future__ import annotations

import ast
import doctest
from pathlib import Path
from types import ModuleType
from typing import Any


def _defined_names(module: ModuleType) -> set[str]:
    tree = ast.parse(Path(module.__file__ or "").read_text(encoding="utf-8"))
    kinds = (ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)
    return {node.name for node in tree.body if isinstance(node, kinds)}


def run_docstring_examples(
    module: ModuleType, *, extraglobs: dict[str, Any] | None = None, optionflags: int = 0
) -> doctest.TestResults:
    """Like ``doctest.testmod(module, extraglobs=..., optionflags=...)``, public names included."""
    globs = {**vars(module), **(extraglobs or {})}
    finder = doctest.DocTestFinder()
    # The module's docstring and what still reports it as its module...
    tests = finder.find(module, module.__name__, globs=globs)
    # ... and what it defines that reports a public module (module=False: no
    # check of __module__, for the methods of a public class too).
    for name in sorted(_defined_names(module)):
        obj = vars(module).get(name)
        if getattr(obj, "__qualname__", None) == name and obj.__module__ != module.__name__:
            tests += finder.find(obj, f"{module.__name__}.{name}", module=False, globs=globs)
    runner = doctest.DocTestRunner(optionflags=optionflags)
    for test in sorted(tests):
        runner.run(test)
    return runner.summarize(verbose=False)
