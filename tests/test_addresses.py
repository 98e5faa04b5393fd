"""Addresses: parsing, formatting, normalisation and socket tuples (sans-IO).

Through the public API; the docstring examples of the private modules behind it
run in ``test_sansio_internals.py``.
"""

from __future__ import annotations

import contextlib
import ipaddress
import socket

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trionet import Address, AddressError, HostPort, TrionetError, parse_host_port, wildcard_addresses

# text, default_port -> (host, port, scope_id, family, formatted)
VALID = [
    ("127.0.0.1:80", None, ("127.0.0.1", 80, 0, socket.AF_INET, "127.0.0.1:80")),
    ("0.0.0.0:0", None, ("0.0.0.0", 0, 0, socket.AF_INET, "0.0.0.0:0")),
    ("[::1]:80", None, ("::1", 80, 0, socket.AF_INET6, "[::1]:80")),
    ("[::]:65535", None, ("::", 65535, 0, socket.AF_INET6, "[::]:65535")),
    ("[fe80::1%eth0]:80", None, ("fe80::1", 80, "eth0", socket.AF_INET6, "[fe80::1%eth0]:80")),
    ("[fe80::1%2]:443", None, ("fe80::1", 443, 2, socket.AF_INET6, "[fe80::1%2]:443")),
    (
        "[2001:DB8:0:0::1]:8080",
        None,
        ("2001:db8::1", 8080, 0, socket.AF_INET6, "[2001:db8::1]:8080"),
    ),
    ("[::ffff:10.0.0.1]:80", None, ("10.0.0.1", 80, 0, socket.AF_INET, "10.0.0.1:80")),
    ("[::FFFF:a00:1]:80", None, ("10.0.0.1", 80, 0, socket.AF_INET, "10.0.0.1:80")),
    ("127.0.0.1:080", None, ("127.0.0.1", 80, 0, socket.AF_INET, "127.0.0.1:80")),
    ("10.0.0.1", 53, ("10.0.0.1", 53, 0, socket.AF_INET, "10.0.0.1:53")),
    ("::1", 53, ("::1", 53, 0, socket.AF_INET6, "[::1]:53")),
    ("[::1]", 53, ("::1", 53, 0, socket.AF_INET6, "[::1]:53")),
    ("fe80::1%eth0", 53, ("fe80::1", 53, "eth0", socket.AF_INET6, "[fe80::1%eth0]:53")),
    ("127.0.0.1:80", 53, ("127.0.0.1", 80, 0, socket.AF_INET, "127.0.0.1:80")),
]


@pytest.mark.parametrize(("text", "default_port", "expected"), VALID, ids=[v[0] for v in VALID])
def test_parse_normalises_and_formats(
    text: str, default_port: int | None, expected: tuple[object, ...]
) -> None:
    address = Address.parse(text, default_port=default_port)
    host, port, scope_id, family, formatted = expected
    assert (address.host, address.port, address.scope_id) == (host, port, scope_id)
    assert address.family == family
    assert str(address) == formatted
    assert Address.parse(str(address)) == address


# text, default_port, a fragment the error message must contain
MALFORMED = [
    ("", None, "empty address"),
    ("127.0.0.1", None, "missing port in '127.0.0.1': expected host:port"),
    ("::1", None, "an IPv6 address with a port is written in brackets"),
    ("::1:80", None, "an IPv6 address with a port is written in brackets, as in [::1]:80"),
    ("127.0.0.1:", None, "missing port after ':' in '127.0.0.1:'"),
    ("127.0.0.1:http", None, "invalid port 'http' in '127.0.0.1:http'"),
    ("127.0.0.1:-1", None, "invalid port '-1'"),
    ("127.0.0.1: 80", None, "invalid port ' 80'"),
    ("127.0.0.1:\u0668\u0660", None, "expected decimal digits"),
    (
        "127.0.0.1:65536",
        None,
        "port 65536 in '127.0.0.1:65536' is out of range: it must be 0-65535",
    ),
    ("[::1]:99999", None, "port 99999 in '[::1]:99999' is out of range"),
    ("[::1", None, "missing ']' in '[::1'"),
    ("[::1]80", None, "unexpected '80' after ']' in '[::1]80'"),
    ("[::1]", None, "missing port in '[::1]': expected [address]:port"),
    ("[]:80", None, "empty address between brackets in '[]:80'"),
    ("[127.0.0.1]:80", None, "brackets are for IPv6 addresses only, in '[127.0.0.1]:80'"),
    ("[fe80::1%]:80", None, "empty zone after '%' in '[fe80::1%]:80'"),
    ("[fe80::1%eth 0]:80", None, "invalid zone 'eth 0'"),
    ("[fe80::1%a]b]:80", None, "unexpected 'b]:80' after ']'"),
    ("1.2.3.4%eth0:80", None, "'1.2.3.4%eth0' is not an IP address (in '1.2.3.4%eth0:80')"),
    ("example.com:80", None, "'example.com' is not an IP address (in 'example.com:80')"),
    ("256.0.0.1:80", None, "'256.0.0.1' is not an IP address"),
    ("010.0.0.1:80", None, "'010.0.0.1' is not an IP address"),
    (":80", None, "missing host before ':' in ':80'"),
    ("http://[::1]:80", None, "too many ':' for host:port, and not an IPv6 address"),
    ("127.0.0.1", 70000, "port 70000 in 'default_port' is out of range"),
]


