"""The virtual network's DNS: a table of names and the resolver that serves it.

The resolver is installed with :func:`trio.socket.set_custom_hostname_resolver`,
so :func:`trio.socket.getaddrinfo` (and everything built on it:
``trio.open_tcp_stream``, trionet's resolver) sees the table. trio answers
numeric hosts itself before asking a custom resolver; this one answers them too,
for callers that use it directly.

Answers keep the table's order, which stands for the order the system resolver
returns (after its RFC 6724 sorting), so a test decides which address a client
tries first. ``localhost`` resolves to ``::1`` then ``127.0.0.1`` on every host,
as glibc does with the usual ``/etc/hosts``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final, Protocol, final

import trio

if TYPE_CHECKING:
    from trio._socket import _GetAddrInfoEntry

__all__ = ["LOCALHOST", "DnsNetwork", "DnsRecord", "DnsTable", "VirtualResolver", "normalize_name"]

LOCALHOST: Final = ("::1", "127.0.0.1")
# What glibc returns for host=None: wildcards with AI_PASSIVE, else loopbacks.
_PASSIVE: Final = ("0.0.0.0", "::")
_PROTOCOLS: Final[dict[int, int]] = {
    socket.SOCK_STREAM: socket.IPPROTO_TCP,
    socket.SOCK_DGRAM: socket.IPPROTO_UDP,
}
_EAI_ADDRFAMILY: Final = getattr(socket, "EAI_ADDRFAMILY", socket.EAI_NONAME)


@final
@dataclass(frozen=True)
class DnsRecord:
    """A name's addresses, in answer order, and how long each lookup takes.

    Attributes:
      addresses: Normalised IP addresses, in the order lookups return them.
      ipv4_delay: Seconds an IPv4-only (``AF_INET``) lookup takes.
      ipv6_delay: Seconds an IPv6-only (``AF_INET6``) lookup takes. An
          ``AF_UNSPEC`` lookup takes the longer of the two.
    """

    addresses: tuple[str, ...]
    ipv4_delay: float = 0.0
    ipv6_delay: float = 0.0


def normalize_name(name: str | bytes) -> str:
    """Lower-case a host name and drop a trailing dot (``b"Server."`` -> ``"server"``)."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    return name.lower().rstrip(".")


@final
class DnsTable:
    """Names and their :class:`DnsRecord`, in the order they were added."""

    def __init__(self) -> None:
        self._records: dict[str, DnsRecord] = {}

    def set(
        self,
        name: str,
        addresses: Iterable[str],
        *,
        ipv4_delay: float = 0.0,
        ipv6_delay: float = 0.0,
        replace: bool = True,
    ) -> None:
        """Map ``name`` to ``addresses``; with ``replace=False`` keep an existing record.

        Raises:
          ValueError: A malformed address or a negative delay.
        """
        if min(ipv4_delay, ipv6_delay) < 0:
            raise ValueError("lookup delays must be >= 0")
        try:
            normalised = tuple(ipaddress.ip_address(a).compressed for a in addresses)
        except ValueError as exc:
            raise ValueError(f"bad address for {name!r}: {exc}") from None
        key = normalize_name(name)
        if replace or key not in self._records:
            self._records[key] = DnsRecord(normalised, ipv4_delay, ipv6_delay)

    def remove(self, name: str) -> None:
        self._records.pop(normalize_name(name), None)

    def lookup(self, name: str) -> DnsRecord | None:
        """The record for a normalised name; ``localhost`` has a built-in one."""
        record = self._records.get(name)
        if record is None and name == "localhost":
            return DnsRecord(LOCALHOST)
        return record

    def reverse(self, ip: str) -> str | None:
        """The first name whose record holds ``ip``."""
        for name, record in self._records.items():
            if ip in record.addresses:
                return name
        return None

    def first(self, name: str, family: int) -> str:
        """The first address of ``family`` for ``name`` (for bind/connect with a name).

        Raises:
          socket.gaierror: ``EAI_NONAME`` if there is none.
        """
        record = self.lookup(normalize_name(name))
        for address in record.addresses if record is not None else ():
            if _family_of(address) == family:
                return address
        raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known: {name!r}")


