"""Every event trionet reports is listed, with its details, in docs/reference/observing.rst."""

from __future__ import annotations

import re
from pathlib import Path

import trionet

PACKAGE = Path(trionet.__file__).parent
PAGE = PACKAGE.parent / "docs" / "reference" / "observing.rst"
EMIT = re.compile(r"""emit(?:_at)?\(\s*[\w.]+,\s*(?:[\w.]+,\s*)?f?"([^"]+)"(.*?)\)""", re.S)
DETAIL = re.compile(r"(\w+)=")


def emitted() -> dict[str, set[str]]:
    """Each kind the library emits, and the names of its details."""
    kinds: dict[str, set[str]] = {}
    for path in PACKAGE.rglob("*.py"):
        if "testing" in path.parts:
            continue  # the virtual network's trace is another vocabulary
        for match in EMIT.finditer(path.read_text()):
            kind, arguments = match.groups()
            details = set(DETAIL.findall(arguments))
            for prefix in (("tcp", "unix") if kind.startswith("{self._kind}") else ("",)):
                kinds.setdefault(kind.replace("{self._kind}", prefix), set()).update(details)
    return kinds


def test_every_emitted_event_and_detail_is_in_the_reference() -> None:
    page = PAGE.read_text()
    kinds = emitted()
    assert len(kinds) > 30  # the scan found the emits
    for kind, details in sorted(kinds.items()):
        documented = kind if not kind.startswith("unix.") else "tcp." + kind.removeprefix("unix.")
        row = re.search(rf"^``{re.escape(documented)}`` {{2,}}(.*?)(?=^``|^=)", page, re.M | re.S)
        assert row is not None, f"{kind} is not in {PAGE.name}"
        for detail in details:
            assert f"``{detail}``" in row.group(1), f"{kind}: detail {detail!r} is not documented"
