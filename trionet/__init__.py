"""trionet: nursery-scoped networking for trio.

Public names are re-exported here; the modules behind them are private.
"""

from __future__ import annotations

from ._channel import MessageChannel as MessageChannel
from ._channel import MessageChannelStatistics as MessageChannelStatistics
from ._connection import TCPConnection as TCPConnection
from ._connection import UnixConnection as UnixConnection
from ._happy_eyeballs_input import RESOLUTION_DELAY as RESOLUTION_DELAY
from ._happy_eyeballs_input import FamilyAnswer as FamilyAnswer
from ._happy_eyeballs_input import resolve_happy_eyeballs as resolve_happy_eyeballs
from ._listen import open_listening_sockets as open_listening_sockets
from ._observe import Event as Event
from ._observe import EventLog as EventLog
from ._observe import Observer as Observer
from ._resolver import Resolver as Resolver
from ._resolver import ResolverStatistics as ResolverStatistics
from ._resolver import default_resolver as default_resolver
from ._resolver import resolve as resolve
from ._sansio.addresses import Address as Address
from ._sansio.addresses import HostPort as HostPort
from ._sansio.addresses import parse_host_port as parse_host_port
from ._sansio.addresses import wildcard_addresses as wildcard_addresses
from ._sansio.codecs import Codec as Codec
from ._sansio.codecs import Decoder as Decoder
from ._sansio.codecs import Delimited as Delimited
from ._sansio.codecs import LengthPrefixed as LengthPrefixed
from ._sansio.codecs import Lines as Lines
from ._sansio.codecs import Netstring as Netstring
from ._sansio.codecs import Varint as Varint
from ._sansio.matching import ReplyMatcher as ReplyMatcher
from ._sansio.matching import match_address_only as match_address_only
from ._sansio.matching import match_bytes as match_bytes
from ._sansio.matching import match_coap_message_id as match_coap_message_id
from ._sansio.matching import match_dns_id as match_dns_id
from ._sansio.ordering import interleave_families as interleave_families
from ._sansio.retry import RetryPolicy as RetryPolicy
from ._sansio.retry import RttEstimator as RttEstimator
from ._server_base import ServerStatistics as ServerStatistics
from ._tcp_client import ConnectAttempt as ConnectAttempt
from ._tcp_client import connect_tcp as connect_tcp
from ._tcp_server import TCPServer as TCPServer
from ._tcp_server import open_tcp_server as open_tcp_server
from ._tcp_server import serve_tcp as serve_tcp
from ._udp import Datagram as Datagram
from ._udp import UDPEndpoint as UDPEndpoint
from ._udp import UDPEndpointStatistics as UDPEndpointStatistics
from ._udp import open_udp_endpoint as open_udp_endpoint
from ._udp_server import UDPServer as UDPServer
from ._udp_server import UDPServerStatistics as UDPServerStatistics
from ._udp_server import open_udp_server as open_udp_server
from ._udp_server import serve_udp as serve_udp
from ._unix import UnixServer as UnixServer
from ._unix import connect_unix as connect_unix
from ._unix import open_unix_server as open_unix_server
from ._unix import serve_unix as serve_unix
from .errors import AddressError as AddressError
from .errors import ConnectError as ConnectError
from .errors import DatagramTooLarge as DatagramTooLarge
from .errors import FrameTimeout as FrameTimeout
from .errors import FrameTooLarge as FrameTooLarge
from .errors import FramingError as FramingError
from .errors import IncompleteFrame as IncompleteFrame
from .errors import InvalidMessage as InvalidMessage
from .errors import PeerUnreachable as PeerUnreachable
from .errors import ProtocolError as ProtocolError
from .errors import RequestTimeout as RequestTimeout
from .errors import ResolutionError as ResolutionError
from .errors import TrionetError as TrionetError

__version__ = "0.1.0.dev0"

__all__ = [
    # Message channels and their codecs
    "MessageChannel",
    "MessageChannelStatistics",
    "Codec",
    "Decoder",
    "LengthPrefixed",
    "Varint",
    "Delimited",
    "Lines",
    "Netstring",
    # Addresses and resolution
    "Address",
    "HostPort",
    "parse_host_port",
    "wildcard_addresses",
    "interleave_families",
    "Resolver",
    "ResolverStatistics",
    "resolve",
    "default_resolver",
    "FamilyAnswer",
    "resolve_happy_eyeballs",
    "RESOLUTION_DELAY",
    "open_listening_sockets",
    # TCP and Unix-socket servers and clients
    "serve_tcp",
    "open_tcp_server",
    "TCPServer",
    "TCPConnection",
    "ServerStatistics",
    "connect_tcp",
    "ConnectAttempt",
    "serve_unix",
    "open_unix_server",
    "UnixServer",
    "UnixConnection",
    "connect_unix",
    # UDP
    "open_udp_endpoint",
    "UDPEndpoint",
    "UDPEndpointStatistics",
    "Datagram",
    "PeerUnreachable",
    "RetryPolicy",
    "RttEstimator",
    "ReplyMatcher",
    "match_dns_id",
    "match_coap_message_id",
    "match_bytes",
    "match_address_only",
    "serve_udp",
    "open_udp_server",
    "UDPServer",
    "UDPServerStatistics",
    # Observability
    "Event",
    "EventLog",
    "Observer",
    # Errors
    "TrionetError",
    "FramingError",
    "FrameTooLarge",
    "ProtocolError",
    "InvalidMessage",
    "IncompleteFrame",
    "FrameTimeout",
    "AddressError",
    "ResolutionError",
    "ConnectError",
    "DatagramTooLarge",
    "RequestTimeout",
]
