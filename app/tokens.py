"""API tokens: created once, stored as hashes, resolved to a tenant and its scopes."""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from dramatiq.message import generate_unique_id
from sqlalchemy import select, update

from app import db
from app.config import load_settings
from app.defaults import RESERVED_TENANTS
from app.errors import JobstackError
from app.models import ApiToken
from app.timeutil import utcnow

SCOPES = frozenset({"jobs:read", "jobs:write", "admin"})
TOKEN_PREFIX = "jst_"
#: Beyond this many verified tokens the cache starts over (it only saves lookups).
MAX_CACHED_TOKENS = 10_000
TENANT_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class TokenError(JobstackError):
    """A token could not be created as asked."""


@dataclass(frozen=True)
class Principal:
    """Who is calling: the token's tenant and scopes."""

    token_id: str
    tenant: str
    scopes: frozenset[str]

    @property
    def is_admin(self) -> bool:
        return "admin" in self.scopes


def _digest(token: str) -> str:
    # Tokens are 256 random bits: a plain SHA-256 is enough to make a stolen table useless.
    return hashlib.sha256(token.encode()).hexdigest()


def create_token(tenant: str, scopes: set[str], description: str | None = None) -> str:
    """Create a token and return it; it is not stored and cannot be shown again."""
    if not TENANT_PATTERN.match(tenant):
        raise TokenError(f"tenant {tenant!r} must be 1-64 letters, digits, '.', '_' or '-'")
    if tenant.lower() in RESERVED_TENANTS:
        raise TokenError(
            f"tenant {tenant!r} is reserved for the jobs jobstack submits itself (CLI, cron); "
            "give admins a tenant of their own, e.g. 'ops'"
        )
    unknown = scopes - SCOPES
    if unknown or not scopes:
        raise TokenError(
            f"scopes must be a non-empty subset of {sorted(SCOPES)}; unknown: {sorted(unknown)}"
        )
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with db.session_scope() as session:
        session.add(
            ApiToken(
                id=generate_unique_id(),
                tenant=tenant,
                token_hash=_digest(token),
                scopes=",".join(sorted(scopes)),
                description=description,
            )
        )
    return token


def list_tokens(tenant: str | None = None) -> list[ApiToken]:
    """Every token (of ``tenant``), oldest first; revoked ones included."""
    with db.session_scope() as session:
        query = select(ApiToken).order_by(ApiToken.created_at, ApiToken.id)
        if tenant is not None:
            query = query.where(ApiToken.tenant == tenant)
        tokens = list(session.scalars(query))
        session.expunge_all()
    return tokens


def revoke_token(token_id: str) -> None:
    """Revoke a token by id: requests fail with 401 once API processes' caches expire
    (JOBSTACK_TOKEN_CACHE_SECONDS) and its open event streams end within a second."""
    with db.session_scope() as session:
        found = session.scalar(select(ApiToken.id).where(ApiToken.id == token_id))
        if found is None:
            raise TokenError(f"no token with id {token_id!r} (see 'jobstack tokens list')")
        session.execute(
            update(ApiToken)
            .where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
            .values(revoked_at=utcnow())
        )
    verified_tokens.clear()


class _VerifiedTokens:
    """Tokens this process verified lately: a request then costs no database transaction.

    Only valid tokens are kept (an unknown one is looked up every time, so a new token
    works at once); a revoked token keeps working until its entry expires.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._entries: dict[str, tuple[float, Principal]] = {}

    def get(self, digest: str) -> Principal | None:
        entry = self._entries.get(digest)
        if entry is None or entry[0] < time.monotonic():
            return None
        return entry[1]

    def put(self, digest: str, principal: Principal, ttl: float) -> None:
        with self._lock:
            if len(self._entries) >= MAX_CACHED_TOKENS:
                self._entries.clear()
            self._entries[digest] = (time.monotonic() + ttl, principal)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


verified_tokens = _VerifiedTokens()


def recently_verified(token: str) -> Principal | None:
    """The principal of ``token`` if this process verified it lately, without the
    database (None: not known here, look it up with :func:`authenticate`)."""
    return verified_tokens.get(_digest(token))


def authenticate(token: str) -> Principal | None:
    """The principal of a valid, unrevoked token; None otherwise."""
    digest = _digest(token)
    cached = verified_tokens.get(digest)
    if cached is not None:
        return cached
    principal = _look_up(digest)
    ttl = load_settings().token_cache_seconds
    if principal is not None and ttl > 0:
        verified_tokens.put(digest, principal, ttl)
    return principal


def _look_up(digest: str) -> Principal | None:
    with db.session_scope() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
        ).one_or_none()
    if row is None:
        return None
    return Principal(token_id=row.id, tenant=row.tenant, scopes=row.scope_set)


def principal_by_id(token_id: str) -> Principal | None:
    """The principal of the unrevoked token with this id (a dashboard session names its
    token by id); None once it is revoked. Cached like :func:`authenticate`."""
    key = f"id:{token_id}"
    cached = verified_tokens.get(key)
    if cached is not None:
        return cached
    with db.session_scope() as session:
        row = session.scalars(
            select(ApiToken).where(ApiToken.id == token_id, ApiToken.revoked_at.is_(None))
        ).one_or_none()
    if row is None:
        return None
    principal = Principal(token_id=row.id, tenant=row.tenant, scopes=row.scope_set)
    ttl = load_settings().token_cache_seconds
    if ttl > 0:
        verified_tokens.put(key, principal, ttl)
    return principal
