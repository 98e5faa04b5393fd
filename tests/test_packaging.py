"""The installed package: the trionet command, the metadata, the pytest plugin's entry point."""

from __future__ import annotations

import subprocess
import sys
import tarfile
import zipfile
from importlib.metadata import entry_points, metadata
from pathlib import Path

import pytest


def test_installing_gives_a_trionet_command_that_is_python_m_trionet() -> None:
    (script,) = [point for point in entry_points(group="console_scripts") if point.name == "trionet"]
    assert script.value == "trionet._cli.main:console_main"
    command = Path(sys.executable).parent / "trionet"
    if not command.exists():
        pytest.skip(f"not installed in {command.parent} (an interpreter outside the venv)")
    result = subprocess.run([str(command), "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage: trionet ")  # not "python -m trionet"
    assert "demo" in result.stdout
    assert "serve" in result.stdout


def test_the_metadata_names_every_python_version_ci_can_test() -> None:
    classifiers = metadata("trionet").get_all("Classifier") or []
    prefix = "Programming Language :: Python :: 3."
    versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith(prefix)}
    assert versions == {"3.10", "3.11", "3.12", "3.13"}
    assert metadata("trionet")["Requires-Python"] == ">=3.10"



@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``python -m build`` of a copy of the tracked files: the sdist, and the wheel built from it."""
    root = Path(__file__).resolve().parent.parent
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, timeout=60)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: which files are the project's is unknown")
    source = tmp_path_factory.mktemp("source")
    for name in tracked.stdout.decode().split("\0"):
        if name and (root / name).is_file():
            (source / name).parent.mkdir(parents=True, exist_ok=True)
            (source / name).write_bytes((root / name).read_bytes())
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run(
        [sys.executable, "-m", "build", "--no-isolation", "--outdir", str(out), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return out


def test_the_sdist_holds_the_library_and_no_tests_that_could_not_run(dist: Path) -> None:
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        names = {name.split("/", 1)[1] for name in archive.getnames() if "/" in name}
    assert {"pyproject.toml", "README.md", "LICENSE", "trionet/__init__.py", "trionet/py.typed"} <= names
    left_out = ("tests/", "docs/", "examples/", "benchmarks/", ".ci/")
    assert not [name for name in names if name.startswith(left_out)]


def test_the_wheel_built_from_the_sdist_has_the_marker_the_command_and_the_plugin(dist: Path) -> None:
    (wheel_path,) = dist.glob("*.whl")
    with zipfile.ZipFile(wheel_path) as wheel:
        names = set(wheel.namelist())
        (points,) = [name for name in names if name.endswith(".dist-info/entry_points.txt")]
        entry_points_text = wheel.read(points).decode()
    assert "trionet/py.typed" in names
    assert not [name for name in names if name.startswith(("tests/", "examples/", "benchmarks/"))]
    assert "trionet = trionet._cli.main:console_main" in entry_points_text
    assert "trionet = trionet.testing.pytest_plugin" in entry_points_text
