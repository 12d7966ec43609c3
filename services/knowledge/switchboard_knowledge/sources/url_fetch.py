"""Fetching a URL document without letting a URL reach inside the network (SSRF).

Every hop (the URL and each redirect) is checked the same way: http or https only; the host is
resolved once, every address it resolves to must be public (unless
SB_KNOWLEDGE_ALLOW_PRIVATE_URLS), and the connection goes to that checked address, so a second
DNS answer (rebinding) cannot send it elsewhere. TLS still verifies the certificate against
the host name. Size (SB_KNOWLEDGE_URL_MAX_BYTES) and time (SB_KNOWLEDGE_URL_TIMEOUT_SECONDS,
redirects included) are bounded.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin, urlsplit

import httpx

from switchboard_shared.knowledge.file_types import EXTENSION_BY_CONTENT_TYPE

from .errors import SourceError

_MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Fetched:
    data: bytes
    content_type: str
    extension: str | None  # the Dify file type its content type maps to, if any


def refused_address(ip: IPAddress) -> bool:
    """Whether an address is private, loopback, link-local, reserved or otherwise not public."""
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


class UrlFetcher:
    """Fetches URL documents for one knowledge process (its own HTTP pool, no proxies from the environment)."""

    def __init__(self, *, max_bytes: int, timeout_seconds: float, allow_private: bool) -> None:
        self.max_bytes, self.timeout_seconds, self.allow_private = max_bytes, timeout_seconds, allow_private
        self._http = httpx.AsyncClient(follow_redirects=False, trust_env=False, timeout=timeout_seconds)

    async def close(self) -> None:
        await self._http.aclose()

    async def fetch(self, url: str) -> Fetched:
        """The body of `url`; `SourceError` with the reason when it cannot or may not be had."""
        try:
            async with asyncio.timeout(self.timeout_seconds):
                return await self._follow(url)
        except TimeoutError:
            raise SourceError(f"fetching {url} took longer than {self.timeout_seconds:g} s") from None
        except httpx.HTTPError as exc:
            raise SourceError(f"fetching {url} failed: {type(exc).__name__}: {exc}"[:500]) from None

    async def _follow(self, url: str) -> Fetched:
        for _ in range(_MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise SourceError(f"only http and https URLs can be fetched, not {url[:200]!r}")
            address = await self._checked_address(parts.hostname, parts.port or (443 if parts.scheme == "https" else 80))
            host = f"[{address}]" if address.version == 6 else str(address)
            netloc = host if parts.port is None else f"{host}:{parts.port}"
            pinned = parts._replace(netloc=netloc).geturl()
            request = self._http.build_request(
                "GET", pinned, headers={"Host": parts.netloc.rpartition("@")[2]},
                extensions={"sni_hostname": parts.hostname} if parts.scheme == "https" else {},
            )
            response = await self._http.send(request, stream=True)
            try:
                if response.status_code in _REDIRECTS and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code >= 400:
                    raise SourceError(f"{url} answered HTTP {response.status_code}")
                return await self._body(url, response)
            finally:
                await response.aclose()
        raise SourceError(f"{url} redirected more than {_MAX_REDIRECTS} times")

    async def _checked_address(self, hostname: str, port: int) -> IPAddress:
        try:
            addresses = [ipaddress.ip_address(hostname.strip("[]"))]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(hostname, port, type=socket.SOCK_STREAM)
            except socket.gaierror as exc:
                raise SourceError(f"the host {hostname!r} cannot be resolved ({exc.strerror})") from None
            addresses = list(dict.fromkeys(ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos))
        if not addresses:
            raise SourceError(f"the host {hostname!r} has no address")
        if not self.allow_private:
            refused = [a for a in addresses if refused_address(a)]
            if refused:
                raise SourceError(
                    f"{hostname} resolves to {refused[0]}, a private, loopback, link-local or reserved address; "
                    "such URLs are refused unless SB_KNOWLEDGE_ALLOW_PRIVATE_URLS is set"
                )
        return addresses[0]

    async def _body(self, url: str, response: httpx.Response) -> Fetched:
        declared = response.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            raise SourceError(f"{url} is {declared} bytes; the limit is {self.max_bytes} bytes (SB_KNOWLEDGE_URL_MAX_BYTES)")
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.aiter_bytes():
            size += len(chunk)
            if size > self.max_bytes:
                raise SourceError(f"{url} is larger than {self.max_bytes} bytes (SB_KNOWLEDGE_URL_MAX_BYTES)")
            chunks.append(chunk)
        data = b"".join(chunks)
        if not data:
            raise SourceError(f"{url} answered with an empty body")
        content_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        return Fetched(data, content_type, EXTENSION_BY_CONTENT_TYPE.get(content_type))
