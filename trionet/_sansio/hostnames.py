"""Host names and zones, checked and put in the form lookups use (sans-IO).

:func:`normalize_host` is what every name goes through before it is looked up,
cached or put in a hosts table: an IP literal comes back as it is, a name in
ASCII and lower case, a non-ASCII name encoded as IDNA 2008 with the UTS-46
mapping (as :func:`trio.socket.getaddrinfo` encodes it). The zone of a scoped
IPv6 literal (``fe80::1%eth0``) is an interface name or index, checked here too.

Also the small text helpers that :mod:`~trionet._sansio.addresses` shares:
bounded decimal parsing and values shortened for error messages.
"""

from __future__ import annotations

import ipaddress
from typing import Final

import idna

from .errors import AddressError

__all__ = [
    "FORBIDDEN_IN_NAMES",
    "MAX_HOST_NAME_LENGTH",
    "MAX_LABEL_LENGTH",
    "MAX_SCOPE_ID",
    "MAX_ZONE_LENGTH",
    "check_zone",
    "encode_host_name",
    "normalize_host",
    "parse_decimal",
    "shorten",
    "shorten_value",
]

MAX_SCOPE_ID: Final = 0xFFFFFFFF  # sin6_scope_id is a uint32_t (RFC 3493 section 3.3)
MAX_HOST_NAME_LENGTH: Final = 253  # 255 octets on the wire, minus length and root (RFC 1035)
MAX_LABEL_LENGTH: Final = 63  # RFC 1035 section 2.3.4
# trionet's choice, far above any system's interface names (Linux's IFNAMSIZ is
# 16 bytes): a zone is echoed in messages and kept in addresses, so it is bounded.
MAX_ZONE_LENGTH: Final = 255

# Characters that never occur in a host name or an interface name, and that
# usually mean the caller passed a URL or a path instead of a host.
FORBIDDEN_IN_NAMES: Final = frozenset(" \t\r\n/\\?#@[]%,;\"'<>")
_ASCII_CONTROLS: Final = frozenset(map(chr, [*range(0x20), 0x7F]))
# Host text longer than this is refused before any other work (trionet's
# choice). An IPv6 literal with the longest zone is far shorter, and so is any
# sensible spelling of a 253-character name: UTS-46 could shorten a longer one
# by dropping ignored characters (U+00AD), but nobody writes those by the hundred.
_MAX_HOST_TEXT_LENGTH: Final = 4 * MAX_HOST_NAME_LENGTH


def shorten(name: str) -> str:
    """``repr(name)``, cut short for a message if the name is long."""
    return repr(name) if len(name) <= 60 else f"{name[:40]!r}... ({len(name)} characters)"


def shorten_value(value: object) -> str:
    """``repr(value)`` for a message, cut short if it is long."""
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:40]}... ({len(text)} characters)"


def parse_decimal(digits: str, limit: int, what: str, whole: str) -> int:
    """``digits`` (ASCII decimal digits) as an int of at most ``limit``.

    The length is checked before :func:`int` sees the text: past 4,300 digits
    int() raises a bare ValueError (CPython's integer string conversion limit),
    and a long run of digits costs quadratic time below it.
    """
    significant = digits.lstrip("0")
    if len(significant) > len(str(limit)) or int(significant or "0") > limit:
        shown = digits if len(digits) <= 20 else f"of {len(digits)} digits"
        raise AddressError(f"{what} {shown} in {shorten(whole)} is out of range: it must be 0-{limit}")
    return int(significant or "0")


def check_zone(zone: str, whole: str) -> int | str:
    """Check a zone's text: an interface index (int) for a numeric zone, else the name."""
    if not zone:
        raise AddressError(f"empty zone after '%' in {shorten(whole)}")
    if len(zone) > MAX_ZONE_LENGTH:
        raise AddressError(
            f"zone in {shorten(whole)} is {len(zone)} characters long; the limit is {MAX_ZONE_LENGTH}"
        )
    if not zone.isprintable() or FORBIDDEN_IN_NAMES.intersection(zone):
        raise AddressError(f"invalid zone {shorten(zone)} in {shorten(whole)}")
    if zone.isascii() and zone.isdigit():  # an interface index, a uint32_t
        return parse_decimal(zone, MAX_SCOPE_ID, "zone", whole)
    return zone


