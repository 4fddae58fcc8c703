"""Fetching client-sent image URLs without letting clients reach the server's own network.

A v2 request may name its image by an http(s) URL. Fetching it is a server-side request made on a
client's behalf, so by default only public addresses are reached: every host name is resolved
here and the connection goes to an address that was checked (no second lookup for an attacker's
DNS to answer differently), literal IP hosts are checked the same way, and each redirect hop is
checked again before it is followed. `allow_private=True` (the `--allow-private-urls` flag) lifts
the address rule for operators whose images live on their own network.

Every fetch has a total timeout and a byte cap, and the answer must be a 2xx; callers decode and
check the image itself. Failures raise `UrlFetchError` with a message fit for a 422.
"""
from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import aiohttp
from aiohttp.abc import AbstractResolver

USER_AGENT = "Mozilla/5.0 (compatible; sdxl-node-server image fetch)"
MAX_REDIRECTS = 5
REDIRECT_STATUSES = frozenset({301, 302, 303, 307, 308})


class UrlFetchError(ValueError):
    """The URL could not be fetched as an image source (refused, unreachable, too large...)."""


def is_public_address(address: str) -> bool:
    """Whether an IP address is on the public internet: globally routable per IANA's
    special-purpose registries (so not loopback, private, shared/CGNAT, link-local, reserved or
    unspecified) and not multicast; IPv4-mapped IPv6 addresses are judged as IPv4."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def _literal_ip(host: str) -> str | None:
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        return None


class PublicOnlyResolver(AbstractResolver):
    """Resolves like the system resolver, then keeps only public addresses; raises when none is left.
    aiohttp connects to what this returns, so the checked address is the one used."""

    def __init__(self) -> None:
        self._inner = aiohttp.ThreadedResolver()

    async def resolve(self, host: str, port: int = 0, family: int = socket.AF_INET) -> list[dict[str, Any]]:
        answers = await self._inner.resolve(host, port, family)
        public = [answer for answer in answers if is_public_address(answer["host"])]
        if not public:
            raise UrlFetchError(f"the URL's host {host} resolves to a private or local address; "
                                "such URLs are refused unless the server runs with --allow-private-urls")
        return public

    async def close(self) -> None:
        await self._inner.close()


@dataclass(frozen=True)
class UrlFetchLimits:
    timeout_s: float = 20.0
    max_bytes: int = 50 * 1024 * 1024
    allow_private: bool = False


class UrlFetcher:
    """`await fetcher.fetch(url)` -> the body bytes, under the limits; one session per fetch so a
    slow or hostile server can never hold shared state."""

    def __init__(self, limits: UrlFetchLimits = UrlFetchLimits()) -> None:
        self.limits = limits

    def _check_url(self, url: str) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https"):
            raise UrlFetchError("only http:// and https:// image URLs are fetched")
        if not parts.hostname:
            raise UrlFetchError("the URL has no host")
        literal = _literal_ip(parts.hostname)
        if literal is not None and not self.limits.allow_private and not is_public_address(literal):
            raise UrlFetchError(f"the URL points to the private or local address {literal}; such URLs are "
                                "refused unless the server runs with --allow-private-urls")

    async def fetch(self, url: str) -> bytes:
        try:
            return await asyncio.wait_for(self._fetch(url.strip()), timeout=self.limits.timeout_s)
        except asyncio.TimeoutError:
            raise UrlFetchError(f"the URL did not answer within {self.limits.timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise UrlFetchError(f"could not fetch the URL ({exc.__class__.__name__}: {exc})") from None
        except OSError as exc:
            raise UrlFetchError(f"could not fetch the URL ({exc})") from None

    async def _fetch(self, url: str) -> bytes:
        resolver = None if self.limits.allow_private else PublicOnlyResolver()
        connector = aiohttp.TCPConnector(resolver=resolver, force_close=True) if resolver else \
            aiohttp.TCPConnector(force_close=True)
        async with aiohttp.ClientSession(connector=connector, headers={"User-Agent": USER_AGENT},
                                         auto_decompress=True) as session:
            for _ in range(MAX_REDIRECTS + 1):
                self._check_url(url)
                async with session.get(url, allow_redirects=False) as response:
                    if response.status in REDIRECT_STATUSES and "Location" in response.headers:
                        url = urljoin(url, response.headers["Location"])
                        continue
                    if not 200 <= response.status < 300:
                        raise UrlFetchError(f"the URL answered HTTP {response.status}")
                    return await self._read_capped(response)
        raise UrlFetchError(f"the URL redirected more than {MAX_REDIRECTS} times")

    async def _read_capped(self, response: aiohttp.ClientResponse) -> bytes:
        limit = self.limits.max_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            raise UrlFetchError(f"the URL's image is larger than {limit} bytes")
        chunks, size = [], 0
        async for chunk in response.content.iter_chunked(64 * 1024):
            size += len(chunk)
            if size > limit:
                raise UrlFetchError(f"the URL's image is larger than {limit} bytes")
            chunks.append(chunk)
        return b"".join(chunks)
