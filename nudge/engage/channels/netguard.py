"""The SSRF guard: provider, webhook and web push connections reach public addresses only.

Account users choose URLs (webhook URLs, outbound event webhooks, web push endpoints sent by
browsers, provider base URLs and SMTP hosts). Without a guard, any of them could make the
server POST to ``http://169.254.169.254/`` (cloud metadata), ``127.0.0.1`` (the admin
socket's neighbours) or the private network behind it. Checking the URL's text is not
enough: a public name can resolve to a private address, and again to another one between a
check and the connection (DNS rebinding). So the check is made **at connect time on the
resolved addresses**, and the connection is opened to the address that was checked:

- HTTP channels (httpx): ``guarded_transport`` puts ``GuardedBackend`` under httpx's
  connection pool; its ``connect_tcp`` resolves the host, refuses if any address is not
  public, and connects to a checked address (TLS still verifies the certificate against the
  URL's host name, which httpcore passes separately);
- SMTP (aiosmtplib): ``connect_socket`` returns a socket connected to a checked address,
  handed to aiosmtplib (which keeps the host name for TLS).

Refused: every address that is not globally routable — loopback, private (RFC 1918,
IPv6 ULA), link-local (including 169.254.169.254 and other metadata addresses), CGNAT,
multicast, reserved, unspecified, documentation ranges, and IPv4-mapped forms of these.
``NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS=true`` allows them (self-hosted providers on the
same host or LAN, and the test suite's local provider servers).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from typing import Any

import httpcore
import httpx

_allow_private = False


def configure(allow_private: bool) -> None:
    """Set from ``Settings.engage_allow_private_networks`` when the delivery service starts."""
    global _allow_private
    _allow_private = allow_private


def allows_private() -> bool:
    return _allow_private


class AddressRefused(httpcore.ConnectError):
    """A connection to a non-public address, refused by the SSRF guard."""


def refusal(ip: str) -> str | None:
    """Why this address may not be contacted (None: it may)."""
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    if addr.is_global and not addr.is_multicast:
        return None
    kind = ("a loopback" if addr.is_loopback else
            "a link-local (cloud metadata)" if addr.is_link_local else
            "an unspecified" if addr.is_unspecified else
            "a multicast" if addr.is_multicast else
            "a private" if addr.is_private else "a non-public")
    return f"{kind} address"


def check(host: str, addresses: list[str], allow_private: bool | None = None) -> None:
    allow = _allow_private if allow_private is None else allow_private
    if allow:
        return
    for ip in addresses:
        why = refusal(ip)
        if why is not None:
            raise AddressRefused(
                f"refused to connect to {host} ({ip}): {why}; set "
                "NUDGE_ENGAGE_ALLOW_PRIVATE_NETWORKS=true to allow private networks")


async def resolve(host: str, port: int, allow_private: bool | None = None
                  ) -> list[tuple[int, Any]]:
    """``(family, sockaddr)`` of every address of ``host``, all checked."""
    loop = asyncio.get_running_loop()
    try:
        infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
    check(host, [str(info[4][0]) for info in infos], allow_private)
    return [(info[0], info[4]) for info in infos]


async def connect_socket(host: str, port: int, timeout: float | None) -> socket.socket:
    """A non-blocking socket connected to a checked address of ``host``."""
    loop = asyncio.get_running_loop()
    last: OSError | None = None
    for family, addr in await resolve(host, port):
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            await asyncio.wait_for(loop.sock_connect(sock, addr), timeout)
            return sock
        except (OSError, TimeoutError) as exc:
            sock.close()
            last = exc if isinstance(exc, OSError) else OSError(f"connect to {host} timed out")
    raise last or OSError(f"no address for {host}")


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend with the guard in ``connect_tcp``."""

    def __init__(self, inner: httpcore.AsyncNetworkBackend) -> None:
        self.inner = inner

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        last: Exception | None = None
        for _family, addr in await resolve(host, port):
            try:
                return await self.inner.connect_tcp(addr[0], port, timeout=timeout,
                                                    local_address=local_address,
                                                    socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        assert last is not None
        raise last

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Any = None) -> httpcore.AsyncNetworkStream:
        raise AddressRefused("unix sockets are not provider addresses")

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


def guarded_transport(**kw: Any) -> httpx.AsyncHTTPTransport:
    """``httpx.AsyncHTTPTransport(**kw)`` whose connections pass the guard. Proxies from the
    environment are not used: a proxy would connect on our behalf, unchecked."""
    transport = httpx.AsyncHTTPTransport(trust_env=False, **kw)
    pool = transport._pool  # httpx builds its pool privately; the backend is its I/O seam
    pool._network_backend = GuardedBackend(pool._network_backend)  # type: ignore[union-attr]
    return transport


def client(*, timeout: Any, verify: Any = True, http2: bool = False,
           limits: httpx.Limits | None = None, **kw: Any) -> httpx.AsyncClient:
    """An ``httpx.AsyncClient`` for a provider, guarded. Keyword arguments as httpx's."""
    transport = guarded_transport(verify=verify, http2=http2,
                                  **({"limits": limits} if limits is not None else {}))
    return httpx.AsyncClient(timeout=timeout, transport=transport, trust_env=False, **kw)
