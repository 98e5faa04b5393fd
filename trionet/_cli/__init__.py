"""``python -m trionet``: the command-line tool, built on trionet's public API."""
