"""Sockets handed in by a service manager: listen_fds (systemd socket activation).

systemd (and launchers that copy its protocol: s6, supervisord's fcgi
programs, ``systemd-socket-activate`` for testing) binds the listening sockets
itself, before the service starts, and passes them as file descriptors 3, 4,
... with three environment variables: ``LISTEN_FDS`` (how many),
``LISTEN_PID`` (the process they are meant for: a child that inherits the
environment must not take them) and ``LISTEN_FDNAMES`` (a name for each,
colon-separated). See sd_listen_fds(3). The service then needs no privilege
to bind port 443, restarts without refusing a connection, and starts on the
first connection.
"""

from __future__ import annotations

import os
import socket

import trio

__all__ = ["SD_LISTEN_FDS_START", "listen_fds"]

#: The first file descriptor passed (sd-daemon.h's SD_LISTEN_FDS_START).
SD_LISTEN_FDS_START = 3


def listen_fds(name: str | None = None, *, unset_environment: bool = True) -> list[trio.socket.SocketType]:
    """The sockets a service manager passed to this process, as trio sockets.

    Reads ``LISTEN_FDS`` and ``LISTEN_PID`` as sd_listen_fds(3) does: the
    descriptors are this process's only if ``LISTEN_PID`` is its own pid (a
    child that merely inherited the variables gets none), and they are made
    close-on-exec. Hand them to a server::

        async with trionet.open_tcp_server(handler, sockets=trionet.listen_fds()):
            ...

    Args:
      name: Only the sockets whose ``LISTEN_FDNAMES`` entry is ``name`` (the
          ``FileDescriptorName=`` of their systemd socket unit); ``None``: all.
      unset_environment: Remove the three variables (the default, as
          ``sd_listen_fds(1)``), so that no child process takes the sockets.

    Returns:
      The sockets in descriptor order; empty when none were passed (started
      by hand, or the variables are for another process).

    Raises:
      ValueError: ``LISTEN_FDS`` or ``LISTEN_PID`` is not a number, or
          ``LISTEN_FDNAMES`` names a different number of descriptors.
      OSError: A descriptor is not an open socket.
    """
    count_text = os.environ.get("LISTEN_FDS")
    pid_text = os.environ.get("LISTEN_PID")
    names_text = os.environ.get("LISTEN_FDNAMES")
    if unset_environment:
        for variable in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
            os.environ.pop(variable, None)
    if count_text is None or pid_text is None:
        return []
    if not (count_text.isdigit() and pid_text.isdigit()):
        raise ValueError(f"LISTEN_FDS={count_text!r} and LISTEN_PID={pid_text!r} must be numbers")
    if int(pid_text) != os.getpid():
        return []  # meant for another process (a parent that did not unset them)
    count = int(count_text)
    names = names_text.split(":") if names_text is not None else ["unknown"] * count
    if len(names) != count:
        raise ValueError(f"LISTEN_FDNAMES names {len(names)} descriptors, LISTEN_FDS says {count}")
    sockets = []
    for fd, fd_name in zip(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count), names, strict=True):
        os.set_inheritable(fd, False)
        if name is not None and fd_name != name:
            continue
        sockets.append(trio.socket.from_stdlib_socket(socket.socket(fileno=fd)))
    return sockets
