"""Peer-controlled text made safe for logs and terminals (sans-IO).

A peer chooses some of the text trionet shows: a Unix client's bound socket
name, the bytes of a message that ``python -m trionet serve print`` prints, an
exception message built from what it sent. Written raw, that text can forge a
log line (``"\\nCRITICAL ..."``), rewrite the operator's terminal (``ESC[2K``
erases a line, ``ESC]0;...BEL`` sets the window title), reorder what a reader
sees (the bidi overrides U+202A-U+202E and U+2066-U+2069, "Trojan Source",
CVE-2021-42574), or make a record vanish from a UTF-8 log file (a lone
surrogate from a name that is not UTF-8 cannot be encoded, and ``logging``
drops the record). :func:`escape_text` is the one function every such path
goes through.

The rule is Python's own :meth:`str.isprintable`: a character that is
printable passes unchanged (letters of any script, punctuation, the space,
emoji), and every other one is shown as a Python-style escape: the C0 and C1
controls and DEL (``\\n``, ``\\x1b``, ``\\x85``), lone surrogates (``\\udcff``),
format characters (``\\u202e``, ``\\u200b``), line and paragraph separators
(``\\u2028``), private-use and unassigned code points, and spaces other than
U+0020. The result is one line of printable text.

The backslash itself is printable and is not escaped, so that ordinary text
(a Windows path, a regular expression) passes unchanged. The escaping is
therefore for display, not a reversible encoding: a peer can write the six
characters ``\\x1b``, which look like an escaped ESC, but never an ESC.
"""

from __future__ import annotations

from typing import Final

__all__ = ["escape_text"]

# The escapes Python's repr() uses for these controls; the others are \xNN.
_NAMED: Final = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}
# Lone surrogates U+DC80-U+DCFF stand for the bytes 0x80-0xFF that
# "surrogateescape" could not decode.
_SURROGATE_BYTES: Final = range(0xDC80, 0xDD00)


def _escape_char(char: str) -> str:
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    if code < 0x100:
        return f"\\x{code:02x}"
    if code < 0x10000:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def _escape_decoded_char(char: str) -> str:
    # For text decoded from bytes: an undecodable byte shows as \xNN, as in a
    # bytes repr; a decoded non-printable character always takes the \u form
    # (U+0085 is \u0085), so that it cannot be confused with the byte 0x85.
    code = ord(char)
    if code in _SURROGATE_BYTES:
        return f"\\x{code - 0xDC00:02x}"
    if 0x80 <= code < 0x100:
        return f"\\u{code:04x}"
    return _escape_char(char)


def escape_text(text: str | bytes | bytearray | memoryview) -> str:
    """``text`` as one line of printable text: non-printable characters shown as escapes.

    Printable text (as :meth:`str.isprintable` defines it) is returned
    unchanged; see the module documentation for what is escaped and how.

    Args:
      text: A string, or bytes. Bytes are decoded as UTF-8 where they are
          valid, and every byte that is not is shown as ``\\xNN`` (as in a
          bytes repr, without the ``b''``).

    Returns:
      Text for which :meth:`str.isprintable` is true: it contains no control,
      format, surrogate or separator character.

    Raises:
      TypeError: ``text`` is neither text nor bytes.
    """
    if isinstance(text, str):
        if text.isprintable():  # the common case, at C speed
            return text
        escape = _escape_char
    elif isinstance(text, (bytes, bytearray, memoryview)):
        text = bytes(text).decode("utf-8", "surrogateescape")
        if text.isprintable():
            return text
        escape = _escape_decoded_char
    else:
        raise TypeError(f"escape_text() takes str or bytes, not {type(text).__name__}")
    return "".join(char if char.isprintable() else escape(char) for char in text)
