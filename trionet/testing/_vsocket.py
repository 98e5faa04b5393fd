"""The fake socket: what virtual TCP and UDP sockets share.

:class:`VirtualSocket` subclasses :class:`trio.socket.SocketType`, so
:class:`trio.SocketStream`, :class:`trio.SocketListener` and everything built on
them accept it. It implements the socket API that trio's high-level helpers and
trionet use: addresses, options, ``recv*``/``send*`` with ``MSG_PEEK`` and
``MSG_DONTWAIT``, ``fileno()`` (a virtual number, ``-1`` once closed). Calls it
does not model raise :class:`NotImplementedError` naming the call.

``AF_INET6`` sockets are dual-stack unless ``IPV6_V6ONLY`` is set (Linux's
default): inside the network their IPv4 traffic carries plain IPv4 addresses,
and the socket shows them as ``::ffff:a.b.c.d``, takes them in that form, and
(as trio resolves with ``AI_V4MAPPED``) takes plain IPv4 literals too.

How calls wait, and what a cancel leaves behind, is in :mod:`._vcalls`.
"""

from __future__ import annotations

import errno
import ipaddress
import itertools
import os
import socket
import struct
import sys
from typing import TYPE_CHECKING, Any, Final, Literal, overload

import trio

from ._vtypes import Host, Network

if TYPE_CHECKING:
    from typing_extensions import Buffer, Self

__all__ = ["VirtualSocket", "fail"]

# Virtual descriptors start far above any real one (RLIMIT_NOFILE is capped by
# fs.nr_open, 2**20 by default), so they never alias an open file.
_FIRST_FD: Final = 2**30
_fds = itertools.count(_FIRST_FD)

# Options stored and reported back (0 until set, as on Linux: IPV6_V6ONLY too,
# net.ipv6.bindv6only being 0). Port reuse and IPV6_V6ONLY decide binding and
# delivery (see _vhost), SO_BROADCAST sending to broadcast addresses (_vudp);
# the others change nothing in the simulation: Nagle, keepalive and TTLs are
# not modelled.
_OPTION_NAMES: Final = {
    "SOL_SOCKET": ("SO_REUSEADDR", "SO_REUSEPORT", "SO_KEEPALIVE", "SO_BROADCAST"),
    "IPPROTO_TCP": (
        "TCP_NODELAY",
        "TCP_NOTSENT_LOWAT",
        "TCP_KEEPIDLE",
        "TCP_KEEPINTVL",
        "TCP_KEEPCNT",
        "TCP_USER_TIMEOUT",
    ),
    "IPPROTO_IP": ("IP_BIND_ADDRESS_NO_PORT", "IP_TOS", "IP_TTL"),
    "IPPROTO_IPV6": ("IPV6_V6ONLY",),
}
_OPTIONS: Final = {
    (getattr(socket, level), getattr(socket, name)): name
    for level, names in _OPTION_NAMES.items()
    for name in names
    if hasattr(socket, name)
}
if sys.platform == "linux":
    # Python 3.10's socket module lacks it; trio then uses Linux's number.
    _OPTIONS.setdefault((socket.IPPROTO_IP, 24), "IP_BIND_ADDRESS_NO_PORT")
_V6ONLY: Final = (socket.IPPROTO_IPV6, socket.IPV6_V6ONLY)
_EAI_ADDRFAMILY: Final = getattr(socket, "EAI_ADDRFAMILY", socket.EAI_FAMILY)
# SO_LINGER takes a struct linger; only "on, 0 seconds" (reset on close) matters here.
_LINGER: Final = (socket.SOL_SOCKET, socket.SO_LINGER)

# setsockopt(SO_SNDBUF/SO_RCVBUF, n) (net/core/sock.c): n is read as an unsigned
# int, capped at net.core.wmem_max / rmem_max (4 MiB on current kernels), doubled,
# and raised to SOCK_MIN_SNDBUF / SOCK_MIN_RCVBUF (include/net/sock.h). So 0
# gives the minimum and a negative n the maximum, as on Linux 6.18 (x86-64).
_BUFFER_MAX: Final = 4194304
_BUFFER_MIN: Final = {"send": 4608, "receive": 2304}


def linux_buffer_size(which: Literal["send", "receive"], asked: int) -> int:
    """What ``getsockopt`` reports after ``setsockopt(SO_SNDBUF or SO_RCVBUF, asked)`` on Linux."""
    return max(2 * min(asked & 0xFFFFFFFF, _BUFFER_MAX), _BUFFER_MIN[which])


def fail(code: int, detail: str = "") -> OSError:
    """Make the :class:`OSError` subclass a real socket raises for ``code``."""
    message = os.strerror(code) + (f" ({detail})" if detail else "")
    return OSError(code, message)


