"""README.md: its example runs, and its test command is the one .ci/run runs."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
README = (ROOT / "README.md").read_text()


def test_the_readme_example_runs_and_prints_the_echo() -> None:
    (example,) = re.findall(r"^```python\n(.*?)^```$", README, flags=re.S | re.M)
    result = subprocess.run(
        [sys.executable, "-c", example], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "b'hello'\n"


def test_the_readme_opens_with_the_demo_and_test_commands() -> None:
    commands = re.findall(r"^```\n(.*?)\n```$", README, flags=re.S | re.M)
    assert commands[0].endswith("python -m trionet demo")
    assert commands[1].endswith("python -m pytest -q")
    assert "<!-- test-command -->\n```\n" + commands[1] in README
    assert "test-command" in (ROOT / ".ci" / "run").read_text()