def encode_host_name(name: str, whole: str) -> str:
    """Check a host name and return its ASCII form, in lower case.

    A non-ASCII name is encoded as trio's getaddrinfo encodes it: IDNA 2008
    with the UTS-46 mapping (the ``idna`` package), so ``BÜCHER.test`` becomes
    ``xn--bcher-kva.test``, and every spelling that the mapping folds together
    is one name: fullwidth letters (``db.test`` written with U+FF44 and
    U+FF42), the ideographic full stop (``db\u3002test``), and the characters
    it ignores, such as the soft hyphen (U+00AD) and the zero-width space
    (U+200B). Characters that UTS-46 disallows (other invisible or control
    characters) are refused. The length limits apply to the encoded form, as
    they do on the wire. ASCII names are not held to IDNA's letters-digits-
    hyphen rule, because names such as ``_srv.example`` or ``my_host`` are in
    use and getaddrinfo resolves them; only their structure is checked.
    """
    where = "" if name == whole else f" in {shorten(whole)}"
    # A cheap bound before any other work: the UTS-46 mapping can remove
    # characters (U+00AD), but a name 4 times the limit is refused whatever
    # it would remove.
    if len(name) > _MAX_HOST_TEXT_LENGTH:
        raise AddressError(
            f"host name{where or ' ' + shorten(name)} is {len(name)} characters long; "
            f"the limit is {MAX_HOST_NAME_LENGTH}"
        )
    ascii_name = name.isascii()
    bad = sorted(FORBIDDEN_IN_NAMES.intersection(name))
    # Non-ASCII format characters are left to UTS-46, which drops the ignored
    # ones (U+00AD, U+200B) and refuses the rest.
    if bad or (not name.isprintable() if ascii_name else bool(_ASCII_CONTROLS.intersection(name))):
        shown = repr(bad[0]) if bad else "a control character"
        raise AddressError(f"invalid host name {shorten(name)}{where}: it contains {shown}")
    if ascii_name:
        encoded = name.lower()
    else:
        try:
            encoded = idna.encode(name, uts46=True).decode("ascii")
        except idna.IDNAError as exc:
            raise AddressError(
                f"invalid host name {shorten(name)}{where}: {exc} (as IDNA 2008 with UTS-46 mapping)"
            ) from None
    body = encoded[:-1] if encoded.endswith(".") and encoded != "." else encoded
    if len(body) > MAX_HOST_NAME_LENGTH:
        raise AddressError(
            f"host name{where or ' ' + shorten(name)} is {len(body)} characters long"
            f"{'' if encoded == name else ' encoded'}; the limit is {MAX_HOST_NAME_LENGTH}"
        )
    for label in body.split("."):
        if not label:
            raise AddressError(f"invalid host name {shorten(name)}{where}: empty label")
        if len(label) > MAX_LABEL_LENGTH:
            raise AddressError(
                f"invalid host name {shorten(name)}{where}: label {label[:20]!r}... is longer "
                f"than {MAX_LABEL_LENGTH} characters"
            )
        if label.startswith("-") or label.endswith("-"):
            raise AddressError(
                f"invalid host name {shorten(name)}{where}: label {label!r} starts or ends with '-'"
            )
    return encoded


def normalize_host(host: str) -> str:
    """The form of ``host`` that name lookups use, checked before any lookup.

    - An IP literal comes back as it is (a zone included); an IPv6 literal in
      brackets (``"[::1]"``, as in URLs) comes back without them.
    - A name comes back in ASCII and lower case: a non-ASCII name is encoded
      as IDNA 2008 with the UTS-46 mapping, as :func:`trio.socket.getaddrinfo`
      does, so ``"bücher.test"`` and ``"xn--bcher-kva.test"`` are the same
      name, and so are ``"db.test"``, the same in fullwidth letters,
      ``"db\u3002test"`` (the ideographic full stop) and ``"d\u00adb.test"`` (a
      soft hyphen, which UTS-46 ignores, as it does U+200B). A trailing dot
      is kept.

    Every check runs before any lookup; :class:`trionet.Resolver` uses this
    function for looked-up names and for its hosts table alike.

    Args:
      host: A host name or an IP address.

    Returns:
      The text to look up.

    Raises:
      AddressError: ``host`` is not a str, is empty, has brackets around
          something other than an IPv6 address, contains a character no host
          name has (a space, ``/``, ``:``, a control character...), fails IDNA
          encoding, or is too long (more than 253 characters, or a label of
          more than 63, counted in its encoded form; text of more than 1,012
          characters is refused before it is looked at), or is an IP literal
          whose zone is malformed or, if numeric, over 2**32 - 1. The message
          says which.

    Example:
      >>> normalize_host("[::1]")
      '::1'
      >>> normalize_host("Bücher.Test")
      'xn--bcher-kva.test'
    """
    if not isinstance(host, str) or not host:
        raise AddressError(f"host must be a non-empty str, not {shorten_value(host)}")
    if len(host) > _MAX_HOST_TEXT_LENGTH:
        raise AddressError(
            f"host {shorten(host)} is {len(host)} characters long; the limit is {MAX_HOST_NAME_LENGTH}"
        )
    if host.startswith("[") or host.endswith("]"):
        inner = host[1:-1] if host.startswith("[") and host.endswith("]") else ""
        try:
            ipaddress.IPv6Address(inner.partition("%")[0])
        except ValueError:
            raise AddressError(
                f"invalid host {shorten(host)}: brackets are for an IPv6 address alone, "
                "as in '[::1]' (a port is a separate argument)"
            ) from None
        if "%" in inner:
            check_zone(inner.partition("%")[2], host)
        return inner
    try:
        ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        pass
    else:
        if "%" in host:
            check_zone(host.partition("%")[2], host)
        return host
    if ":" in host:
        raise AddressError(
            f"invalid host {shorten(host)}: not an IP address, and ':' has no place in a host "
            "name (a port is a separate argument)"
        )
    return encode_host_name(host, host)