@pytest.mark.parametrize(("text", "default_port", "message"), MALFORMED, ids=[m[0] for m in MALFORMED])
def test_malformed_text_raises_address_error_naming_it(
    text: str, default_port: int | None, message: str
) -> None:
    with pytest.raises(AddressError) as info:
        Address.parse(text, default_port=default_port)
    assert message in str(info.value)


def test_address_error_is_a_value_error_and_a_trionet_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        Address.parse("localhost:80")
    assert issubclass(AddressError, TrionetError)


def test_parse_rejects_non_str() -> None:
    with pytest.raises(AddressError, match="expected an address as str"):
        Address.parse(b"127.0.0.1:80")  # type: ignore[arg-type]


# kwargs -> error message fragment
BAD_FIELDS = [
    ({"host": "127.0.0.1", "port": 70000}, "port 70000 is out of range: it must be 0-65535"),
    ({"host": "127.0.0.1", "port": -1}, "port -1 is out of range"),
    ({"host": "127.0.0.1", "port": True}, "port must be an int, not True"),
    ({"host": "127.0.0.1", "port": "80"}, "port must be an int, not '80'"),
    (
        {"host": "localhost", "port": 80},
        "'localhost' is not an IP address; host names need resolving",
    ),
    ({"host": b"::1", "port": 80}, "host must be an IP address as str"),
    ({"host": "127.0.0.1", "port": 80, "scope_id": 1}, "are IPv6 fields, but 127.0.0.1 is an IPv4"),
    ({"host": "127.0.0.1", "port": 80, "flowinfo": 1}, "are IPv6 fields"),
    ({"host": "::1", "port": 80, "flowinfo": 1 << 20}, "flowinfo must be an int 0-1048575"),
    ({"host": "::1", "port": 80, "scope_id": -1}, "scope_id must be an int 0-4294967295, not -1"),
    ({"host": "::1", "port": 80, "scope_id": 1 << 32}, "scope_id must be an int"),
    ({"host": "::1", "port": 80, "scope_id": "a/b"}, "invalid zone 'a/b'"),
    ({"host": "fe80::1%eth0", "port": 80, "scope_id": 2}, "zone given twice"),
]


@pytest.mark.parametrize(("fields", "message"), BAD_FIELDS, ids=[m for _, m in BAD_FIELDS])
def test_constructor_validates_every_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(AddressError) as info:
        Address(**fields)  # type: ignore[arg-type]
    assert message in str(info.value)


def test_constructor_normalises_host_zone_and_mapped_addresses() -> None:
    assert Address("::FFFF:10.0.0.1", 1) == Address("10.0.0.1", 1)
    assert Address("0:0::1", 1).host == "::1"
    assert Address("fe80::1%eth0", 1) == Address("fe80::1", 1, scope_id="eth0")
    assert Address("fe80::1", 1, scope_id="7").scope_id == 7
    assert Address("fe80::1%7", 1).scope_id == 7


def test_addresses_are_immutable_and_hashable() -> None:
    address = Address("::1", 80)
    with pytest.raises(AttributeError):
        address.port = 81  # type: ignore[misc]
    assert len({Address("::1", 80), Address.parse("[0::1]:80"), address}) == 1
    assert address.with_port(81) == Address("::1", 81)
    assert Address("::1", 80, flowinfo=7) == address  # a routing hint, not identity
    assert address.ip == ipaddress.IPv6Address("::1")
    assert Address("fe80::1", 1, scope_id=3).ip == ipaddress.IPv6Address("fe80::1%3")


SOCKADDRS = [
    (("127.0.0.1", 80), Address("127.0.0.1", 80), ("127.0.0.1", 80)),
    (("::1", 80, 0, 0), Address("::1", 80), ("::1", 80, 0, 0)),
    (("::ffff:10.0.0.1", 80, 0, 0), Address("10.0.0.1", 80), ("10.0.0.1", 80)),
    (("2001:db8::1", 80, 5, 0), Address("2001:db8::1", 80, flowinfo=5), ("2001:db8::1", 80, 5, 0)),
    (("fe80::1%eth0", 80, 0, 4), Address("fe80::1", 80, scope_id=4), ("fe80::1", 80, 0, 4)),
    (("fe80::1", 80, 0, 4), Address("fe80::1", 80, scope_id=4), ("fe80::1", 80, 0, 4)),
]


