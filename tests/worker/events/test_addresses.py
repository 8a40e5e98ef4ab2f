"""The SSRF guard: an endpoint cannot point roomwarden at its own network."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from worker.events import addresses


def resolves_to(*ips: str) -> addresses.Resolver:
    def resolve(host: str, port: int) -> list[Any]:
        family = socket.AF_INET6
        return [
            (family if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ips
        ]

    return resolve


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://127.0.0.1/hook", "loopback"),
        ("http://localhost:8080/hook", "loopback"),
        ("http://2130706433/hook", "loopback"),  # 127.0.0.1 written as one number
        ("http://[::1]/hook", "loopback"),
        ("http://10.1.2.3/hook", "private"),
        ("http://172.16.0.5/hook", "private"),
        ("http://192.168.1.10/hook", "private"),
        ("http://169.254.169.254/latest/meta-data", "link-local"),  # cloud metadata
        ("http://[fe80::1]/hook", "link-local"),
        ("http://[fc00::1]/hook", "private"),
        ("http://0.0.0.0/hook", "unspecified"),
        ("http://[::ffff:127.0.0.1]/hook", "loopback"),  # IPv4-mapped IPv6
        ("http://224.0.0.1/hook", "multicast"),
        ("http://240.0.0.1/hook", "reserved"),
        ("http://100.64.0.1/hook", "not-global"),  # carrier-grade NAT
    ],
)
def test_each_class_of_inside_address_is_refused(url: str, kind: str) -> None:
    with pytest.raises(addresses.AddressRefused) as refused:
        addresses.check(url, allow_private=False)
    assert f"a {kind} address" in refused.value.message
    addresses.check(url, allow_private=True)  # tests and the demo may


def test_a_name_that_resolves_inside_is_refused_even_among_public_addresses() -> None:
    with pytest.raises(addresses.AddressRefused, match="private"):
        addresses.check(
            "https://hooks.example.com/x",
            allow_private=False,
            resolve=resolves_to("93.184.216.34", "10.0.0.7"),
        )


def test_a_public_address_is_accepted() -> None:
    addresses.check("https://hooks.example.com/x", allow_private=False, resolve=resolves_to("93.184.216.34"))


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("ftp://example.com/x", "http:// or https://"),
        ("https:///nohost", "no host"),
        ("https://user:pw@example.com/x", "no credentials"),
        ("https://example.com:99999/x", "not a valid URL"),
    ],
)
def test_urls_that_are_not_http_endpoints_are_refused(url: str, why: str) -> None:
    with pytest.raises(addresses.AddressRefused, match=why):
        addresses.check(url, allow_private=True)


def test_a_name_that_does_not_resolve_is_refused() -> None:
    def fails(host: str, port: int) -> list[Any]:
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(addresses.AddressRefused, match="cannot resolve"):
        addresses.check("https://nowhere.invalid/x", allow_private=False, resolve=fails)
