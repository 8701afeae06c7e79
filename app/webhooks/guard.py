"""Refuse webhook targets inside private networks unless allowed (SSRF protection)."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from urllib.parse import urlsplit


class ForbiddenTarget(Exception):
    pass


async def check_target(url: str, *, allow_private: bool) -> None:
    """Raise ForbiddenTarget when `url` resolves to a loopback, private or link-local address."""
    if allow_private:
        return
    host = urlsplit(url).hostname
    if not host:
        raise ForbiddenTarget("no host in URL")
    try:
        infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise ForbiddenTarget(f"cannot resolve host: {exc.strerror}") from None
    for info in infos:
        address = ipaddress.ip_address(info[4][0])
        if not address.is_global:
            raise ForbiddenTarget("the host resolves to a non-public address")
