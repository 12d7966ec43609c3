"""The client's address: the socket peer, or, behind a trusted proxy, what X-Forwarded-For says.

X-Forwarded-For is read from the right: each proxy appends the address it received the request
from, so the rightmost hop that is not one of our trusted proxies is the client (hops further
left were written by the client itself and prove nothing). Peers outside SB_TRUSTED_PROXIES
never have the header honoured.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from starlette.types import Scope

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_address(text: str) -> IPAddress | None:
    """An IPv4/IPv6 address (IPv4-mapped IPv6 as IPv4), or None when it is none."""
    try:
        address = ipaddress.ip_address(text.strip())
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def parse_network(text: str) -> IPNetwork:
    """An address or CIDR as a network (`10.0.0.0/8`, `2001:db8::/32`, `192.0.2.7`); ValueError if neither."""
    return ipaddress.ip_network(text.strip(), strict=False)


def parse_networks(texts: Iterable[str]) -> tuple[IPNetwork, ...]:
    """Several networks (ValueError names the first bad one)."""
    networks = []
    for text in texts:
        try:
            networks.append(parse_network(text))
        except ValueError:
            raise ValueError(f"{text!r} is not an IP address or CIDR") from None
    return tuple(networks)


def in_any(address: IPAddress | None, networks: Iterable[IPNetwork]) -> bool:
    """Whether the address lies in one of the networks (an unknown address lies in none)."""
    return address is not None and any(address.version == n.version and address in n for n in networks)


class ClientAddresses:
    """Resolves the client address of a request, trusting X-Forwarded-For only from SB_TRUSTED_PROXIES."""

    def __init__(self, trusted_proxies: str) -> None:
        self._trusted = parse_networks(p for p in trusted_proxies.split(",") if p.strip())

    def of(self, scope: Scope) -> IPAddress | None:
        """The client's address, or None when it cannot be known."""
        client = scope.get("client")
        peer = parse_address(client[0]) if client else None
        if not self._trusted or not in_any(peer, self._trusted):
            return peer
        hops = [h for value in _header_values(scope, b"x-forwarded-for") for h in value.split(",")]
        for hop in reversed(hops):
            address = parse_address(hop)
            if address is None:
                return None  # a hop we cannot read: the client is unknown
            if not in_any(address, self._trusted):
                return address
            peer = address
        return peer  # every hop is a trusted proxy: the leftmost one is the client


def _header_values(scope: Scope, name: bytes) -> list[str]:
    return [value.decode("latin-1") for key, value in scope.get("headers", ()) if key == name]