@pytest.mark.parametrize(("sockaddr", "address", "back"), SOCKADDRS, ids=[str(s[0]) for s in SOCKADDRS])
def test_socket_address_tuples_convert_both_ways(
    sockaddr: tuple[object, ...], address: Address, back: tuple[object, ...]
) -> None:
    assert Address.from_sockaddr(sockaddr) == address
    assert address.to_sockaddr() == back
    assert Address.from_sockaddr(sockaddr).to_sockaddr() == back


def test_from_sockaddr_keeps_a_named_zone_when_no_index_is_given() -> None:
    address = Address.from_sockaddr(("fe80::1%eth0", 80, 0, 0))
    assert address.scope_id == "eth0"
    assert str(address) == "[fe80::1%eth0]:80"


@pytest.mark.parametrize(
    "sockaddr",
    [(1, b"\x00"), ("127.0.0.1",), ("127.0.0.1", 80, 0), ("::1", 80, "0", 0), ("127.0.0.1", "80")],
)
def test_from_sockaddr_rejects_other_tuples(sockaddr: tuple[object, ...]) -> None:
    with pytest.raises(AddressError, match="socket address"):
        Address.from_sockaddr(sockaddr)


def test_to_sockaddr_refuses_an_interface_name_it_cannot_give_a_socket() -> None:
    with pytest.raises(AddressError, match="zone 'eth0' is an interface name; sockets need its index"):
        Address.parse("[fe80::1%eth0]:80").to_sockaddr()


def test_to_sockaddr_gives_the_mapped_form_for_an_ipv6_socket() -> None:
    assert Address("10.0.0.1", 80).to_sockaddr(family=socket.AF_INET6) == (
        "::ffff:10.0.0.1",
        80,
        0,
        0,
    )
    assert Address("::1", 80).to_sockaddr(family=socket.AF_INET6) == ("::1", 80, 0, 0)
    with pytest.raises(AddressError, match=r"\[::1\]:80 is an IPv6 address"):
        Address("::1", 80).to_sockaddr(family=socket.AF_INET)


