"""API tokens: created once, stored as hashes, resolved to a tenant and its scopes."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from dramatiq.message import generate_unique_id
from sqlalchemy import select

from app import db
from app.errors import JobstackError
from app.models import ApiToken

SCOPES = frozenset({"jobs:read", "jobs:write", "admin"})
TOKEN_PREFIX = "jst_"
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


def authenticate(token: str) -> Principal | None:
    """The principal of a valid, unrevoked token; None otherwise."""
    with db.session_scope() as session:
        row = session.scalars(
            select(ApiToken).where(
                ApiToken.token_hash == _digest(token), ApiToken.revoked_at.is_(None)
            )
        ).one_or_none()
    if row is None:
        return None
    return Principal(token_id=row.id, tenant=row.tenant, scopes=row.scope_set)
