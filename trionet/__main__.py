"""``python -m trionet``: see :mod:`trionet._cli.main`."""

from __future__ import annotations

from ._cli.main import console_main

if __name__ == "__main__":
    console_main()