def _family_of(ip: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


_SERVICE_PROTOCOLS: Final[dict[int, str]] = {socket.SOCK_STREAM: "tcp", socket.SOCK_DGRAM: "udp"}


def _ports(port: bytes | str | int | None, flags: int, types: list[int]) -> dict[int, int]:
    """The port for each socket type, as glibc's getaddrinfo() reads ``port``.

    A number is taken modulo 65,536 (glibc stores it in 16 bits: 65536 becomes
    0), a negative one is refused. A service name is looked up in the system's
    services database (``/etc/services``), per protocol, as glibc does: types
    whose protocol lacks the service are left out.
    """
    if port is None:
        return dict.fromkeys(types, 0)
    text = port.decode("ascii", "replace") if isinstance(port, bytes) else str(port)
    if text.lstrip("-").isdigit():
        if text.startswith("-"):
            raise socket.gaierror(socket.EAI_SERVICE, "Servname not supported for ai_socktype")
        return dict.fromkeys(types, int(text) & 0xFFFF)
    if flags & socket.AI_NUMERICSERV:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
    found = {}
    for kind in types:
        try:
            found[kind] = socket.getservbyname(text, _SERVICE_PROTOCOLS[kind])
        except OSError:
            continue
    if not found:
        raise socket.gaierror(socket.EAI_SERVICE, "Servname not supported for ai_socktype")
    return found


class _Named(Protocol):
    @property
    def name(self) -> str: ...


class DnsNetwork(Protocol):
    """The network as its resolver sees it: the table, who owns an address, the trace.

    (Defined here rather than in :mod:`._vtypes`, which sits above this module.)
    """

    @property
    def _dns(self) -> DnsTable: ...

    @property
    def _owners(self) -> Mapping[str, _Named]: ...

    def _record_here(self, event: str, *, note: str) -> None: ...


@final
class VirtualResolver(trio.abc.HostnameResolver):
    """A :class:`trio.abc.HostnameResolver` that answers from a virtual network."""

    def __init__(self, net: DnsNetwork) -> None:
        self._net = net

    async def getaddrinfo(
        self,
        host: bytes | None,
        port: bytes | str | int | None,
        family: int = 0,
        type: int = 0,
        proto: int = 0,
        flags: int = 0,
    ) -> list[_GetAddrInfoEntry]:
        """Look ``host`` up in the virtual DNS table, like :func:`socket.getaddrinfo`.

        Honours ``family`` (``AF_UNSPEC``, ``AF_INET``, ``AF_INET6``), ``type``
        (0, ``SOCK_STREAM``, ``SOCK_DGRAM``), ``proto``, and the flags
        ``AI_PASSIVE``, ``AI_NUMERICHOST``, ``AI_NUMERICSERV``, ``AI_CANONNAME`` and
        ``AI_V4MAPPED``; ``AI_ADDRCONFIG`` is ignored.

        Raises:
          socket.gaierror: ``EAI_NONAME`` for an unknown name, ``EAI_ADDRFAMILY``
              when the name has no address of the family, ``EAI_FAMILY`` /
              ``EAI_SOCKTYPE`` for unsupported arguments, ``EAI_SERVICE`` for a
              service name the system's services database does not know for
              the socket type (``"http"`` is 80 over TCP), or a negative port.

        Cancellation:
          The lookup waits the record's delay (:meth:`VirtualNetwork.set_dns`);
          a cancel raises :class:`trio.Cancelled` and leaves nothing behind.
        """
        net = self._net
        if family not in (socket.AF_UNSPEC, socket.AF_INET, socket.AF_INET6):
            raise socket.gaierror(socket.EAI_FAMILY, "ai_family not supported")
        types = [type] if type else [socket.SOCK_STREAM, socket.SOCK_DGRAM]
        if any(t not in _PROTOCOLS for t in types):
            raise socket.gaierror(socket.EAI_SOCKTYPE, "ai_socktype not supported")
        types = [t for t in types if proto in (0, _PROTOCOLS[t])]
        ports = _ports(port, flags, types)
        types = [t for t in types if t in ports]
        delay = 0.0
        name = ""  # set when a name (not a numeric address) was looked up
        if host is None:
            candidates: tuple[str, ...] = _PASSIVE if flags & socket.AI_PASSIVE else LOCALHOST
        else:
            text = normalize_name(host)
            try:
                candidates = (ipaddress.ip_address(text).compressed,)
            except ValueError:
                name = text
                if flags & socket.AI_NUMERICHOST:
                    raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
                record = net._dns.lookup(name)
                if record is None:
                    await trio.lowlevel.checkpoint()
                    net._record_here("dns.fail", note=f"{name}: no such name")
                    raise socket.gaierror(socket.EAI_NONAME, f"Name or service not known: {name!r}") from None
                candidates = record.addresses
                if family == socket.AF_INET:
                    delay = record.ipv4_delay
                elif family == socket.AF_INET6:
                    delay = record.ipv6_delay
                else:
                    delay = max(record.ipv4_delay, record.ipv6_delay)
        if delay > 0:
            await trio.sleep(delay)
        else:
            await trio.lowlevel.checkpoint()
        addresses = [ip for ip in candidates if family in (0, _family_of(ip))]
        if family == socket.AF_INET6 and flags & socket.AI_V4MAPPED and not addresses:
            addresses = [f"::ffff:{ip}" for ip in candidates if _family_of(ip) == socket.AF_INET]
        if not addresses:
            if name:
                net._record_here("dns.fail", note=f"{name}: no address of that family")
            raise socket.gaierror(_EAI_ADDRFAMILY, "Address family for hostname not supported")
        if name:
            net._record_here("dns.resolve", note=f"{name} -> {', '.join(addresses)}")
        result: list[_GetAddrInfoEntry] = []
        canonname = name if flags & socket.AI_CANONNAME else ""
        for ip in addresses:
            for socktype in types:
                entry = _entry(ip, ports[socktype], socktype, canonname if not result else "")
                result.append(entry)
        return result

    async def getnameinfo(
        self, sockaddr: tuple[str, int] | tuple[str, int, int, int], flags: int
    ) -> tuple[str, str]:
        """Find a name for ``sockaddr``, like :func:`socket.getnameinfo`.

        The name is the first DNS name whose record holds the address, else the
        name of the host that owns it, else ``localhost`` for ``127.0.0.1`` and
        ``::1``, else the address itself (or ``EAI_NONAME`` with
        ``NI_NAMEREQD``). The service is named from the system's services
        database (``"http"`` for 80; with ``NI_DGRAM``, UDP's names) unless
        ``NI_NUMERICSERV``, as glibc does.

        Raises:
          socket.gaierror: ``EAI_NONAME`` if the host is not a numeric address.

        Cancellation:
          A checkpoint; nothing to leave behind.
        """
        await trio.lowlevel.checkpoint()
        try:
            ip = ipaddress.ip_address(str(sockaddr[0]).split("%")[0]).compressed
        except ValueError:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known") from None
        number = int(sockaddr[1]) & 0xFFFF
        port = str(number)
        if not flags & socket.NI_NUMERICSERV:
            with contextlib.suppress(OSError):
                port = socket.getservbyport(number, "udp" if flags & socket.NI_DGRAM else "tcp")
        if flags & socket.NI_NUMERICHOST:
            return ip, port
        owner = self._net._owners.get(ip)
        name = self._net._dns.reverse(ip) or (owner.name if owner is not None else None)
        if name is None and ip in LOCALHOST:
            name = "localhost"
        if name is None:
            if flags & socket.NI_NAMEREQD:
                raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
            return ip, port
        return name, port


def _entry(ip: str, port: int, socktype: int, canonname: str) -> _GetAddrInfoEntry:
    kind = socket.SocketKind(socktype)
    proto = _PROTOCOLS[socktype]
    if ":" in ip:
        return (socket.AF_INET6, kind, proto, canonname, (ip, port, 0, 0))
    return (socket.AF_INET, kind, proto, canonname, (ip, port))