@pytest.mark.parametrize(("family", "host"), [(socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")])
def test_socket_tuples_round_trip_through_a_real_socket(family: int, host: str) -> None:
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.bind(Address(host, 0).to_sockaddr())
        bound = Address.from_sockaddr(sock.getsockname())
        assert bound.host == host
        assert bound.port != 0
        assert bound.to_sockaddr() == sock.getsockname()


# --- host:port with names ---------------------------------------------------------

HOST_PORTS = [
    ("example.com:443", None, HostPort("example.com", 443), "example.com:443"),
    ("Example.COM.:80", None, HostPort("Example.COM.", 80), "Example.COM.:80"),
    ("_sip._udp.example.com:5060", None, HostPort("_sip._udp.example.com", 5060), None),
    ("localhost", 8080, HostPort("localhost", 8080), "localhost:8080"),
    ("xn--caf-dma.example:1", None, HostPort("xn--caf-dma.example", 1), None),
    ("café.example:1", None, HostPort("café.example", 1), None),
    ("127.0.0.1:80", None, HostPort("127.0.0.1", 80), "127.0.0.1:80"),
    ("[::1]:80", None, HostPort("::1", 80), "[::1]:80"),
    ("::1", 80, HostPort("::1", 80), "[::1]:80"),
    ("[::ffff:10.0.0.1]:80", None, HostPort("10.0.0.1", 80), "10.0.0.1:80"),
    ("[fe80::1%eth0]:80", None, HostPort("fe80::1%eth0", 80), "[fe80::1%eth0]:80"),
]


@pytest.mark.parametrize(
    ("text", "default_port", "expected", "formatted"), HOST_PORTS, ids=[h[0] for h in HOST_PORTS]
)
def test_parse_host_port_accepts_names_and_literals(
    text: str, default_port: int | None, expected: HostPort, formatted: str | None
) -> None:
    result = parse_host_port(text, default_port=default_port)
    assert result == expected
    host, port = result
    assert (host, port) == tuple(expected)
    assert str(result) == (formatted or text)


MALFORMED_HOST_PORTS = [
    ("example.com", None, "missing port in 'example.com': expected host:port"),
    ("example.com:", None, "missing port after ':'"),
    ("example.com:99999", None, "port 99999 in 'example.com:99999' is out of range"),
    (
        "exa mple.com:80",
        None,
        "invalid host name 'exa mple.com' in 'exa mple.com:80': it contains ' '",
    ),
    ("user@host:80", None, "it contains '@'"),
    ("host/path:80", None, "it contains '/'"),
    ("tab\there:80", None, "it contains '\\t'"),
    ("bell\x07:80", None, "it contains a control character"),
    ("a..b:80", None, "invalid host name 'a..b' in 'a..b:80': empty label"),
    (".a:80", None, "empty label"),
    ("-a.com:80", None, "label '-a' starts or ends with '-'"),
    ("a" * 64 + ".com:80", None, "is longer than 63 characters"),
    ("a." * 127 + "a:80", None, "is 255 characters long; the limit is 253"),
    ("[example.com]:80", None, "'example.com' is not an IP address (in '[example.com]:80')"),
    ("http://example.com:80", None, "too many ':' for host:port"),
    (":80", None, "missing host before ':'"),
]


@pytest.mark.parametrize(
    ("text", "default_port", "message"),
    MALFORMED_HOST_PORTS,
    ids=[m[0][:30] for m in MALFORMED_HOST_PORTS],
)
def test_parse_host_port_rejects_malformed_text_naming_it(
    text: str, default_port: int | None, message: str
) -> None:
    with pytest.raises(AddressError) as info:
        parse_host_port(text, default_port=default_port)
    assert message in str(info.value)


def test_port_checks_name_the_context() -> None:
    # Every port goes through one check; a message names where the port came from.
    assert Address("127.0.0.1", 0).port == 0
    assert Address("127.0.0.1", 65535).port == 65535
    assert parse_host_port("example.test", default_port=65535).port == 65535
    with pytest.raises(AddressError, match="port 65536 in 'default_port' is out of range"):
        parse_host_port("example.test", default_port=65536)
    with pytest.raises(AddressError, match="port 65536 is out of range"):
        Address("127.0.0.1", 65536)
    with pytest.raises(AddressError, match=r"port must be an int, not 8\.0"):
        Address("127.0.0.1", 8.0)  # type: ignore[arg-type]
    with pytest.raises(AddressError, match=r"port must be an int, not 8\.0"):
        wildcard_addresses(8.0)  # type: ignore[arg-type]


def test_wildcard_addresses_cover_both_families_on_one_port_ipv6_first() -> None:
    assert wildcard_addresses(8080) == [Address("::", 8080), Address("0.0.0.0", 8080)]
    assert [a.family for a in wildcard_addresses(0)] == [socket.AF_INET6, socket.AF_INET]
    with pytest.raises(AddressError, match="out of range"):
        wildcard_addresses(65536)


# --- properties ------------------------------------------------------------------

ports = st.integers(0, 65535)
ipv4 = st.ip_addresses(v=4)
ipv6 = st.ip_addresses(v=6)
scope_ids = st.one_of(
    st.just(0),
    st.integers(1, 2**32 - 1),
    st.text(st.characters(codec="ascii", categories=("L", "N")), min_size=1, max_size=15),
)


@st.composite
def addresses(draw: st.DrawFn) -> Address:
    if draw(st.booleans()):
        return Address(str(draw(ipv4)), draw(ports))
    ip = ipaddress.IPv6Address(draw(ipv6))
    if ip.ipv4_mapped is not None:
        return Address(str(ip), draw(ports))
    return Address(str(ip), draw(ports), draw(st.integers(0, 0xFFFFF)), draw(scope_ids))


@given(addresses())
def test_formatting_then_parsing_gives_the_same_address(address: Address) -> None:
    assert Address.parse(str(address)) == address
    assert parse_host_port(str(address)).port == address.port


@given(addresses())
def test_socket_tuples_round_trip(address: Address) -> None:
    if isinstance(address.scope_id, str):
        return  # an interface name has no tuple form; tested above
    back = Address.from_sockaddr(address.to_sockaddr())
    assert back == address
    assert back.flowinfo == address.flowinfo


@given(ipv4, ports)
def test_ipv4_mapped_addresses_equal_their_ipv4_address(ip: ipaddress.IPv4Address, port: int) -> None:
    mapped = ipaddress.IPv6Address(f"::ffff:{ip}")
    assert Address(str(mapped), port) == Address(str(ip), port)
    assert Address.from_sockaddr((str(mapped), port, 0, 0)) == Address(str(ip), port)
    assert Address.parse(f"[{mapped.exploded}]:{port}") == Address(str(ip), port)


@given(st.text(max_size=60))
def test_parsing_any_text_gives_an_address_or_an_address_error(text: str) -> None:
    for parse in (Address.parse, parse_host_port):
        with contextlib.suppress(AddressError):
            parse(text, default_port=1)


@given(st.text(alphabet="0123456789abcdef:.[]%", max_size=40))
def test_parsing_address_like_text_gives_an_address_or_an_address_error(text: str) -> None:
    try:
        address = Address.parse(text, default_port=1)
    except AddressError:
        return
    assert Address.parse(str(address)) == address
