"""Webhooks: a job submitted with ``callback_url`` gets, on reaching a final state, a POST of
its JSON signed with its tenant's secret, delivered by a ``webhooks.deliver`` job that
retries with backoff.

A callback URL must not become a way to reach the platform's own network, so:

- only addresses that are globally routable are reached (not private, loopback,
  link-local, carrier-grade NAT, reserved or multicast ones, nor IPv6 addresses that wrap
  such an IPv4 one), and never ``localhost``, unless allow-listed (JOBSTACK_WEBHOOK_ALLOW:
  hosts or CIDRs, comma-separated);
- at delivery the host is resolved once, every address is checked, and the connection goes
  to a checked address (the host name still names the server in Host, SNI and the
  certificate check): a second resolution could answer another address (DNS rebinding);
- redirects are not followed: a redirect could send the POST anywhere, checked or not.
"""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ipaddress
import json
import re
import secrets
import socket
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from app import db
from app.config import load_settings
from app.errors import JobstackError, PermanentError
from app.jobs import submit
from app.models import Job, WebhookSecret

SIGNATURE_HEADER = "X-Jobstack-Signature"
EVENT_HEADER = "X-Jobstack-Event"
TIMEOUT = 10.0
#: Bytes of an answer's body read at most before hanging up: only its status matters.
MAX_ANSWER_BYTES = 64 * 1024
DEFAULT_PORTS = {"http": 80, "https": 443}
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# The well-known NAT64 prefix (RFC 6052): its last 32 bits are the IPv4 address reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
# Not globally reachable (IANA's special-purpose registry), though Python before 3.12.4
# and 3.11.10 calls it global: the local-use NAT64 prefix of RFC 8215.
_NOT_GLOBAL = (ipaddress.IPv6Network("64:ff9b:1::/48"),)
# Whitespace and control characters: http.client refuses them only at delivery, and
# parsers disagree on what they mean inside a URL.
_UNSAFE = re.compile(r"[\x00-\x20\x7f]")


class WebhookRefused(PermanentError):
    """The callback URL points somewhere jobstack does not deliver to."""


class WebhookRedirected(PermanentError):
    """The destination answered with a redirect; redirects are not followed."""


class WebhookFailed(JobstackError):
    """The destination did not accept the delivery; it is retried."""


@dataclass(frozen=True)
class Destination:
    """A checked callback URL: what to ask for, and the checked addresses to connect to."""

    url: str
    scheme: str
    host: str
    """ASCII host name or IP literal: the server's name in Host, SNI and its certificate."""
    port: int
    target: str
    """Path and query, as sent in the request line."""
    addresses: tuple[IPAddress, ...]
    """Every address the host resolved to, each checked; empty if not resolved."""


