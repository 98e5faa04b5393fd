"""The installed package: the trionet command, the metadata, the pytest plugin's entry point."""

from __future__ import annotations

import subprocess
import sys
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
    assert "demo" in result.stdout
    assert "serve" in result.stdout


def test_the_metadata_names_every_python_version_ci_can_test() -> None:
    classifiers = metadata("trionet").get_all("Classifier") or []
    prefix = "Programming Language :: Python :: 3."
    versions = {c.rsplit(" :: ", 1)[1] for c in classifiers if c.startswith(prefix)}
    assert versions == {"3.10", "3.11", "3.12", "3.13"}
    assert metadata("trionet")["Requires-Python"] == ">=3.10"
