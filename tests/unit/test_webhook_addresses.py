"""Which callback URLs webhooks refuse: addresses that are not globally routable, in any
notation, and URLs whose meaning parsers disagree on."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from app.webhooks import WebhookRefused, check_url


@pytest.fixture(autouse=True)
def nothing_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "")


def _resolving(monkeypatch: pytest.MonkeyPatch, name: str, *addresses: str) -> None:
    """Make ``name`` resolve to ``addresses`` and nothing else."""
    real = socket.getaddrinfo

    def getaddrinfo(host: str, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != name:
            return real(host, port, *args, **kwargs)
        return [
            (socket.AF_INET6 if ":" in a else socket.AF_INET, socket.SOCK_STREAM, 6, "", (a, port))
            for a in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)


NOT_GLOBAL = [
    "100.100.100.200",  # Cloud metadata in carrier-grade NAT space (100.64.0.0/10).
    "100.64.0.1",
    "::ffff:10.0.0.1",  # IPv4-mapped private.
    "::ffff:127.0.0.1",
    "2002:7f00:1::1",  # 6to4 of 127.0.0.1.
    "2002:a9fe:a9fe::",  # 6to4 of 169.254.169.254.
    "64:ff9b::7f00:1",  # NAT64 of 127.0.0.1.
    "64:ff9b::6464:64c8",  # NAT64 of 100.100.100.200.
    "64:ff9b:1::808:808",  # Local-use NAT64 prefix.
    "::7f00:1",  # IPv4-compatible, deprecated.
    "224.0.1.1",
    "ff0e::1",
    "192.0.2.1",
    "fd00::1",
]


@pytest.mark.parametrize("address", NOT_GLOBAL)
def test_addresses_that_are_not_globally_routable_are_refused_at_submit(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    with pytest.raises(WebhookRefused, match="not a globally routable address"):
        check_url(f"http://{host}/hook", resolve=False)


@pytest.mark.parametrize("address", NOT_GLOBAL)
def test_names_resolving_to_addresses_that_are_not_globally_routable_are_refused(
    monkeypatch: pytest.MonkeyPatch, address: str
) -> None:
    _resolving(monkeypatch, "hooks.example.test", address)
    assert check_url("http://hooks.example.test/hook", resolve=False).addresses == ()
    with pytest.raises(WebhookRefused, match="not a globally routable address"):
        check_url("http://hooks.example.test/hook", resolve=True)


@pytest.mark.parametrize(
    "host", ["2130706433", "0x7f.1", "127.1", "017700000001", "0", "[::1]", "[0:0::1]"]
)
def test_loopback_in_every_notation_is_refused_at_submit(host: str) -> None:
    with pytest.raises(WebhookRefused):
        check_url(f"http://{host}:8000/hook", resolve=False)


@pytest.mark.parametrize(
    "address",
    ["8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8", "2002:808:808::1", "64:ff9b::808:808"],
)
def test_globally_routable_addresses_pass_also_through_6to4_or_nat64(address: str) -> None:
    host = f"[{address}]" if ":" in address else address
    destination = check_url(f"https://{host}/hook?x=1#top", resolve=True)
    assert destination.port == 443
    assert destination.target == "/hook?x=1"
    assert len(destination.addresses) == 1


def test_the_allow_list_lets_an_address_through_by_the_ipv4_network_it_leads_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "10.0.0.0/8, 100.64.0.0/10")
    for host in ["10.1.2.3", "[::ffff:10.1.2.3]", "[2002:a01:203::1]", "[64:ff9b::6440:1]"]:
        check_url(f"http://{host}/hook", resolve=True)
    with pytest.raises(WebhookRefused):
        check_url("http://[::ffff:127.0.0.1]/hook", resolve=True)


def test_an_allowed_host_name_may_resolve_to_a_private_address(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "hooks.example.test")
    _resolving(monkeypatch, "hooks.example.test", "10.0.0.7")
    destination = check_url("http://hooks.example.test:8080/hook", resolve=True)
    assert [str(address) for address in destination.addresses] == ["10.0.0.7"]
    _resolving(monkeypatch, "other.example.test", "10.0.0.7")
    with pytest.raises(WebhookRefused):
        check_url("http://other.example.test:8080/hook", resolve=True)


@pytest.mark.parametrize(
    "url",
    [
        "http://localhost/hook",
        "http://LOCALHOST./hook",
        "http://api.localhost/hook",
        "ftp://example.com/hook",
        "file:///etc/passwd",
        "http:///hook",
        "http://user:secret@example.com/hook",
        "http://example.com@127.0.0.1/hook",
        "http://127.0.0.1\\@example.com/hook",
        "http://example.com:0/hook",
        "http://example.com:70000/hook",
        "http://example.com:http/hook",
        "http://[::1/hook",
        "http://exa mple.com/hook",
        "http://example.com/ho\x00ok",
        "http://example.com/h\u00e9",
        "http://" + "a" * 64 + ".example/hook",
    ],
)
def test_odd_or_ambiguous_callback_urls_are_refused(url: str) -> None:
    with pytest.raises(WebhookRefused):
        check_url(url, resolve=True)


def test_every_address_a_name_resolves_to_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JOBSTACK_WEBHOOK_ALLOW", "192.0.2.0/24")
    _resolving(monkeypatch, "hooks.example.test", "192.0.2.1", "8.8.8.8", "100.64.0.1")
    with pytest.raises(WebhookRefused, match=r"100\.64\.0\.1"):
        check_url("http://hooks.example.test/hook", resolve=True)
