"""Refuse targets inside private networks unless allowed (SSRF protection), without a
DNS-rebinding gap: the host is resolved once, every address is judged, and the request is
sent to the judged address itself, with the name kept for the Host header and for TLS (SNI
and certificate hostname check). Nothing is resolved again between the check and the
connection, so a name that answers a public address to the check and a private one to the
connection reaches nothing it should not.

Callers send with `follow_redirects=False`: a redirect's target has to be pinned in turn."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import httpx

from app.errors import ErrorItem, InvalidRequest

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""(host, port) -> the host's IP addresses as strings, in the resolver's order."""

DEFAULT_PORTS = {"http": 80, "https": 443}

# Ranges the ipaddress module counts as non-global only since the CVE-2024-4032 update of its
# tables (Python 3.11.10): named here so that the verdict does not depend on the patch level
# of the interpreter. 192.0.0.0/24: IETF protocol assignments; 64:ff9b:1::/48: local-use
# NAT64, whose embedded IPv4 sits where the local operator decides, so it cannot be judged;
# 2002::/16: 6to4, a relay decides where the packet ends up; 3fff::/20: documentation.
NOT_GLOBAL = tuple(
    ipaddress.ip_network(network)
    for network in ("192.0.0.0/24", "64:ff9b:1::/48", "2002::/16", "3fff::/20")
)
# The well-known NAT64 prefix: a translator connects to the IPv4 address in the last 32 bits.
NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


class ForbiddenTarget(Exception):
    """The target may not be called; the message says why (user-facing: no secrets)."""


_PRIVATE_HINT = (
    "; webhooks go to public addresses only (WEBHOOK_ALLOW_PRIVATE=true allows private ones)"
)


async def system_resolve(host: str, port: int) -> list[str]:
    """The operating system's answer for `host`, each address once, in its order."""
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ForbiddenTarget(f"cannot resolve host: {exc.strerror}") from None
    except UnicodeError:  # a label IDNA cannot encode
        raise ForbiddenTarget("cannot resolve host: invalid host name") from None
    addresses: list[str] = []
    for info in infos:
        address = str(info[4][0])
        if address not in addresses:
            addresses.append(address)
    return addresses


def embedded_ipv4(address: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses a packet to `address` is tunnelled to (6to4, Teredo)."""
    found: list[ipaddress.IPv4Address] = []
    if address.sixtofour is not None:
        found.append(address.sixtofour)
    if address.teredo is not None:
        found.extend(address.teredo)  # (server, client): either may be where it lands
    return found


def is_public(address: IPAddress) -> bool:
    """Whether `address` may be called from a service that sits next to private networks."""
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            # A dual-stack socket connects to the IPv4 address itself: that is what counts.
            return is_public(mapped)
        if address in NAT64:
            # The translator connects to the IPv4 address; the prefix itself lies in ::/8,
            # which ipaddress calls reserved.
            return is_public(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
        if not all(is_public(inner) for inner in embedded_ipv4(address)):
            return False
        # Deprecated site-local space is missing from ipaddress's non-global tables.
        if address.is_site_local:
            return False
    # is_global alone lets multicast (224/4, ff00::/8) and reserved IPv6 ranges through.
    return (
        address.is_global
        and not address.is_private
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_unspecified
        and not address.is_loopback
        and not address.is_link_local
        and not any(address in network for network in NOT_GLOBAL)
    )


@dataclass(frozen=True)
class PinnedTarget:
    """Where to send a request for a checked URL: to the checked address, under the name."""

    url: str  # the URL with its host replaced by `address` (IPv6 bracketed)
    host_header: str  # the URL's host, with :port when the URL named a non-default port
    sni_hostname: str | None  # the host name for TLS (https with a name as host only)
    address: str  # the IP address connected to

    def request(
        self,
        client: httpx.AsyncClient,
        method: str,
        *,
        content: bytes,
        headers: Mapping[str, str],
    ) -> httpx.Request:
        """A request for `client.send`: to the pinned address, named as the original host."""
        merged = httpx.Headers(headers)
        merged["Host"] = self.host_header
        extensions = {"sni_hostname": self.sni_hostname} if self.sni_hostname else None
        return client.build_request(
            method, self.url, content=content, headers=merged, extensions=extensions
        )


async def pin(url: str, *, allow_private: bool, resolve: Resolver = system_resolve) -> PinnedTarget:
    """Resolve `url`'s host once and pin the first address; raise ForbiddenTarget when the URL
    is not http(s), has no host, or any address is not public (unless `allow_private`)."""
    # Parsed the way httpx parses it, so the host judged is the host that will be called.
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise ForbiddenTarget("invalid URL") from None
    if parsed.scheme not in DEFAULT_PORTS:
        raise ForbiddenTarget("not an http(s) URL")
    host = parsed.raw_host.decode("ascii")  # IDNA-encoded, lowercase, IPv6 without brackets
    if not host:
        raise ForbiddenTarget("no host in URL")
    try:
        literal: IPAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        answered = await resolve(host, parsed.port or DEFAULT_PORTS[parsed.scheme])
        try:
            addresses = [ipaddress.ip_address(address) for address in answered]
        except ValueError:
            raise ForbiddenTarget("the host resolves to an invalid address") from None
        if not addresses:
            raise ForbiddenTarget("the host resolves to no address")
    if not allow_private:
        # Every address, not only the first: the order of an answer is the answering
        # server's choice, so a name with any private address is refused whatever its order.
        for address in addresses:
            if not is_public(address):
                if literal is not None:
                    raise ForbiddenTarget(f"the URL's address is not public ({address})")
                raise ForbiddenTarget(f"the host resolves to a non-public address ({address})")
    connect_to = str(addresses[0])
    try:
        pinned_url = str(parsed.copy_with(host=connect_to))
    except httpx.InvalidURL:  # e.g. an IPv6 zone ID from the resolver
        raise ForbiddenTarget(f"the host resolves to an unusable address ({connect_to})") from None
    return PinnedTarget(
        url=pinned_url,
        host_header=parsed.netloc.decode("ascii"),
        sni_hostname=host if parsed.scheme == "https" and literal is None else None,
        address=connect_to,
    )


async def check_target(
    url: str, *, allow_private: bool, resolve: Resolver = system_resolve
) -> None:
    """Raise ForbiddenTarget when `url` may not be called (see `pin`)."""
    await pin(url, allow_private=allow_private, resolve=resolve)


async def refuse_forbidden_target(
    url: str, *, field: str, allow_private: bool, resolve: Resolver = system_resolve
) -> None:
    """A `422` at `["body", field]` (type `forbidden_target`) when webhooks could never be
    sent to `url`: the rule every attempt applies (`pin`), applied when the URL is given.
    With `allow_private` any address will do: nothing is resolved."""
    if allow_private:
        return
    try:
        await check_target(url, allow_private=False, resolve=resolve)
    except ForbiddenTarget as exc:
        hint = _PRIVATE_HINT if "public" in str(exc) else ""
        detail = ErrorItem(loc=["body", field], msg=f"{exc}{hint}", type="forbidden_target")
        raise InvalidRequest(f"{field}: {exc}", details=[detail]) from None
