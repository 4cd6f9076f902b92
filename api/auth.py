"""Bearer-token authentication and scope checks."""

from __future__ import annotations

from flask import g, request
from flask_smorest import abort

from app.tokens import Principal, authenticate

MISSING_TOKEN = "send an API token: 'Authorization: Bearer <token>'"
UNKNOWN_TOKEN = "the API token is unknown or revoked"


def bearer_token(header: str) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, if it has one."""
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def authorize(scope: str) -> Principal:
    """The caller, who must hold ``scope`` (or ``admin``); aborts with 401 or 403."""
    principal: Principal | None = g.get("principal")
    if principal is None:
        token = bearer_token(request.headers.get("Authorization", ""))
        if token is None:
            abort(401, message=MISSING_TOKEN)
        principal = authenticate(token or "")
        if principal is None:
            abort(401, message=UNKNOWN_TOKEN)
        g.principal = principal
    assert principal is not None
    if scope not in principal.scopes and not principal.is_admin:
        abort(403, message=f"this token lacks the {scope!r} scope")
    return principal


def tenant_filter(principal: Principal) -> str | None:
    """The tenant a caller's queries are limited to; None for admins (every tenant)."""
    return None if principal.is_admin else principal.tenant