def _allowed() -> tuple[set[str], list[IPNetwork]]:
    hosts: set[str] = set()
    networks: list[IPNetwork] = []
    for entry in filter(None, (e.strip() for e in load_settings().webhook_allow.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower())
    return hosts, networks


def _forbidden(address: IPAddress) -> bool:
    # is_global alone would miss multicast (global in Python's eyes) and, on some Python
    # versions, ranges it counts as global; the other tests keep every version strict.
    return (
        not address.is_global
        or address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
        or any(address in network for network in _NOT_GLOBAL)
    )


def _stand_in_for(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address that ``address`` merely stands for: ::ffff:a.b.c.d (IPv4-mapped)
    is a.b.c.d on a dual-stack socket, 64:ff9b::a.b.c.d is a.b.c.d through NAT64."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _refused_part(address: IPAddress, networks: list[IPNetwork]) -> IPAddress | None:
    """The address, or the IPv4 address it leads to, that refuses ``address``; None if none."""
    if any(address in network for network in networks):
        return None
    if isinstance(address, ipaddress.IPv6Address):
        stand_in = _stand_in_for(address)
        if stand_in is not None:
            return _refused_part(stand_in, networks)
        # A 6to4 address (2002:a.b.c.d::/48) reaches a.b.c.d's network through a relay:
        # it is judged by a.b.c.d, as Python 3.11 and 3.12 do (3.13 calls all of 2002::/16
        # not global; one rule on every version).
        wrapped = address.sixtofour
        if wrapped is not None:
            return wrapped if _refused_part(wrapped, networks) is not None else None
    return address if _forbidden(address) else None


def _literal(host: str) -> IPAddress | None:
    """The address a host names literally, also in the IPv4 notations a resolver accepts
    (``127.1``, ``0x7f.0.0.1``, ``2130706433``), which must not pass for names."""
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def lookup(host: str, port: int) -> tuple[IPAddress, ...]:
    """Every address ``host`` resolves to, in the resolver's order, each once."""
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as error:
        raise WebhookFailed(f"cannot resolve {host!r}: {error}") from None
    except UnicodeError as error:  # A label too long or empty: no resolver takes it.
        raise WebhookRefused(f"callback host {host!r}: {error}") from None
    return tuple(dict.fromkeys(ipaddress.ip_address(info[4][0]) for info in infos))


def _ascii_host(hostname: str) -> str:
    """The host as DNS, SNI and the Host header take it: IDNA for a non-ASCII name."""
    return hostname if hostname.isascii() else hostname.encode("idna").decode("ascii")


def _is_localhost(host: str) -> bool:
    name = host.rstrip(".")
    return name == "localhost" or name.endswith(".localhost")


def check_url(url: str, *, resolve: bool) -> Destination:
    """Refuse a callback URL that is malformed or leads to a forbidden address; with
    ``resolve``, check every address the host resolves to (at delivery: DNS may have
    changed since the job was submitted), to be connected to and no other."""
    if _UNSAFE.search(url):
        raise WebhookRefused(f"callback URL {url!r} holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port  # Raises for a port that is not a number or out of range.
    except ValueError as error:
        raise WebhookRefused(f"callback URL {url!r}: {error}") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise WebhookRefused(f"callback URL {url!r} must be http(s) with a host")
    # The signature authenticates jobstack to the receiver; credentials in the URL would
    # be stored and shown with the job, and "a@b" is where URL parsers disagree on the host.
    if "@" in parts.netloc:
        raise WebhookRefused(f"callback URL {url!r} must not hold a user or password")
    port = DEFAULT_PORTS[parts.scheme] if port is None else port
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    if port == 0 or not target.isascii():
        raise WebhookRefused(f"callback URL {url!r} needs a port and an ASCII path")
    try:
        host = _ascii_host(parts.hostname)
    except UnicodeError as error:
        raise WebhookRefused(f"callback host {parts.hostname!r}: {error}") from None
    hosts, networks = _allowed()
    literal = _literal(host)
    if literal is not None:
        addresses: tuple[IPAddress, ...] = (literal,)
    elif _is_localhost(host) and host not in hosts:
        raise WebhookRefused(f"callback host {host!r} is loopback")
    else:
        addresses = lookup(host, port) if resolve else ()
    for address in addresses if host not in hosts else ():
        refused = _refused_part(address, networks)
        if refused is not None:
            leads = "" if refused == address else f", which leads to {refused}"
            raise WebhookRefused(
                f"callback host {host!r} is {address}{leads}: not a globally routable address "
                "(allow it with JOBSTACK_WEBHOOK_ALLOW)"
            )
    return Destination(url, parts.scheme, host, port, target, addresses)


def secret_for(session: Session, tenant: str, *, rotate: bool = False) -> str:
    """The tenant's signing secret, created on first use (or replaced with ``rotate``)."""
    row = session.get(WebhookSecret, tenant)
    if row is None:
        row = WebhookSecret(tenant=tenant, secret=secrets.token_hex(32))
        session.add(row)
    elif rotate:
        row.secret = secrets.token_hex(32)
    return row.secret


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def enqueue_delivery(session: Session, job_id: str) -> None:
    """In the caller's transaction: queue the webhook of a job that just finished, if any."""
    row = session.execute(
        select(Job.callback_url, Job.tenant).where(Job.id == job_id)
    ).one_or_none()
    if row is None or not row.callback_url:
        return
    submit("webhooks.deliver", [job_id], session=session, tenant=row.tenant)


class _PinnedConnection(http.client.HTTPConnection):
    """HTTP to one checked address, whatever the host name resolves to by now."""

    def __init__(self, destination: Destination, address: IPAddress) -> None:
        super().__init__(destination.host, destination.port, timeout=TIMEOUT)
        self.address = address

    def connect(self) -> None:
        self.sock = socket.create_connection((str(self.address), self.port), self.timeout)


class _PinnedTLSConnection(_PinnedConnection):
    """HTTPS to one checked address; SNI and the certificate check use the host name."""

    default_port = http.client.HTTPS_PORT

    def connect(self) -> None:
        super().connect()
        context = ssl.create_default_context()
        self.sock = context.wrap_socket(self.sock, server_hostname=self.host)


def _post(destination: Destination, body: bytes, headers: dict[str, str]) -> tuple[int, str]:
    """POST to the first checked address that takes the connection; the answer's status
    and Location. A request that reached a server is not sent to another address, since
    the server may have acted on it."""
    kind = _PinnedTLSConnection if destination.scheme == "https" else _PinnedConnection
    failures = []
    for address in destination.addresses:
        connection = kind(destination, address)
        try:
            try:
                connection.connect()
            except OSError as error:
                failures.append(f"{address}: {type(error).__name__}: {error}")
                continue
            connection.request("POST", destination.target, body=body, headers=headers)
            response = connection.getresponse()
            response.read(MAX_ANSWER_BYTES)
            return response.status, response.getheader("Location", "")
        except (OSError, http.client.HTTPException) as error:
            raise WebhookFailed(f"{destination.url}: {type(error).__name__}: {error}") from None
        finally:
            connection.close()
    raise WebhookFailed(f"{destination.url}: cannot connect ({'; '.join(failures)})")


def deliver(job_id: str) -> dict[str, Any]:
    """POST the job's JSON to its callback URL, signed. Raises WebhookFailed to be retried;
    WebhookRefused or WebhookRedirected, which no retry can fix, to fail at once."""
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or not job.callback_url:
            raise PermanentError(f"job {job_id} has no callback URL")
        secret = secret_for(session, job.tenant)
        url, payload = job.callback_url, job.to_tenant_dict()
    destination = check_url(url, resolve=True)
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(secret, body),
        EVENT_HEADER: f"job.{payload['state']}",
        "User-Agent": "jobstack-webhooks",
    }
    status, location = _post(destination, body, headers)
    if 300 <= status < 400:
        raise WebhookRedirected(
            f"{url} answered {status} to {location[:200]!r}: redirects are not followed; "
            "set the callback URL to its final address"
        )
    if not 200 <= status < 300:
        raise WebhookFailed(f"{url} answered {status}")
    return {"status": status}
