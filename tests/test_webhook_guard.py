"""The SSRF guard: every non-public range refused, the host resolved once and the request
sent to the address that was checked (no DNS-rebinding gap), TLS still checked against the
name. No packet leaves loopback: names are answered by fake resolvers, and "the internet"
is an httpx.MockTransport."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
import trustme

from app.webhooks.guard import (
    ForbiddenTarget,
    PinnedTarget,
    Resolver,
    check_target,
    is_public,
    pin,
    system_resolve,
)

NAME = "hooks.example.test"
PUBLIC_V4 = "93.184.215.14"
PUBLIC_V6 = "2606:4700:4700::1111"


class FakeResolver:
    """Answers each lookup with the next of `answers` (the last one again when they run
    out), and records every (host, port) it was asked."""

    def __init__(self, *answers: list[str]) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return self.answers[min(len(self.calls), len(self.answers)) - 1]


def answering(*addresses: str) -> FakeResolver:
    return FakeResolver(list(addresses))


async def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"resolved {host}:{port}, which needs no lookup")


def bracketed(address: str) -> str:
    return f"[{address}]" if ":" in address else address


# One address per range that must never be called; ids name the range.
NON_PUBLIC = [
    pytest.param("10.0.0.5", id="private-10/8"),
    pytest.param("172.16.3.4", id="private-172.16/12"),
    pytest.param("192.168.1.1", id="private-192.168/16"),
    pytest.param("fd12:3456::1", id="unique-local-fc00::/7"),
    pytest.param("127.0.0.1", id="loopback-127/8"),
    pytest.param("127.45.6.7", id="loopback-127/8-not-.1"),
    pytest.param("::1", id="loopback-::1"),
    pytest.param("169.254.169.254", id="link-local-169.254/16-metadata"),
    pytest.param("fe80::1", id="link-local-fe80::/10"),
    pytest.param("fec0::1", id="site-local-fec0::/10"),
    pytest.param("100.64.0.1", id="cgnat-100.64/10"),
    pytest.param("224.0.0.1", id="multicast-224/4"),
    pytest.param("239.255.255.250", id="multicast-239/8"),
    pytest.param("ff02::1", id="multicast-ff02"),
    pytest.param("ff0e::1", id="multicast-global-scope-ff0e"),
    pytest.param("240.0.0.1", id="reserved-240/4"),
    pytest.param("4000::1", id="reserved-ipv6"),
    pytest.param("192.0.2.1", id="documentation-192.0.2/24"),
    pytest.param("198.51.100.7", id="documentation-198.51.100/24"),
    pytest.param("203.0.113.9", id="documentation-203.0.113/24"),
    pytest.param("2001:db8::1", id="documentation-2001:db8::/32"),
    pytest.param("3fff::1", id="documentation-3fff::/20"),
    pytest.param("0.0.0.0", id="unspecified-0.0.0.0"),
    pytest.param("::", id="unspecified-::"),
    pytest.param("255.255.255.255", id="broadcast"),
    pytest.param("0.1.2.3", id="this-network-0/8"),
    pytest.param("198.18.0.1", id="benchmarking-198.18/15"),
    pytest.param("198.19.255.254", id="benchmarking-198.19"),
    pytest.param("192.0.0.8", id="ietf-protocol-192.0.0/24"),
    pytest.param("::ffff:127.0.0.1", id="ipv4-mapped-loopback"),
    pytest.param("::ffff:10.0.0.5", id="ipv4-mapped-private"),
    pytest.param("::ffff:169.254.169.254", id="ipv4-mapped-link-local"),
    pytest.param("2002:7f00:1::", id="6to4-of-127.0.0.1"),
    pytest.param("2002:a9fe:a9fe::1", id="6to4-of-169.254.169.254"),
    pytest.param("2002:a00:5::", id="6to4-of-10.0.0.5"),
    # Teredo: server 65.54.227.120, client 127.0.0.1 (stored inverted, as Teredo does).
    pytest.param("2001:0:4136:e378:8000:63bf:80ff:fffe", id="teredo-client-loopback"),
    # Teredo: server 10.0.0.5, client 93.184.215.14.
    pytest.param("2001:0:a00:5:8000:63bf:a247:28f1", id="teredo-server-private"),
    pytest.param("64:ff9b::7f00:1", id="nat64-of-127.0.0.1"),
    pytest.param("64:ff9b::a00:5", id="nat64-of-10.0.0.5"),
    pytest.param("64:ff9b::a9fe:a9fe", id="nat64-of-169.254.169.254"),
    pytest.param("64:ff9b:1::5db8:d70e", id="nat64-local-use-64:ff9b:1::/48"),
]

PUBLIC = [
    pytest.param(PUBLIC_V4, id="ipv4"),
    pytest.param("8.8.8.8", id="ipv4-dns"),
    pytest.param(PUBLIC_V6, id="ipv6"),
    pytest.param(f"::ffff:{PUBLIC_V4}", id="ipv4-mapped-public"),
    pytest.param("64:ff9b::5db8:d70e", id="nat64-of-public"),
]


@pytest.mark.parametrize("address", NON_PUBLIC)
def test_non_public_ranges_are_not_public(address: str) -> None:
    assert not is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_public(address: str) -> None:
    assert is_public(ipaddress.ip_address(address))


def test_the_embedded_addresses_are_the_ones_meant() -> None:
    """The Teredo and 6to4 parameters above really embed what their ids say."""
    teredo = ipaddress.IPv6Address("2001:0:4136:e378:8000:63bf:80ff:fffe").teredo
    assert teredo == (ipaddress.IPv4Address("65.54.227.120"), ipaddress.IPv4Address("127.0.0.1"))
    teredo = ipaddress.IPv6Address("2001:0:a00:5:8000:63bf:a247:28f1").teredo
    assert teredo == (ipaddress.IPv4Address("10.0.0.5"), ipaddress.IPv4Address(PUBLIC_V4))
    sixtofour = ipaddress.IPv6Address("2002:a9fe:a9fe::1").sixtofour
    assert sixtofour == ipaddress.IPv4Address("169.254.169.254")


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_a_name_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    resolver = answering(address)
    shown = re.escape(str(ipaddress.ip_address(address)))
    with pytest.raises(ForbiddenTarget, match=rf"non-public address \({shown}\)"):
        await pin(f"https://{NAME}/hook", allow_private=False, resolve=resolver)
    assert resolver.calls == [(NAME, 443)]
    with pytest.raises(ForbiddenTarget):
        await check_target(f"http://{NAME}/hook", allow_private=False, resolve=resolver)


@pytest.mark.parametrize("address", NON_PUBLIC)
async def test_a_non_public_ip_literal_is_refused_without_a_lookup(address: str) -> None:
    url = f"http://{bracketed(address)}:8080/hook"
    with pytest.raises(ForbiddenTarget, match="not public"):
        await pin(url, allow_private=False, resolve=never_resolve)


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/",  # 127.0.0.1 as one number
        "http://0x7f.1/",
        "http://127.1/",
    ],
)
async def test_odd_spellings_of_loopback_are_judged_by_what_they_resolve_to(url: str) -> None:
    # Not IP literals to the guard: they go to the resolver, which answers loopback.
    with pytest.raises(ForbiddenTarget, match=r"non-public address \(127\.0\.0\.1\)"):
        await pin(url, allow_private=False, resolve=answering("127.0.0.1"))


@pytest.mark.parametrize(
    "answer",
    [[PUBLIC_V4, "10.0.0.5"], ["10.0.0.5", PUBLIC_V4], [PUBLIC_V6, "::1"]],
    ids=["public-first", "private-first", "ipv6"],
)
async def test_a_name_with_public_and_private_addresses_is_refused(answer: list[str]) -> None:
    with pytest.raises(ForbiddenTarget, match="non-public address"):
        await pin(f"https://{NAME}/hook", allow_private=False, resolve=answering(*answer))


async def test_allow_private_lets_loopback_through() -> None:
    target = await pin("http://127.0.0.1:8080/hook", allow_private=True, resolve=never_resolve)
    assert target == PinnedTarget(
        url="http://127.0.0.1:8080/hook",
        host_header="127.0.0.1:8080",
        sni_hostname=None,
        address="127.0.0.1",
    )
    named = await pin(f"http://{NAME}/hook", allow_private=True, resolve=answering("127.0.0.1"))
    assert named.address == "127.0.0.1"
    await check_target("http://[::1]/", allow_private=True, resolve=never_resolve)


@pytest.mark.parametrize("address", PUBLIC)
async def test_public_addresses_pass(address: str) -> None:
    target = await pin(f"https://{NAME}/hook", allow_private=False, resolve=answering(address))
    assert target.address == str(ipaddress.ip_address(address))
    await check_target(
        f"http://{bracketed(address)}/hook", allow_private=False, resolve=never_resolve
    )


@pytest.mark.parametrize(
    "url",
    [
        "ftp://hooks.example.test/hook",
        "file:///etc/passwd",
        "gopher://127.0.0.1:6379/_FLUSHALL",
        "ws://hooks.example.test/hook",
    ],
)
async def test_other_schemes_are_refused(url: str) -> None:
    with pytest.raises(ForbiddenTarget, match=r"not an http\(s\) URL"):
        await pin(url, allow_private=True, resolve=never_resolve)


@pytest.mark.parametrize("url", ["http:///hook", "https://:443/hook"])
async def test_a_url_without_host_is_refused(url: str) -> None:
    with pytest.raises(ForbiddenTarget, match="no host"):
        await pin(url, allow_private=True, resolve=never_resolve)


async def test_an_unresolvable_name_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[tuple[Any, ...]] = []

    async def no_such_name(*args: Any, **kwargs: Any) -> list[Any]:
        asked.append(args)
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    # The system resolver is not asked: the lookup must not leave this machine.
    monkeypatch.setattr(asyncio.get_running_loop(), "getaddrinfo", no_such_name)
    with pytest.raises(ForbiddenTarget, match="cannot resolve host: Name or service not known"):
        await pin(f"https://{NAME}:8443/hook", allow_private=True)
    with pytest.raises(ForbiddenTarget, match="cannot resolve host"):
        await check_target(f"https://{NAME}/hook", allow_private=False)
    assert asked == [(NAME, 8443), (NAME, 443)]


async def test_resolver_answers_that_are_empty_or_not_addresses_are_refused() -> None:
    with pytest.raises(ForbiddenTarget, match="no address"):
        await pin(f"http://{NAME}/", allow_private=True, resolve=answering())
    with pytest.raises(ForbiddenTarget, match="invalid address"):
        await pin(f"http://{NAME}/", allow_private=True, resolve=answering("not-an-ip"))


async def test_system_resolve_answers_numeric_hosts_without_dns() -> None:
    assert await system_resolve("127.0.0.1", 80) == ["127.0.0.1"]


@pytest.mark.parametrize(
    ("url", "answer", "expected"),
    [
        (
            "https://Hooks.Example.test/a/b?x=1&y=2",
            [PUBLIC_V4, PUBLIC_V6],
            PinnedTarget(
                url=f"https://{PUBLIC_V4}/a/b?x=1&y=2",
                host_header=NAME,
                sni_hostname=NAME,
                address=PUBLIC_V4,
            ),
        ),
        (
            "https://hooks.example.test:443/",
            [PUBLIC_V4],
            PinnedTarget(
                url=f"https://{PUBLIC_V4}/", host_header=NAME, sni_hostname=NAME, address=PUBLIC_V4
            ),
        ),
        (
            "https://hooks.example.test:8443/h",
            [PUBLIC_V6, PUBLIC_V4],
            PinnedTarget(
                url=f"https://[{PUBLIC_V6}]:8443/h",
                host_header=f"{NAME}:8443",
                sni_hostname=NAME,
                address=PUBLIC_V6,
            ),
        ),
        (
            "http://hooks.example.test:8080/h?q",
            [PUBLIC_V4],
            PinnedTarget(
                url=f"http://{PUBLIC_V4}:8080/h?q",
                host_header=f"{NAME}:8080",
                sni_hostname=None,
                address=PUBLIC_V4,
            ),
        ),
        (
            "https://bücher.example/h",
            [PUBLIC_V4],
            PinnedTarget(
                url=f"https://{PUBLIC_V4}/h",
                host_header="xn--bcher-kva.example",
                sni_hostname="xn--bcher-kva.example",
                address=PUBLIC_V4,
            ),
        ),
        (
            f"https://[{PUBLIC_V6}]:8443/h",
            [],
            PinnedTarget(
                url=f"https://[{PUBLIC_V6}]:8443/h",
                host_header=f"[{PUBLIC_V6}]:8443",
                sni_hostname=None,  # an IP literal: no name to present or check
                address=PUBLIC_V6,
            ),
        ),
    ],
    ids=["first-address", "default-port", "ipv6-port", "http", "idn", "ip-literal"],
)
async def test_the_pinned_target(url: str, answer: list[str], expected: PinnedTarget) -> None:
    resolver = answering(*answer)
    assert await pin(url, allow_private=False, resolve=resolver) == expected
    assert len(resolver.calls) == (0 if expected.sni_hostname is None and "[" in url else 1)


async def test_the_request_goes_to_the_address_under_the_name() -> None:
    target = await pin(
        f"https://{NAME}:8443/hook", allow_private=False, resolve=answering(PUBLIC_V4)
    )
    async with httpx.AsyncClient(trust_env=False) as client:
        request = target.request(
            client,
            "POST",
            content=b"{}",
            headers={"content-type": "application/json", "HOST": "spoofed.example"},
        )
    assert request.method == "POST"
    assert str(request.url) == f"https://{PUBLIC_V4}:8443/hook"
    assert request.headers.get_list("host") == [f"{NAME}:8443"]
    assert request.headers["content-type"] == "application/json"
    assert request.extensions["sni_hostname"] == NAME
    assert request.content == b"{}"

    plain = await pin(f"http://{NAME}/hook", allow_private=False, resolve=answering(PUBLIC_V4))
    async with httpx.AsyncClient(trust_env=False) as client:
        request = plain.request(client, "POST", content=b"", headers={})
    assert request.headers["host"] == NAME
    assert "sni_hostname" not in request.extensions


# ---- the rebinding attack ------------------------------------------------------------------


@dataclass
class LoopbackListener:
    """A TCP server on 127.0.0.1 that counts the connections it gets."""

    port: int = 0
    connections: int = 0

    async def on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.connections += 1
        writer.close()


@asynccontextmanager
async def loopback_listener() -> AsyncIterator[LoopbackListener]:
    listener = LoopbackListener()
    server = await asyncio.start_server(listener.on_connection, "127.0.0.1", 0)
    listener.port = server.sockets[0].getsockname()[1]
    try:
        yield listener
    finally:
        server.close()
        await server.wait_closed()


async def test_a_rebinding_name_cannot_reach_loopback() -> None:
    async with loopback_listener() as loopback:
        # Public to the first lookup, loopback to any later one.
        resolver = FakeResolver([PUBLIC_V4], ["127.0.0.1"])
        url = f"https://{NAME}:{loopback.port}/hook"
        sent: list[httpx.Request] = []

        def internet(request: httpx.Request) -> httpx.Response:
            sent.append(request)
            return httpx.Response(204)

        target = await pin(url, allow_private=False, resolve=resolver)
        transport = httpx.MockTransport(internet)
        async with httpx.AsyncClient(
            transport=transport, trust_env=False, follow_redirects=False
        ) as client:
            request = target.request(
                client, "POST", content=b"{}", headers={"content-type": "application/json"}
            )
            response = await client.send(request)
        await asyncio.sleep(0.05)  # anything in flight to the loopback server has arrived

        assert response.status_code == 204
        assert resolver.calls == [(NAME, loopback.port)]
        assert len(sent) == 1
        assert sent[0].url.host == PUBLIC_V4
        assert sent[0].url.port == loopback.port
        assert sent[0].headers["host"] == f"{NAME}:{loopback.port}"
        assert sent[0].extensions["sni_hostname"] == NAME
        assert loopback.connections == 0

        # What a second lookup (the old check-then-connect) would have connected to: the
        # listener notices a connection, so the zero above means something.
        rebound = await resolver(NAME, loopback.port)
        _, writer = await asyncio.open_connection(rebound[0], loopback.port)
        writer.close()
        for _ in range(100):
            if loopback.connections:
                break
            await asyncio.sleep(0.01)
        assert loopback.connections == 1


# ---- TLS: SNI and the certificate check stay on the name -----------------------------------


@dataclass
class TlsServer:
    """An HTTPS server on 127.0.0.1 answering 204, recording SNI names and Host headers."""

    port: int = 0
    sni: list[str | None] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)

    def on_sni(self, connection: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.sni.append(name)

    async def on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            headers = dict(
                line.split(":", 1) for line in head.decode("latin-1").split("\r\n")[1:] if line
            )
            fields = {name.strip().lower(): value.strip() for name, value in headers.items()}
            self.hosts.append(fields.get("host", ""))
            await reader.readexactly(int(fields.get("content-length", "0")))
            writer.write(b"HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n")
            await writer.drain()
        finally:
            writer.close()


@asynccontextmanager
async def tls_server(ca: trustme.CA, *identities: str) -> AsyncIterator[TlsServer]:
    tls = TlsServer()
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*identities).configure_cert(context)
    context.sni_callback = tls.on_sni
    server = await asyncio.start_server(tls.on_connection, "127.0.0.1", 0, ssl=context)
    tls.port = server.sockets[0].getsockname()[1]
    try:
        yield tls
    finally:
        server.close()
        await server.wait_closed()


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


async def post(target: PinnedTarget, verify: ssl.SSLContext) -> httpx.Response:
    async with httpx.AsyncClient(verify=verify, trust_env=False, timeout=10) as client:
        request = target.request(
            client, "POST", content=b'{"ok":true}', headers={"content-type": "application/json"}
        )
        return await client.send(request)


async def test_tls_presents_and_checks_the_name_while_connecting_to_the_address(
    ca: trustme.CA,
) -> None:
    async with tls_server(ca, NAME) as server:
        resolver: Resolver = answering("127.0.0.1")
        url = f"https://{NAME}:{server.port}/hook"
        target = await pin(url, allow_private=True, resolve=resolver)
        assert target.url == f"https://127.0.0.1:{server.port}/hook"

        response = await post(target, trusting(ca))

    assert response.status_code == 204
    assert server.sni == [NAME]
    assert server.hosts == [f"{NAME}:{server.port}"]


async def test_a_certificate_for_another_name_is_refused(ca: trustme.CA) -> None:
    # Valid for the address connected to, but not for the name: checked against the name.
    async with tls_server(ca, "other.example.test", "127.0.0.1") as server:
        url = f"https://{NAME}:{server.port}/hook"
        target = await pin(url, allow_private=True, resolve=answering("127.0.0.1"))

        with pytest.raises(httpx.ConnectError, match="certificate verify failed"):
            await post(target, trusting(ca))

    assert server.sni == [NAME]
    assert server.hosts == []
