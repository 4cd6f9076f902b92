"""Signing in to the dashboard: an API token exchanged for a session cookie.

The cookie is Flask's signed session (HttpOnly, SameSite=Strict, Secure over HTTPS, expiring
after ``JOBSTACK_DASHBOARD_SESSION_HOURS``). It names the token by id, never holds the token
itself, and every request checks that the token is still unrevoked: revoking a token signs
its sessions out within ``JOBSTACK_TOKEN_CACHE_SECONDS``. Every state-changing request
carries the session's CSRF token, in a form field or the ``X-CSRF-Token`` header.
"""

from __future__ import annotations

import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from werkzeug.http import parse_cookie

from app import db
from app.config import load_settings
from app.models import SigningKey
from app.tokens import Principal, authenticate, principal_by_id

COOKIE_NAME = "jobstack_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SIGNING_KEY_NAME = "dashboard-session"


@dataclass(frozen=True)
class Operator:
    """Who is signed in: their token's principal and this session's CSRF token."""

    principal: Principal
    csrf: str

    @property
    def tenant(self) -> str | None:
        """The tenant the operator's queries are limited to; None for admins."""
        return None if self.principal.is_admin else self.principal.tenant

    @property
    def can_act(self) -> bool:
        return self.principal.is_admin or "jobs:write" in self.principal.scopes

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def signing_key() -> str:
    """The session key every API process shares: made once, kept in the database."""
    with db.session_scope() as session_:
        found = session_.scalar(
            select(SigningKey.secret).where(SigningKey.name == SIGNING_KEY_NAME)
        )
    if found is not None:
        return found
    try:
        with db.session_scope() as session_:
            session_.add(SigningKey(name=SIGNING_KEY_NAME, secret=secrets.token_urlsafe(48)))
    except IntegrityError:
        pass  # Another process made it first: use theirs.
    return signing_key()


class DashboardSessions(SecureCookieSessionInterface):
    """Flask's signed-cookie sessions, with the key read from the database on first use
    and the Secure flag set whenever the request came over HTTPS."""

    _key: str | None = None

    def get_signing_serializer(self, app: Flask) -> Any:
        if DashboardSessions._key is None:
            DashboardSessions._key = signing_key()
        app.secret_key = DashboardSessions._key
        return super().get_signing_serializer(app)

    def get_cookie_secure(self, app: Flask) -> bool:
        return request.is_secure

    def open_session(self, app: Flask, request: Request) -> Any:
        # The REST API authenticates with bearer tokens only: its requests never read
        # the cookie. Without a cookie there is nothing to verify, so the key is not read
        # either (a health check must not depend on it).
        if request.path.startswith("/v1/"):
            return self.null_session_class()
        if not request.cookies.get(self.get_cookie_name(app)):
            return self.session_class()
        return super().open_session(app, request)


def init_app(app: Flask) -> None:
    app.session_interface = DashboardSessions()
    app.config.update(
        SESSION_COOKIE_NAME=COOKIE_NAME,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        PERMANENT_SESSION_LIFETIME=timedelta(hours=load_settings().dashboard_session_hours),
    )


def sign_in(token: str) -> Operator | None:
    """Start a session for ``token``; None (and no session) when it is not valid."""
    principal = authenticate(token.strip())
    if principal is None:
        return None
    session.clear()
    session.permanent = True
    session["token_id"] = principal.token_id
    session["csrf"] = secrets.token_urlsafe(32)
    return Operator(principal, session["csrf"])


def sign_out() -> None:
    session.clear()


def current_operator() -> Operator | None:
    """The signed-in operator, or None (no cookie, an expired one, a revoked token)."""
    token_id = session.get("token_id")
    csrf = session.get("csrf")
    if not isinstance(token_id, str) or not isinstance(csrf, str):
        return None
    principal = principal_by_id(token_id)
    if principal is None:
        session.clear()
        return None
    return Operator(principal, csrf)


def csrf_is_valid(operator: Operator) -> bool:
    """Whether this request carries the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    return hmac.compare_digest(sent.encode(), operator.csrf.encode())


def session_principal(app: Flask, cookie_header: str) -> Principal | None:
    """The principal of the dashboard session in a Cookie header, if it is valid: the
    serving layer asks, before it reads a form's body (:mod:`api.serving.bodies`)."""
    value = parse_cookie(cookie_header).get(COOKIE_NAME)
    if not value:
        return None
    interface = app.session_interface
    serializer = interface.get_signing_serializer(app)  # type: ignore[attr-defined]
    max_age = int(app.permanent_session_lifetime.total_seconds())
    try:
        data = serializer.loads(value, max_age=max_age)
    except BadSignature:
        return None
    token_id = data.get("token_id") if isinstance(data, dict) else None
    return principal_by_id(token_id) if isinstance(token_id, str) else None
