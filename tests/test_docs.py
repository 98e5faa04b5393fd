"""The documentation builds offline with warnings as errors, its doctests pass,
and its reference covers every public name.

Both Sphinx builders run once per session, side by side, as subprocesses (as CI
and a reader would run them), each into a temporary directory.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import pytest

import trionet
import trionet.testing

DOCS = Path(__file__).resolve().parent.parent / "docs"
BUILD_SECONDS = 60


@dataclass
class Build:
    output: Path
    returncode: int
    log: str
    seconds: float


@pytest.fixture(scope="module")
def builds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Build]:
    root = tmp_path_factory.mktemp("docs")
    started = time.monotonic()
    processes = {
        builder: subprocess.Popen(
            [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", builder,
             "-d", str(root / f"doctrees-{builder}"), str(DOCS), str(root / builder)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for builder in ("html", "doctest")
    }
    results = {}
    try:
        for builder, process in processes.items():
            log, _ = process.communicate(timeout=2 * BUILD_SECONDS)
            results[builder] = Build(root / builder, process.returncode, log,
                                     time.monotonic() - started)
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.kill()
                process.wait()
    return results


def test_the_html_docs_build_with_warnings_as_errors_in_under_a_minute(builds: dict[str, Build]) -> None:
    html = builds["html"]
    assert html.returncode == 0, html.log
    assert "WARNING" not in html.log, html.log
    assert (html.output / "index.html").exists()
    assert html.seconds < BUILD_SECONDS


def test_every_doctest_in_the_docs_and_the_docstrings_passes(builds: dict[str, Build]) -> None:
    doctest = builds["doctest"]
    assert doctest.returncode == 0, doctest.log
    summary = (doctest.output / "output.txt").read_text().split("Doctest summary")[-1]
    assert "0 failures in tests" in summary
    tests = int(summary.split("tests")[0].split()[-1])
    assert tests >= 40  # the docs' own examples and the docstrings' (codecs, addresses, ...)


def reference_ids(html: Path) -> set[str]:
    ids: set[str] = set()
    for page in (html / "reference").glob("*.html"):
        ids.update(re.findall(r'<dt class="sig sig-object py" id="([\w.]+)">', page.read_text()))
    return ids


@pytest.mark.parametrize(
    ("module", "names"),
    [(trionet, trionet.__all__), (trionet.testing, trionet.testing.__all__)],
    ids=["trionet", "trionet.testing"],
)
def test_every_public_name_is_in_the_reference(
    builds: dict[str, Build], module: ModuleType, names: list[str]
) -> None:
    assert builds["html"].returncode == 0, builds["html"].log
    documented = reference_ids(builds["html"].output)
    prefix = module.__name__
    missing = [name for name in names if f"{prefix}.{name}" not in documented]
    assert missing == [], f"not in docs/reference: {missing}"


def test_the_tutorial_steps_and_how_tos_are_all_reachable(builds: dict[str, Build]) -> None:
    html = builds["html"].output
    for page in ("tutorial/index", "tutorial/echo-server", "tutorial/starting",
                 "tutorial/many-clients", "tutorial/timeouts", "tutorial/checkpoints",
                 "tutorial/chat", "tutorial/udp", "tutorial/happy-eyeballs",
                 "howto/shutdown", "howto/tls", "howto/limits", "howto/codecs",
                 "howto/virtual-network", "howto/interop", "design/architecture",
                 "design/cancellation", "design/rfcs",
                 "cli"):
        assert (html / f"{page}.html").exists(), page
    index = (html / "index.html").read_text()
    assert "tutorial/index.html" in index
    assert "reference/index.html" in index


# The tutorial's programs, as the built pages show them (issue 17.1).
WHOLE_PROGRAMS = {
    "echo-server": "examples/tutorial/echo_server.py",
    "starting": "examples/tutorial/startable.py",
    "many-clients": "examples/tutorial/many_clients.py",
    "timeouts": "examples/tutorial/timeouts.py",
    "chat": "examples/chat_server.py",
    "udp": "examples/tutorial/lossy_requests.py",
    "happy-eyeballs": "examples/happy_eyeballs.py",
}
CAPTIONED_BLOCK = re.compile(
    r'<span class="caption-text">([^<]+), the whole program</span>.*?<pre>(.*?)</pre>', re.S
)


def page_program(html: Path, page: str) -> tuple[str, str]:
    """The path and the text of the whole program a tutorial page shows, from its HTML."""
    import html as html_module

    found = CAPTIONED_BLOCK.findall((html / "tutorial" / f"{page}.html").read_text())
    assert len(found) == 1, f"tutorial/{page}: {len(found)} whole programs on the page"
    ((path, block),) = found
    return path, html_module.unescape(re.sub(r"<[^>]+>", "", block))


@pytest.mark.parametrize("page", sorted(WHOLE_PROGRAMS))
def test_each_tutorial_page_shows_its_whole_program_as_it_runs_in_the_tests(
    builds: dict[str, Build], page: str
) -> None:
    # Copied from the built page, the program is the file that
    # tests/test_examples.py runs to each page's documented output, byte for
    # byte: the page cannot show an excerpt that fails when copied, nor drift.
    path, program = page_program(builds["html"].output, page)
    assert path == WHOLE_PROGRAMS[page]
    source = (DOCS.parent / path).read_text()
    assert program == source
    compile(program, path, "exec")  # whole: it parses on its own
    assert "trio.run(" in program
    assert "\nimport " in program


async def test_the_startable_step_runs_from_its_page_to_its_documented_output(
    builds: dict[str, Build], tmp_path: Path
) -> None:
    # The one tutorial program that needs nothing else running: copy it from
    # the page, run it, and compare with the console block the page shows.
    import trio

    _, program = page_program(builds["html"].output, "starting")
    copied = tmp_path / "startable.py"
    copied.write_text(program)
    with trio.fail_after(30):
        result = await trio.run_process([sys.executable, str(copied)], capture_stdout=True,
                                        capture_stderr=True, check=False)
    assert result.returncode == 0, result.stderr.decode()
    page = (DOCS / "tutorial" / "starting.rst").read_text()
    shown = page.split("$ python examples/tutorial/startable.py\n", 1)[1].split("\n\n", 1)[0]
    assert result.stdout.decode().splitlines() == [line.strip() for line in shown.splitlines()]
