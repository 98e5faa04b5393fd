"""The PROXY protocol, versions 1 and 2, as a sans-IO parser: parse_proxy_header.

A load balancer (HAProxy, AWS NLB, nginx's ``proxy_protocol``) that forwards a
TCP connection sends, before the client's first byte, a header naming the
client's address and the address it connected to; without reading it, a server
sees only the balancer. The specification is HAProxy's "The PROXY protocol",
versions 1 (a text line) and 2 (binary):
https://www.haproxy.org/download/2.9/doc/proxy-protocol.txt

:func:`parse_proxy_header` looks at the bytes received so far and says either
that more are needed (and how many it may take without reading past the
header), or what the header says and how long it is; it never consumes
anything, so the caller can read exactly the header off the socket and leave
the client's bytes for whatever reads next (a TLS handshake, a codec).
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass, field
from typing import Final, final

from .addresses import Address
from .errors import ProxyProtocolError

__all__ = [
    "PROXY_HEADER_LIMIT",
    "PROXY_V2_SIGNATURE",
    "NeedMore",
    "ProxyHeader",
    "ProxyProtocolError",
    "parse_proxy_header",
]

# Section 2.2: the 12 bytes that begin every version 2 header.
PROXY_V2_SIGNATURE: Final = b"\r\n\r\n\x00\r\nQUIT\n"
# Section 2.1: a version 1 line is at most 107 bytes, CRLF included.
_V1_LIMIT: Final = 107
_V1_PREFIX: Final = b"PROXY "
# trionet's bound on a version 2 header (its length field allows 65,551 bytes).
# Section 2.2 asks receivers to accept at least the 216 bytes of two Unix
# addresses; TLVs (SSL details, an AWS VPC endpoint id...) add a few hundred.
PROXY_HEADER_LIMIT: Final = 4096
_V2_FIXED: Final = 16
# Section 2.2: the address block of each family: two addresses and two ports.
_V2_ADDRESS_SIZES: Final = {0x1: 12, 0x2: 36, 0x3: 216}


@final
@dataclass(frozen=True, slots=True)
class NeedMore:
    """More bytes are needed, and the next ``safe`` of them are certainly part of the header.

    Every byte given so far is part of the header too, so a reader may consume
    them all and read ``safe`` more without taking any of the client's bytes.
    """

    safe: int


@final
@dataclass(frozen=True, slots=True)
class ProxyHeader:
    """A parsed PROXY protocol header.

    Attributes:
      version: 1 or 2.
      length: Its length in bytes: the client's own bytes start after it.
      source: The client's address, or ``None`` when the header carries none
          (version 1 ``UNKNOWN``, version 2 ``LOCAL`` or an ``UNSPEC`` or Unix
          family): the connection's own addresses then stand (section 2.1 and 2.2).
      destination: The address the client connected to (the balancer's
          front end), or ``None`` as for ``source``.
      command: ``"PROXY"``, or for version 2 ``"LOCAL"`` (a connection the
          proxy made on its own, a health check).
      transport: ``"TCP4"``, ``"TCP6"``, ``"UNKNOWN"`` (version 1); ``"STREAM"``,
          ``"DGRAM"``, ``"UNSPEC"`` (version 2).
      tlvs: Version 2's type-length-value fields, in order, as (type, value).
    """

    version: int
    length: int
    source: Address | None
    destination: Address | None
    command: str = "PROXY"
    transport: str = "UNKNOWN"
    tlvs: tuple[tuple[int, bytes], ...] = field(default=())


def parse_proxy_header(data: bytes, *, limit: int = PROXY_HEADER_LIMIT) -> ProxyHeader | NeedMore:
    """Parse the PROXY header at the start of ``data`` (the bytes received so far).

    Returns:
      The :class:`ProxyHeader` once it is complete (``data`` may go on past it:
      its ``length`` says where the client's bytes begin), or :class:`NeedMore`
      with how many more bytes may be read without passing the header's end.

    Raises:
      ProxyProtocolError: ``data`` does not begin with a version 1 or 2 header,
          the header is malformed, or it is longer than ``limit`` bytes
          (version 1 lines longer than 107 bytes always are).
    """
    if data[:1] == b"P":
        return _parse_v1(data)
    if data[:1] == b"\r":
        return _parse_v2(data, limit)
    if not data:
        return NeedMore(1)
    raise ProxyProtocolError(f"no PROXY protocol header: the connection began with {data[:8]!r}")


def _parse_v1(data: bytes) -> ProxyHeader | NeedMore:
    prefix = data[: len(_V1_PREFIX)]
    if not _V1_PREFIX.startswith(prefix):
        raise ProxyProtocolError(f"no PROXY protocol header: the connection began with {data[:8]!r}")
    end = data.find(b"\r\n", 0, _V1_LIMIT)
    if end < 0:
        if len(data) >= _V1_LIMIT:
            raise ProxyProtocolError(f"PROXY v1 line without CRLF in its first {_V1_LIMIT} bytes")
        # No CRLF yet: every byte here is the line's, and so are the next two
        # (the next one only, after a CR: it should be the LF that ends it).
        return NeedMore(1 if data.endswith(b"\r") else 2)
    line = data[len(_V1_PREFIX):end]
    try:
        text = line.decode("ascii")
    except UnicodeDecodeError:
        raise ProxyProtocolError(f"PROXY v1 line is not ASCII: {line[:40]!r}") from None
    words = text.split(" ")
    length = end + 2
    if words[0] == "UNKNOWN":
        # Section 2.1: the rest of the line is to be ignored.
        return ProxyHeader(1, length, None, None, transport="UNKNOWN")
    if words[0] not in ("TCP4", "TCP6") or len(words) != 5:
        raise ProxyProtocolError(f"PROXY v1 line is malformed: {text[:60]!r}")
    protocol, source_host, destination_host, source_port, destination_port = words
    version = 4 if protocol == "TCP4" else 6
    source = Address(_ip(source_host, version), _port(source_port))
    destination = Address(_ip(destination_host, version), _port(destination_port))
    return ProxyHeader(1, length, source, destination, transport=protocol)


def _ip(text: str, version: int) -> str:
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        raise ProxyProtocolError(f"PROXY v1 address {text[:45]!r} is not an IP address") from None
    if address.version != version:
        raise ProxyProtocolError(f"PROXY v1 address {text!r} is not IPv{version}")
    return str(address)


def _port(text: str) -> int:
    # Section 2.1: decimal, no leading zero, 0-65535.
    if not text.isdigit() or not text.isascii() or (len(text) > 1 and text[0] == "0") or int(text) > 65535:
        raise ProxyProtocolError(f"PROXY v1 port {text[:8]!r} is not a port number")
    return int(text)


def _parse_v2(data: bytes, limit: int) -> ProxyHeader | NeedMore:
    signature = data[: len(PROXY_V2_SIGNATURE)]
    if not PROXY_V2_SIGNATURE.startswith(signature):
        raise ProxyProtocolError(f"no PROXY protocol header: the connection began with {data[:8]!r}")
    if len(data) < _V2_FIXED:
        return NeedMore(_V2_FIXED - len(data))
    version_command, family_protocol, body_length = struct.unpack_from("!BBH", data, 12)
    if version_command >> 4 != 2:
        raise ProxyProtocolError(f"PROXY v2 header of version {version_command >> 4}")
    command = version_command & 0x0F
    if command not in (0x0, 0x1):
        raise ProxyProtocolError(f"PROXY v2 header with unknown command {command:#x}")
    total = _V2_FIXED + body_length
    if total > limit:
        raise ProxyProtocolError(f"PROXY v2 header of {total} bytes exceeds the limit of {limit}")
    if len(data) < total:
        return NeedMore(total - len(data))
    body = data[_V2_FIXED:total]
    family, protocol = family_protocol >> 4, family_protocol & 0x0F
    transport = {0x0: "UNSPEC", 0x1: "STREAM", 0x2: "DGRAM"}.get(protocol)
    if family > 0x3 or transport is None:
        raise ProxyProtocolError(f"PROXY v2 header with unknown family/protocol {family_protocol:#04x}")
    size = _V2_ADDRESS_SIZES.get(family, 0)
    if len(body) < size:
        raise ProxyProtocolError(f"PROXY v2 address block of {len(body)} bytes, {size} needed")
    tlvs = _tlvs(body[size:])
    source = destination = None
    if command == 0x1 and family in (0x1, 0x2):
        # LOCAL (0x0), UNSPEC and Unix families: the connection's own
        # addresses stand (section 2.2).
        width = 4 if family == 0x1 else 16
        source_ip = ipaddress.ip_address(body[:width])
        destination_ip = ipaddress.ip_address(body[width:2 * width])
        source_port, destination_port = struct.unpack_from("!HH", body, 2 * width)
        source = Address(str(source_ip), source_port)
        destination = Address(str(destination_ip), destination_port)
    return ProxyHeader(2, total, source, destination,
                       command="PROXY" if command else "LOCAL", transport=transport, tlvs=tlvs)


def _tlvs(data: bytes) -> tuple[tuple[int, bytes], ...]:
    found = []
    position = 0
    while position < len(data):
        if len(data) - position < 3:
            raise ProxyProtocolError("PROXY v2 header ends inside a TLV's type and length")
        kind, size = struct.unpack_from("!BH", data, position)
        start = position + 3
        if start + size > len(data):
            raise ProxyProtocolError(f"PROXY v2 TLV {kind:#04x} of {size} bytes overruns the header")
        found.append((kind, bytes(data[start:start + size])))
        position = start + size
    return tuple(found)