_PREFIXES: Final = {
    socket.SOL_SOCKET: "SO_",
    socket.IPPROTO_TCP: "TCP_",
    socket.IPPROTO_IP: "IP_",
    socket.IPPROTO_IPV6: "IPV6_",
}


def _option_name(level: int, optname: int) -> str:
    """``"IP_MULTICAST_TTL"`` for (IPPROTO_IP, 33), for error messages."""
    prefix = _PREFIXES.get(level)
    if prefix is not None:
        for name in dir(socket):
            if name.startswith(prefix) and getattr(socket, name) == optname:
                return name
    return f"level={level}, optname={optname}"


class VirtualSocket(trio.socket.SocketType):
    """A socket on a :class:`~trionet.testing.VirtualNetwork`.

    Made by ``trio.socket.socket()`` while the network is installed, on the host
    the calling task acts as. Subclasses implement TCP and UDP.
    """

    def __init__(
        self,
        net: Network,
        host: Host,
        family: socket.AddressFamily,
        kind: socket.SocketKind,
        proto: int,
    ) -> None:
        super().__init__()
        self._net = net
        self._host = host
        self._family = family
        self._kind = kind
        self._proto = proto
        self._fd = next(_fds)
        self._closed = False
        self._frozen = False  # its host crashed: calls wait until it is closed
        self._closed_event = trio.Event()
        self._local: tuple[str | None, int] | None = None  # (ip or None=wildcard, port)
        self._in_table = False
        self._options: dict[tuple[int, int], int] = {}
        self._waiting: dict[str, bool] = {"read": False, "write": False}
        # Where this socket's calls wait for the network (see _vevents.EventQueue).
        self._lot = trio.lowlevel.ParkingLot()
        self._abort_on_close = False  # SO_LINGER with a zero timeout
        host._sockets[self] = None
        net._open[self] = None

    # ---- identity -------------------------------------------------------

    @property
    def family(self) -> socket.AddressFamily:
        return self._family

    @property
    def type(self) -> socket.SocketKind:
        return self._kind

    @property
    def proto(self) -> int:
        return self._proto

    @property
    def did_shutdown_SHUT_WR(self) -> bool:
        return False

    @property
    def host(self) -> Host:
        """The :class:`~trionet.testing.VirtualHost` this socket belongs to."""
        return self._host

    def fileno(self) -> int:
        """A virtual descriptor number, ``-1`` once closed; not usable with the OS."""
        return -1 if self._closed else self._fd

    def __repr__(self) -> str:
        kind = "tcp" if self._kind == socket.SOCK_STREAM else "udp"
        state = "closed" if self._closed else f"fd={self._fd}"
        return f"<virtual {kind} socket on host {self._host.name!r}, {state}>"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # ---- unsupported ------------------------------------------------------

    def detach(self) -> int:
        raise NotImplementedError("detach() is not supported by virtual sockets")

    def dup(self) -> trio.socket.SocketType:
        raise NotImplementedError("dup() is not supported by virtual sockets")

    def get_inheritable(self) -> bool:
        return False

    def set_inheritable(self, inheritable: bool) -> None:
        if inheritable:
            raise NotImplementedError("set_inheritable(True) is not supported by virtual sockets")

    def share(self, process_id: int) -> bytes:
        raise NotImplementedError("share() is not supported by virtual sockets")

    # ---- closing ----------------------------------------------------------

    def close(self) -> None:
        """Close the socket; tasks blocked on it get :class:`trio.ClosedResourceError`."""
        if self._closed:
            return
        now = self._net._events.advance()
        self._closed = True
        if not self._frozen:
            self._on_close(now)
        time_wait = None if self._frozen else self._time_wait_binding()
        self._unbind()
        if time_wait is not None:
            self._host._enter_time_wait(self, *time_wait, now)
        self._host._sockets.pop(self, None)
        self._net._open.pop(self, None)
        self._closed_event.set()
        self._net._events.notify()

    def _on_close(self, now: float) -> None:
        """Protocol-specific part of closing (FIN or RST, ...)."""

    def _time_wait_binding(self) -> tuple[str | None, int] | None:
        """The (ip, port) that stays in TIME_WAIT once this socket is closed, or None.

        TCP returns its local address when this side closed the connection
        first (Linux keeps it TIME_WAIT_SECONDS); everything else, None.
        """
        return None

    def _crash(self, now: float) -> None:
        """The host crashed: say goodbye the way the protocol does, then freeze."""
        self._frozen = True
        self._on_crash(now)
        self._unbind()
        self._host._sockets.pop(self, None)

    def _on_crash(self, now: float) -> None:
        """Protocol-specific part of a crash."""

    def _exit_process(self, now: float) -> None:
        """The owning process exited: the kernel closes the socket as close() does, then freeze."""
        self._frozen = True
        self._on_close(now)
        self._unbind()
        self._host._sockets.pop(self, None)

    # ---- addresses --------------------------------------------------------

    def _check_open(self) -> None:
        """Start of every synchronous call: EBADF if closed, and catch up with the network.

        The kernel acts on packets as they arrive; the simulation acts on them
        when someone runs the event queue. Running it here makes a synchronous
        call (``getsockopt(SO_ERROR)``, ``getpeername()``...) right after a sleep
        see the RST or FIN that arrived meanwhile, as it would on a real socket.
        """
        self._net._events.advance()
        if self._closed:
            raise fail(errno.EBADF)

    def _sockaddr(self, ip: str | None, port: int) -> tuple[Any, ...]:
        if self._family == socket.AF_INET6:
            # Inside the network IPv4 traffic of a dual-stack socket carries
            # plain IPv4 addresses; the socket shows them IPv4-mapped, as Linux does.
            if ip is not None and ":" not in ip:
                ip = f"::ffff:{ip}"
            return (ip or "::", port, 0, 0)
        return (ip or "0.0.0.0", port)

    @property
    def _v6only(self) -> bool:
        return self._family == socket.AF_INET6 and bool(self._options.get(_V6ONLY, 0))

    def _parse(self, address: object, *, call: str) -> tuple[str | None, int]:
        """Check an address tuple; return (normalised ip, or None for the wildcard, port).

        Names are looked up in the virtual DNS table at once (no lookup delay).
        """
        size = (2,) if self._family == socket.AF_INET else (2, 3, 4)
        if not isinstance(address, tuple) or len(address) not in size:
            shape = "(host, port)" if size == (2,) else "(host, port[, flowinfo[, scope_id]])"
            raise TypeError(f"{call}(): address must be a {shape} tuple, not {address!r}")
        host, port = address[0], address[1]
        if not isinstance(port, int) or isinstance(port, bool):
            raise TypeError(f"{call}(): port must be an int, not {port!r}")
        if not 0 <= port <= 65535:
            raise OverflowError(f"{call}(): port must be 0-65535.")
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if host is None or host == "":
            return None, port
        if not isinstance(host, str):
            raise TypeError(f"{call}(): host must be a str, not {host!r}")
        if host == "<broadcast>":  # as trio and the stdlib spell it
            host = "255.255.255.255"
        try:
            ip = ipaddress.ip_address(host.split("%")[0])
        except ValueError:
            ip = ipaddress.ip_address(self._lookup_name(host))
        if ip.version == 4 and self._family == socket.AF_INET6 and not self._v6only:
            # trio resolves with AI_V4MAPPED for a dual-stack socket.
            ip = ipaddress.ip_address(f"::ffff:{ip}")
        wanted = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
        if wanted != self._family:
            # What trio's resolution (getaddrinfo) raises for the other family's literal.
            raise socket.gaierror(_EAI_ADDRFAMILY, "Address family for hostname not supported")
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            # A dual-stack socket reaches IPv4 through ::ffff:a.b.c.d; inside the
            # network that is plain IPv4. An IPv6-only one cannot (Linux:
            # bind EINVAL, connect/sendto ENETUNREACH).
            if self._v6only:
                code = errno.EINVAL if call == "bind" else errno.ENETUNREACH
                raise fail(code, f"{call}(): {ip} with IPV6_V6ONLY")
            ip = ip.ipv4_mapped
            if ip.is_unspecified:
                return "0.0.0.0", port
            return ip.compressed, port
        if ip.is_unspecified:
            return None, port
        return ip.compressed, port

    def _lookup_name(self, host: str) -> str:
        """The name's first address of the socket's family (dual-stack: else its first IPv4 one)."""
        dns = self._net._dns
        if self._family == socket.AF_INET6 and not self._v6only:
            try:
                return dns.first(host, socket.AF_INET6)
            except socket.gaierror:
                return dns.first(host, socket.AF_INET)
        return dns.first(host, self._family)

    def _bind_now(self, ip: str | None, port: int) -> None:
        if self._local is not None:
            raise fail(errno.EINVAL, "socket is already bound")
        if ip is not None and not self._host._owns(ip):
            raise fail(errno.EADDRNOTAVAIL, f"{ip} is not an address of host {self._host.name!r}")
        port = self._host._bind(self, ip, port)
        self._local = (ip, port)
        self._in_table = True
        if ip is not None and ":" in ip:
            self._options[_V6ONLY] = 1  # Linux's __inet6_bind(): a specific IPv6 address is IPv6-only

    def _unbind(self) -> None:
        if self._in_table and self._local is not None:
            self._host._unbind(self, *self._local)
        self._in_table = False

    def _source_for(self, dst_ip: str) -> str:
        """Bind to an ephemeral port if needed; return the source address towards ``dst_ip``."""
        dst_v6 = ":" in dst_ip
        if self._local is not None and self._local[0] not in (None, "0.0.0.0"):
            bound = self._local[0]
            assert bound is not None
            if (":" in bound) != dst_v6:  # bound to the other family's address
                raise fail(errno.ENETUNREACH, f"bound to {bound}, cannot reach {dst_ip}")
            return bound
        family = socket.AF_INET6 if dst_v6 else socket.AF_INET
        if ipaddress.ip_address(dst_ip).is_loopback:
            source = "::1" if dst_v6 else "127.0.0.1"
        else:
            found = self._host.address_of(family)
            if found is None:
                name = self._host.name
                raise fail(errno.ENETUNREACH, f"host {name!r} has no {family.name} address")
            source = found
        if self._local is None:
            self._bind_now(None, 0)
        return source

    def getsockname(self) -> tuple[Any, ...]:
        self._check_open()
        if self._local is None:
            return self._sockaddr(None, 0)
        return self._sockaddr(*self._local)

    def getpeername(self) -> tuple[Any, ...]:
        self._check_open()
        raise fail(errno.ENOTCONN)

    # ---- options ----------------------------------------------------------

    @overload
    def getsockopt(self, level: int, optname: int) -> int: ...

    @overload
    def getsockopt(self, level: int, optname: int, buflen: int) -> bytes: ...

    def getsockopt(self, level: int, optname: int, buflen: int | None = None) -> int | bytes:
        self._check_open()
        if (level, optname) == _LINGER and buflen is not None:
            return struct.pack("ii", int(self._abort_on_close), 0)
        if buflen is not None:
            raise NotImplementedError(
                f"getsockopt({_option_name(level, optname)}, buflen): byte-valued options "
                "are not supported by virtual sockets"
            )
        if level == socket.SOL_SOCKET:
            fixed = {
                socket.SO_TYPE: int(self._kind),
                getattr(socket, "SO_DOMAIN", -1): int(self._family),
                getattr(socket, "SO_PROTOCOL", -1): self._proto,
                socket.SO_ERROR: self._take_error(),
                socket.SO_ACCEPTCONN: int(self._listening()),
                socket.SO_SNDBUF: self._buffer_size("send"),
                socket.SO_RCVBUF: self._buffer_size("receive"),
            }
            if optname in fixed:
                return fixed[optname]
        key = (level, optname)
        if key not in _OPTIONS:
            raise NotImplementedError(
                f"getsockopt({_option_name(level, optname)}) is not supported by virtual sockets"
            )
        self._check_option_family(key)
        return self._options.get(key, 0)

    @overload
    def setsockopt(self, level: int, optname: int, value: int | Buffer) -> None: ...

    @overload
    def setsockopt(self, level: int, optname: int, value: None, optlen: int) -> None: ...

    def setsockopt(
        self, level: int, optname: int, value: int | Buffer | None, optlen: int | None = None
    ) -> None:
        self._check_open()
        name = _option_name(level, optname)
        if (level, optname) == _LINGER and value is not None and not isinstance(value, int):
            onoff, seconds = struct.unpack("ii", bytes(memoryview(value))[:8])
            self._abort_on_close = bool(onoff) and seconds == 0
            return
        if not isinstance(value, int):
            raise NotImplementedError(
                f"setsockopt({name}, <bytes>): byte-valued options are not supported by virtual sockets"
            )
        key = (level, optname)
        if level == socket.SOL_SOCKET and optname in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            self._set_buffer_size("send" if optname == socket.SO_SNDBUF else "receive", value)
            return
        if key not in _OPTIONS:
            raise NotImplementedError(f"setsockopt({name}) is not supported by virtual sockets")
        self._check_option_family(key)
        if key == _V6ONLY and self._local is not None:
            raise fail(errno.EINVAL, "IPV6_V6ONLY cannot change once the socket is bound")
        self._options[key] = int(value)

    def _check_option_family(self, key: tuple[int, int]) -> None:
        if key[0] == socket.IPPROTO_IPV6 and self._family != socket.AF_INET6:
            raise fail(errno.ENOPROTOOPT)
        if key[0] == socket.IPPROTO_TCP and self._kind != socket.SOCK_STREAM:
            raise fail(errno.ENOPROTOOPT)

    def _take_error(self) -> int:
        return 0

    def _listening(self) -> bool:
        return False

    def _connected_peer(self) -> tuple[str, int] | None:
        """The peer a connected datagram socket accepts datagrams from, else None."""
        return None

    def _buffer_size(self, which: Literal["send", "receive"]) -> int:
        raise NotImplementedError

    def _set_buffer_size(self, which: Literal["send", "receive"], size: int) -> None:
        raise NotImplementedError
