"""Socket addresses that can be printed, parsed and compared (sans-IO).

:class:`Address` is an IP address and a port, normalised so that two addresses
that reach the same peer compare equal: the IP text is canonical (``::1``, never
``0:0::1``) and IPv4-mapped IPv6 addresses (``::ffff:10.0.0.1``, what a dual-stack
socket reports for an IPv4 peer) become plain IPv4. :class:`HostPort` is the
result of splitting ``host:port`` text when the host may be a name.

Text forms are those of URLs (RFC 3986 section 3.2.2) and of every log line:
``127.0.0.1:80``, ``[::1]:80``, ``[fe80::1%eth0]:80``. The zone of a scoped
IPv6 address follows the ``%`` directly, as ``ping`` and ``ip`` print it, not
percent-encoded as RFC 6874 asks inside URIs. Host names are checked and
normalised in :mod:`~trionet._sansio.hostnames`.

Nothing here performs I/O: the :mod:`socket` module is used for its family
constants only.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field, replace
from socket import AF_INET, AF_INET6, AddressFamily
from typing import Final, NamedTuple, final

from .errors import AddressError
from .hostnames import (
    MAX_SCOPE_ID,
    check_zone,
    encode_host_name,
    parse_decimal,
    shorten,
    shorten_value,
)
from .hostnames import normalize_host as normalize_host  # its home before issue 16

__all__ = [
    "Address",
    "HostPort",
    "parse_host_port",
    "validate_port",
    "wildcard_addresses",
]

MAX_PORT: Final = 65535  # ports are 16-bit unsigned integers (RFC 793 section 3.1)
MAX_FLOWINFO: Final = 0xFFFFF  # the IPv6 flow label is 20 bits (RFC 6437 section 2)


class AddressTypeError(AddressError, TypeError):
    """A port, flow label or zone is of the wrong type (a :class:`bool` included).

    An :class:`AddressError`, as every address problem is, and a
    :class:`TypeError`, as trionet's other validators raise for a value of the
    wrong type: ``True`` is an int to Python, but never a port.
    """


def validate_port(port: object, *, context: str | None = None) -> int:
    """Check that ``port`` is a port number and return it.

    Args:
      port: The value to check. It must be an :class:`int` (not a :class:`bool`)
          from 0 to 65535.
      context: Text to name in the error message, such as the string the port
          was parsed from.

    Returns:
      ``port`` itself.

    Raises:
      AddressError: ``port`` is out of range. The message names the value.
      AddressTypeError: ``port`` is not an int, or is a bool (an
          :class:`AddressError` and a :class:`TypeError`).

    Example:
      >>> validate_port(8080)
      8080
    """
    where = f" in {shorten(context)}" if context is not None else ""
    if not isinstance(port, int) or isinstance(port, bool):
        raise AddressTypeError(f"port{where} must be an int, not {shorten_value(port)}")
    if not 0 <= port <= MAX_PORT:
        raise AddressError(f"port {port}{where} is out of range: it must be 0-{MAX_PORT}")
    return port


def _parse_port_text(text: str, whole: str) -> int:
    if not text:
        raise AddressError(f"missing port after ':' in {shorten(whole)}")
    if not (text.isascii() and text.isdigit()):
        raise AddressError(f"invalid port {shorten(text)} in {shorten(whole)}: expected decimal digits")
    return parse_decimal(text, MAX_PORT, "port", whole)


def _split(text: str, default_port: int | None) -> tuple[str, int, bool]:
    """Split ``text`` into (host, port, bracketed) without judging the host."""
    if not isinstance(text, str):
        raise AddressError(f"expected an address as str, not {shorten_value(text)}")
    if default_port is not None:
        validate_port(default_port, context="default_port")
    if not text:
        raise AddressError("empty address")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise AddressError(f"missing ']' in {shorten(text)}")
        host, rest = text[1:end], text[end + 1 :]
        if rest.startswith(":"):
            port = _parse_port_text(rest[1:], text)
        elif rest:
            raise AddressError(f"unexpected {shorten(rest)} after ']' in {shorten(text)}")
        elif default_port is None:
            raise AddressError(f"missing port in {shorten(text)}: expected [address]:port")
        else:
            port = default_port
        if not host:
            raise AddressError(f"empty address between brackets in {shorten(text)}")
        return host, port, True
    colons = text.count(":")
    if colons == 1:
        host, _, port_text = text.partition(":")
        if not host:
            raise AddressError(f"missing host before ':' in {shorten(text)}")
        return host, _parse_port_text(port_text, text), False
    if colons >= 2:
        try:
            ipaddress.IPv6Address(text.partition("%")[0])
        except ValueError:
            raise AddressError(
                f"invalid address {shorten(text)}: too many ':' for host:port, and not an IPv6 address"
            ) from None
    if default_port is None:
        if colons == 0:
            raise AddressError(f"missing port in {shorten(text)}: expected host:port")
        raise AddressError(
            f"missing port in {shorten(text)}: an IPv6 address with a port is written in brackets, "
            "as in [::1]:80"
        )
    return text, default_port, False


def _parse_ip(text: str, whole: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    _, percent, zone = text.partition("%")
    if percent:
        check_zone(zone, whole)
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        where = "" if text == whole else f" (in {shorten(whole)})"
        raise AddressError(
            f"{shorten(text)} is not an IP address{where}; host names need resolving first "
            "(see trionet.resolve)"
        ) from None


@final
@dataclass(frozen=True, slots=True)
class Address:
    """An IP address and a port: one end of an IPv4 or IPv6 connection.

    Addresses are immutable, hashable and normalised when created, so two
    addresses that reach the same peer compare equal: ``host`` is the canonical
    text of the IP address (:mod:`ipaddress`'s compressed form), and an
    IPv4-mapped IPv6 address such as ``::ffff:10.0.0.1`` (which a dual-stack
    socket reports for an IPv4 peer) becomes the IPv4 address ``10.0.0.1``.

    Attributes:
      host: The IP address as text, without zone, for example ``"127.0.0.1"``
          or ``"fe80::1"``. A zone written in it (``"fe80::1%eth0"``) moves to
          ``scope_id``.
      port: The port, 0-65535.
      flowinfo: The IPv6 flow label (``sin6_flowinfo``); 0 for IPv4. It is a
          hint for routers, not part of the address: it does not take part in
          comparisons and hashing, nor in the text form.
      scope_id: The IPv6 zone (``sin6_scope_id``): an interface index (int) or
          an interface name (str, as parsed from ``[fe80::1%eth0]:80``); 0 for
          none. A name must be turned into an index before the address is given
          to a socket: :func:`trionet.resolve` does that.

    Raises:
      AddressError: ``host`` is not an IP address, or a field is out of range
          (also a :class:`ValueError`): a numeric zone is an interface index,
          0 to 2**32 - 1, and a zone name has at most 255 characters. A
          field of the wrong type (a :class:`bool` included: ``True`` is not
          a port) raises an AddressError that is also a :class:`TypeError`.
          The message names the bad value.

    Example:
      >>> a = Address.parse("[::ffff:10.0.0.1]:80")
      >>> a
      Address(host='10.0.0.1', port=80, flowinfo=0, scope_id=0)
      >>> str(Address("fe80::1", 443, scope_id="eth0"))
      '[fe80::1%eth0]:443'
      >>> Address.from_sockaddr(("::1", 8080, 0, 0)).to_sockaddr()
      ('::1', 8080, 0, 0)
    """

    host: str
    port: int
    flowinfo: int = field(default=0, compare=False)
    scope_id: int | str = 0

    def __post_init__(self) -> None:
        if not isinstance(self.host, str):
            raise AddressError(f"host must be an IP address as str, not {self.host!r}")
        validate_port(self.port)
        ip = _parse_ip(self.host, self.host)
        flowinfo, scope_id = self.flowinfo, self.scope_id
        if isinstance(ip, ipaddress.IPv6Address) and ip.scope_id is not None:
            if scope_id not in (0, ""):
                raise AddressError(f"zone given twice: in host {self.host!r} and as scope_id={scope_id!r}")
            scope_id = ip.scope_id
            ip = ipaddress.IPv6Address(self.host.partition("%")[0])
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        if not isinstance(flowinfo, int) or isinstance(flowinfo, bool):
            raise AddressTypeError(
                f"flowinfo must be an int 0-{MAX_FLOWINFO}, not {shorten_value(flowinfo)}"
            )
        if not 0 <= flowinfo <= MAX_FLOWINFO:
            raise AddressError(f"flowinfo must be an int 0-{MAX_FLOWINFO}, not {flowinfo!r}")
        if isinstance(scope_id, str):
            scope_id = check_zone(scope_id, scope_id)
        elif not isinstance(scope_id, int) or isinstance(scope_id, bool):
            raise AddressTypeError(
                f"scope_id must be an int 0-{MAX_SCOPE_ID} or an interface name, "
                f"not {shorten_value(scope_id)}"
            )
        elif not 0 <= scope_id <= MAX_SCOPE_ID:
            raise AddressError(f"scope_id must be an int 0-{MAX_SCOPE_ID}, not {scope_id!r}")
        if isinstance(ip, ipaddress.IPv4Address) and (flowinfo or scope_id):
            raise AddressError(f"flowinfo and scope_id are IPv6 fields, but {ip} is an IPv4 address")
        object.__setattr__(self, "host", str(ip))
        object.__setattr__(self, "scope_id", scope_id)

    @property
    def family(self) -> AddressFamily:
        """:data:`socket.AF_INET` or :data:`socket.AF_INET6`."""
        return AF_INET6 if ":" in self.host else AF_INET

    @property
    def ip(self) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
        """The IP address as an :mod:`ipaddress` object, with its zone if any."""
        if self.scope_id:
            return ipaddress.IPv6Address(f"{self.host}%{self.scope_id}")
        return ipaddress.ip_address(self.host)

    @classmethod
    def parse(cls, text: str, *, default_port: int | None = None) -> Address:
        """Parse ``127.0.0.1:80``, ``[::1]:80`` or ``[fe80::1%eth0]:80``.

        Args:
          text: The address. An IPv6 address with a port is written in
              brackets. Without a port (``127.0.0.1``, ``::1``, ``[::1]``),
              ``default_port`` is used.
          default_port: The port for text that has none; if ``None``, a port is
              required.

        Returns:
          The normalised address.

        Raises:
          AddressError: ``text`` is malformed, its port is out of range, or its
              host is a name rather than an IP address (use
              :func:`parse_host_port` and :func:`trionet.resolve` for names).
              The message names the input.

        Example:
          >>> Address.parse("[fe80::1%eth0]:80")
          Address(host='fe80::1', port=80, flowinfo=0, scope_id='eth0')
          >>> Address.parse("10.0.0.1", default_port=53)
          Address(host='10.0.0.1', port=53, flowinfo=0, scope_id=0)
        """
        host, port, bracketed = _split(text, default_port)
        ip = _parse_ip(host, text)
        if bracketed and isinstance(ip, ipaddress.IPv4Address):
            raise AddressError(f"brackets are for IPv6 addresses only, in {shorten(text)}")
        return cls(host, port)

    @classmethod
    def from_sockaddr(cls, sockaddr: tuple[object, ...]) -> Address:
        """Convert a socket address tuple, as returned by ``getpeername()``.

        Args:
          sockaddr: ``(host, port)`` for IPv4 or ``(host, port, flowinfo,
              scope_id)`` for IPv6. An IPv4-mapped host becomes IPv4. A
              non-zero numeric ``scope_id`` wins over a ``%zone`` in the host
              text (CPython writes both for link-local peers).

        Returns:
          The normalised address.

        Raises:
          AddressError: The tuple is not an IPv4 or IPv6 socket address.
        """
        if not isinstance(sockaddr, tuple) or len(sockaddr) not in (2, 4):
            raise AddressError(f"not an IPv4 or IPv6 socket address: {sockaddr!r}")
        host, port = sockaddr[0], sockaddr[1]
        if not isinstance(host, str) or not isinstance(port, int):
            raise AddressError(f"not an IPv4 or IPv6 socket address: {sockaddr!r}")
        if len(sockaddr) == 2:
            return cls(host, port)
        flowinfo, scope_id = sockaddr[2], sockaddr[3]
        if not isinstance(flowinfo, int) or not isinstance(scope_id, int):
            raise AddressError(f"not an IPv6 socket address: {sockaddr!r}")
        bare, percent, zone = host.partition("%")
        ip = _parse_ip(bare, host)
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            return cls(str(ip.ipv4_mapped), port)
        return cls(bare, port, flowinfo, scope_id if scope_id or not percent else zone)

    def to_sockaddr(self, *, family: int | None = None) -> tuple[str, int] | tuple[str, int, int, int]:
        """The socket address tuple for ``connect()``, ``bind()`` or ``sendto()``.

        Args:
          family: The family of the socket the tuple is for. Pass
              :data:`socket.AF_INET6` to get an IPv4 address in its IPv4-mapped
              form, for a dual-stack IPv6 socket (one without IPV6_V6ONLY).
              ``None`` (the default) means the address's own family.

        Returns:
          ``(host, port)`` for IPv4, ``(host, port, flowinfo, scope_id)`` for IPv6.

        Raises:
          AddressError: The zone is an interface name, which a socket does not
              accept (convert it to an index, as :func:`trionet.resolve` does),
              or an IPv6 address was asked for in IPv4 form.
        """
        own = self.family
        if family is None or family == own:
            if own == AF_INET:
                return (self.host, self.port)
            if isinstance(self.scope_id, str):
                raise AddressError(
                    f"{self}: zone {self.scope_id!r} is an interface name; sockets need its "
                    "index (trionet.resolve() converts it)"
                )
            return (self.host, self.port, self.flowinfo, self.scope_id)
        if family == AF_INET6:
            return (f"::ffff:{self.host}", self.port, 0, 0)
        raise AddressError(f"{self} is an IPv6 address; it has no form for family {family!r}")

    def with_port(self, port: int) -> Address:
        """A copy of this address with another port.

        Raises:
          AddressError: ``port`` is not 0-65535.
        """
        return replace(self, port=port)

    def __str__(self) -> str:
        if self.family == AF_INET:
            return f"{self.host}:{self.port}"
        zone = f"%{self.scope_id}" if self.scope_id else ""
        return f"[{self.host}{zone}]:{self.port}"


@final
class HostPort(NamedTuple):
    """A host, which may be a name or an IP address, and a port.

    The result of :func:`parse_host_port`; a tuple, so ``host, port =
    parse_host_port(text)`` works. ``str()`` gives back ``host:port`` text,
    with brackets around an IPv6 address.

    Attributes:
      host: A host name (as written) or the canonical text of an IP address,
          without brackets (``"example.com"``, ``"::1"``, ``"fe80::1%eth0"``).
      port: The port, 0-65535.
    """

    host: str
    port: int

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


def parse_host_port(text: str, *, default_port: int | None = None) -> HostPort:
    """Split ``host:port`` text where the host may be a name or an IP address.

    Accepts ``example.com:443``, ``127.0.0.1:80``, ``[::1]:80`` and
    ``[fe80::1%eth0]:80``; without a port, ``default_port`` is used.

    Args:
      text: The text to split.
      default_port: The port for text that has none; if ``None``, a port is
          required.

    Returns:
      The host (a name as written, or a normalised IP address without
      brackets) and the port.

    Raises:
      AddressError: ``text`` is malformed, the port is out of range, or the host
          is not a plausible host name. The message names the input.

    Example:
      >>> parse_host_port("example.com:443")
      HostPort(host='example.com', port=443)
      >>> parse_host_port("[::ffff:10.0.0.1]:80")
      HostPort(host='10.0.0.1', port=80)
      >>> str(parse_host_port("::1", default_port=80))
      '[::1]:80'
    """
    host, port, bracketed = _split(text, default_port)
    if bracketed or ":" in host:
        address = Address.parse(text, default_port=default_port)
        zone = f"%{address.scope_id}" if address.scope_id else ""
        return HostPort(address.host + zone, address.port)
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        encode_host_name(host, text)
        return HostPort(host, port)
    return HostPort(str(ip), port)


def wildcard_addresses(port: int) -> list[Address]:
    """The addresses that listen on every interface of both families.

    The IPv6 wildcard ``::`` comes first: a listener for both families binds
    it first to learn the port the system picked for port 0, then binds IPv4 on
    that port (see :func:`trionet.bind_listening_sockets`). The IPv6 socket
    needs IPV6_V6ONLY, or it would claim the IPv4 port as well.

    Args:
      port: The port for both, 0-65535.

    Returns:
      ``[Address("::", port), Address("0.0.0.0", port)]``.

    Raises:
      AddressError: ``port`` is out of range.

    Example:
      >>> [str(a) for a in wildcard_addresses(8080)]
      ['[::]:8080', '0.0.0.0:8080']
    """
    validate_port(port)
    return [Address("::", port), Address("0.0.0.0", port)]
