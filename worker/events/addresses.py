"""Where an endpoint may point: the guard that keeps the events API from reaching inside the network.

A URL whose host resolves to any loopback, private, link-local (cloud metadata lives there),
shared, multicast, reserved or unspecified address is refused, IPv4-mapped IPv6 included,
unless ``ROOMWARDEN_ENDPOINTS_ALLOW_PRIVATE`` is true. The check runs when an endpoint is saved
and again before every attempt, since a name can be pointed elsewhere after it was accepted.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

Resolver = Callable[[str, int], list[Any]]


class AddressRefused(ValueError):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def _resolve(host: str, port: int) -> list[Any]:
    return socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)


def kind(address: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str | None:
    """Why an address is off limits ("loopback", "private", ...), or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    for name in ("unspecified", "loopback", "link_local", "multicast", "reserved", "private"):
        if getattr(address, f"is_{name}"):
            return name
    if not address.is_global:
        return "not_global"  # 100.64.0.0/10 and the like
    return None


def check_url(url: str) -> tuple[str, int]:
    """An http(s) URL with a host and no credentials in it; returns (host, port)."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise AddressRefused(f"not a valid URL: {exc}") from None
    if parts.scheme not in ("http", "https"):
        raise AddressRefused("the URL must start with http:// or https://")
    if not parts.hostname:
        raise AddressRefused("the URL has no host")
    if parts.username is not None or parts.password is not None:
        raise AddressRefused("put no credentials in the URL: verify the signature instead")
    return parts.hostname, port or (443 if parts.scheme == "https" else 80)


def check(url: str, *, allow_private: bool, resolve: Resolver = _resolve) -> None:
    """Raise AddressRefused when ``url`` may not receive events."""
    host, port = check_url(url)
    if allow_private:
        return
    try:
        found = resolve(host, port)
    except (OSError, UnicodeError) as exc:
        raise AddressRefused(f"cannot resolve {host}: {exc}") from None
    for *_, sockaddr in found:
        address = ipaddress.ip_address(str(sockaddr[0]).split("%", 1)[0])
        why = kind(address)
        if why is not None:
            raise AddressRefused(
                f"{host} resolves to {address}, a {why.replace('_', '-')} address; "
                "set ROOMWARDEN_ENDPOINTS_ALLOW_PRIVATE=true to allow it"
            )
