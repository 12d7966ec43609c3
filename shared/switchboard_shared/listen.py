"""Listening sockets for the HTTP servers, bound by us so a taken port is an exception, not an exit.

uvicorn binds its own sockets and calls `sys.exit` when it cannot, which ends the event loop
from inside a task. Binding here first turns that into `PortUnavailable` with one line saying
why, which the caller can report and clean up after. The CLI uses the same code to check every
port before it starts anything.
"""

from __future__ import annotations

import errno
import socket


class PortUnavailable(Exception):
    """A port cannot be listened on; `str()` is one line saying which and why."""


def bind_listeners(host: str, port: int, *, setting: str = "") -> list[socket.socket]:
    """Bound, non-blocking TCP sockets for every address `host` names (as asyncio's server binds them).

    SO_REUSEADDR as asyncio sets it, so a port in TIME_WAIT is free; IPv6 sockets are IPv6-only, so
    `::` and `0.0.0.0` can both be bound. Raises `PortUnavailable` (closing what it had bound).
    `setting` names where the port came from in the message (e.g. `SB_EDGE_PORT`).
    """
    where = f"{host}:{port}" + (f" ({setting})" if setting else "")
    try:
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror:
        raise PortUnavailable(
            f"cannot listen on {where}: {host!r} is not an address or host name this machine resolves"
        ) from None
    bound: list[socket.socket] = []
    seen: set[tuple[int, object]] = set()
    try:
        for family, kind, proto, _, address in infos:
            if (family, address) in seen:
                continue
            seen.add((family, address))
            sock = socket.socket(family, kind, proto)
            bound.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise PortUnavailable(f"cannot listen on {where}: {_reason(exc, port)}") from None
            sock.setblocking(False)
    except BaseException:
        for sock in bound:
            sock.close()
        raise
    return bound


def port_problem(host: str, port: int, *, setting: str = "") -> str | None:
    """Why `host:port` cannot be listened on right now (one line), or None when it can."""
    try:
        sockets = bind_listeners(host, port, setting=setting)
    except PortUnavailable as exc:
        return str(exc)
    for sock in sockets:
        sock.close()
    return None


def _reason(exc: OSError, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return "the port is already in use (another Switchboard or another program listens there): stop it or choose another port"
    if exc.errno == errno.EADDRNOTAVAIL:
        return "that address is not one of this machine's"
    if exc.errno == errno.EACCES:
        return f"permission denied (port {port} needs privileges): choose a port above 1023"
    return exc.strerror or str(exc)
