"""Webhooks: a job submitted with ``callback_url`` gets, on reaching a final state, a POST of
its JSON signed with its tenant's secret, delivered by a ``webhooks.deliver`` job that
retries with backoff.

Destinations in private, loopback, link-local or other reserved ranges are refused unless
allow-listed (JOBSTACK_WEBHOOK_ALLOW: hosts or CIDRs, comma-separated): a callback URL must
not become a way to reach the platform's own network.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import secrets
import socket
import urllib.error
import urllib.request
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
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class WebhookRefused(PermanentError):
    """The callback URL points somewhere jobstack does not deliver to."""


class WebhookFailed(JobstackError):
    """The destination did not accept the delivery; it is retried."""


def _allowed() -> tuple[set[str], list[ipaddress.IPv4Network | ipaddress.IPv6Network]]:
    hosts: set[str] = set()
    networks = []
    for entry in filter(None, (e.strip() for e in load_settings().webhook_allow.split(","))):
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            hosts.add(entry.lower())
    return hosts, networks


def _forbidden(address: IPAddress) -> bool:
    return (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_reserved
        or address.is_multicast
        or address.is_unspecified
    )


def check_url(url: str, *, resolve: bool) -> None:
    """Refuse a destination in a forbidden range; with ``resolve``, check every address the
    host resolves to (at delivery: DNS may have changed since the job was submitted)."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise WebhookRefused(f"callback URL {url!r} must be http(s) with a host")
    host = parts.hostname.lower()
    hosts, networks = _allowed()
    if host in hosts:
        return
    try:
        addresses: list[IPAddress] = [ipaddress.ip_address(host)]
    except ValueError:
        if host == "localhost" or host.endswith(".localhost"):
            raise WebhookRefused(f"callback host {host!r} is loopback") from None
        if not resolve:
            return
        try:
            infos = socket.getaddrinfo(host, parts.port or 443, proto=socket.IPPROTO_TCP)
        except socket.gaierror as error:
            raise WebhookFailed(f"cannot resolve {host!r}: {error}") from None
        addresses = [ipaddress.ip_address(info[4][0]) for info in infos]
    for address in addresses:
        if _forbidden(address) and not any(address in network for network in networks):
            raise WebhookRefused(
                f"callback host {host!r} is {address}, in a private or reserved range "
                "(allow it with JOBSTACK_WEBHOOK_ALLOW)"
            )


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


def deliver(job_id: str) -> dict[str, Any]:
    """POST the job's JSON to its callback URL, signed; raises to be retried on failure."""
    with db.session_scope() as session:
        job = session.get(Job, job_id)
        if job is None or not job.callback_url:
            raise PermanentError(f"job {job_id} has no callback URL")
        secret = secret_for(session, job.tenant)
        url, payload = job.callback_url, job.to_dict()
    check_url(url, resolve=True)
    body = json.dumps(payload, sort_keys=True, separators=(",", ":"), default=str).encode()
    request = urllib.request.Request(url, data=body, method="POST")
    request.add_header("Content-Type", "application/json")
    request.add_header(SIGNATURE_HEADER, sign(secret, body))
    request.add_header(EVENT_HEADER, f"job.{payload['state']}")
    request.add_header("User-Agent", "jobstack-webhooks")
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT) as response:
            return {"status": response.status}
    except urllib.error.HTTPError as error:
        raise WebhookFailed(f"{url} answered {error.code}") from None
    except (OSError, ValueError) as error:
        raise WebhookFailed(f"{url}: {type(error).__name__}: {error}") from None
