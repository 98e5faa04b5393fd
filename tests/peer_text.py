"""Hostile peer text and the check that none of it reaches a log or a terminal raw.

Shared by the escaping tests: ``test_escaping.py`` (through the public API),
``test_cli.py`` (the CLI's print mode) and ``test_sansio_internals.py``
(``escape_text`` itself).
"""

from __future__ import annotations

import unicodedata

HOSTILE_NAME = "evil\nCRITICAL forged line \x1b[2K\x1b]0;pwned\x07\u202e"
BIDI_CONTROLS = {chr(c) for c in (*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F)}


def unsafe_chars(text: str) -> list[str]:
    """The characters of ``text`` that must not reach a log or a terminal."""
    return [char for char in text
            if unicodedata.category(char) in ("Cc", "Cs", "Cf", "Zl", "Zp") or char in BIDI_CONTROLS]
