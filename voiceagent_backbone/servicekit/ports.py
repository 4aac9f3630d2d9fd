"""Listening ports as configuration: a port that cannot be listened on is a
`ConfigurationError` naming the variable to change.

gRPC only says that a bind failed (the reason needs GRPC_VERBOSITY=debug), so the reason is
found by trying the address with a plain socket. A service checks its ports before it opens
its database or loads a model: a second copy started by mistake stops in a second, before
it has written anything.
"""

from __future__ import annotations

import errno
import socket
from typing import Any

from voiceagent_backbone.servicekit.config import ConfigurationError, env_name

# Failures a free port would not have: another process holds it, or it needs privileges.
_CONFLICTS = (errno.EADDRINUSE, errno.EACCES)


def address(host: str, port: int) -> str:
    host = host.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def bind_failure(host: str, port: int) -> OSError | None:
    """Why host:port cannot be listened on now: a conflict on any of its addresses, else
    the first failure when none of them binds; None when it can."""
    try:
        found = socket.getaddrinfo(
            host.strip("[]") or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        return exc
    failure: OSError | None = None
    bound = False
    for family, kind, proto, _, sockaddr in found:
        with socket.socket(family, kind, proto) as probe:
            # As the servers do: a port whose old connections linger in TIME_WAIT is free.
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
                bound = True
            except OSError as exc:
                if exc.errno in _CONFLICTS:
                    return exc
                failure = failure or exc
    # "localhost" on a machine without IPv6: ::1 fails, 127.0.0.1 serves.
    return None if bound else failure


def listen_error(
    settings: Any, host_field: str, port_field: str, cause: BaseException | None
) -> ConfigurationError:
    """The one line for a port that could not be listened on, naming the variable."""
    kind = type(settings)
    host, port = str(getattr(settings, host_field)), int(getattr(settings, port_field))
    where = address(host, port)
    port_var = env_name(kind, port_field)
    code = cause.errno if isinstance(cause, OSError) else None
    if code == errno.EADDRINUSE:
        return ConfigurationError(
            f"{port_var}={port}: cannot listen on {where}: the port is in use by another "
            f"process (stop it, or set {port_var} to a free port)"
        )
    if code == errno.EACCES:
        return ConfigurationError(
            f"{port_var}={port}: cannot listen on {where}: permission denied (ports below "
            f"1024 need privileges; set {port_var} to another)"
        )
    reason = (cause.strerror if isinstance(cause, OSError) else None) or str(cause or "")
    if isinstance(cause, socket.gaierror) or code == errno.EADDRNOTAVAIL:
        host_var = env_name(kind, host_field)
        return ConfigurationError(
            f"{host_var}={host!r}: cannot listen on {where}: {reason} (not an address of "
            "this machine)"
        )
    return ConfigurationError(f"{port_var}={port}: cannot listen on {where}: {reason or 'failed'}")


def check_ports(settings: Any, *listeners: tuple[str, str]) -> None:
    """Raises a ConfigurationError for the first (host field, port field) pair that cannot
    be listened on (another process holds the port, the host is not this machine's), or
    two that name the same port. A port of -1 (off) is skipped."""
    kind = type(settings)
    taken: list[tuple[str, int, str]] = []
    for host_field, port_field in listeners:
        host, port = str(getattr(settings, host_field)), int(getattr(settings, port_field))
        if port < 0:
            continue
        for other_host, other_port, other_var in taken:
            if port and port == other_port and _overlap(host, other_host):
                raise ConfigurationError(
                    f"{env_name(kind, port_field)}={port}: the same port as {other_var}; "
                    "each listener needs its own"
                )
        taken.append((host, port, env_name(kind, port_field)))
        failure = bind_failure(host, port)
        if failure is not None:
            raise listen_error(settings, host_field, port_field, failure)


def _overlap(a: str, b: str) -> bool:
    wildcard = ("", "0.0.0.0", "::", "[::]")
    return a == b or a in wildcard or b in wildcard
