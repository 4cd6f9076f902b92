"""Signing in to the dashboard: an API token exchanged for a session.

A session is a row of ``dashboard_sessions`` (its token, its absolute expiry, whether it
was signed out) named by a random id that only the browser holds: the row keeps the id's
SHA-256, so reading the database does not let one forge a session. The browser keeps the
id in Flask's signed session cookie (HttpOnly, SameSite=Strict, Secure over HTTPS), with
the session's CSRF token. Every request checks the row and the token: signing out, expiry
(``JOBSTACK_DASHBOARD_SESSION_HOURS`` after signing in, however active the session) and
revoking the token (within ``JOBSTACK_TOKEN_CACHE_SECONDS``) end it, open pages included.
Every state-changing request carries the CSRF token, in a form field or ``X-CSRF-Token``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from flask import Flask, Request, request, session
from flask.sessions import SecureCookieSessionInterface
from itsdangerous import BadSignature
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError
from werkzeug.http import parse_cookie

from app import db
from app.config import load_settings
from app.models import DashboardSession, SigningKey
from app.timeutil import utcnow
from app.tokens import Principal, authenticate, principal_by_id

COOKIE_NAME = "jobstack_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"
SIGNING_KEY_NAME = "dashboard-session"
#: Sessions ended or expired this long ago are deleted when someone signs in.
KEEP_ENDED = timedelta(days=1)


class SignInRefused(Exception):
    """The token cannot sign in: why, for the form."""


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
    def can_read(self) -> bool:
        return self.principal.is_admin or "jobs:read" in self.principal.scopes

    @property
    def can_act(self) -> bool:
        return self.principal.is_admin or "jobs:write" in self.principal.scopes

    @property
    def is_admin(self) -> bool:
        return self.principal.is_admin


def signing_key() -> str:
    """The cookie key every API process shares: made once, kept in the database. (Knowing
    it is not enough to forge a session: a session's id is random and stored hashed.)"""
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
        # The expiry is the session row's, fixed at sign-in: the cookie is not re-sent.
        SESSION_REFRESH_EACH_REQUEST=False,
        PERMANENT_SESSION_LIFETIME=timedelta(hours=load_settings().dashboard_session_hours),
    )


def _digest(session_id: str) -> str:
    return hashlib.sha256(session_id.encode()).hexdigest()


def sign_in(token: str) -> Operator:
    """Start a session for ``token``; SignInRefused says why it cannot."""
    principal = authenticate(token.strip()) if token.strip() else None
    if principal is None:
        raise SignInRefused(
            "That API token is unknown or revoked." if token.strip() else "Enter an API token."
        )
    operator = Operator(principal, secrets.token_urlsafe(32))
    if not operator.can_read:
        raise SignInRefused(
            "This token cannot read jobs (it lacks 'jobs:read'): the dashboard needs it."
        )
    session_id = secrets.token_urlsafe(32)
    now = utcnow()
    lifetime = timedelta(hours=load_settings().dashboard_session_hours)
    with db.session_scope() as rows:
        rows.execute(delete(DashboardSession).where(DashboardSession.expires_at < now - KEEP_ENDED))
        rows.add(
            DashboardSession(
                id=_digest(session_id),
                token_id=principal.token_id,
                created_at=now,
                expires_at=now + lifetime,
            )
        )
    session.clear()
    session.permanent = True
    session["sid"] = session_id
    session["csrf"] = operator.csrf
    return operator


def sign_out() -> None:
    """End the session in the database (a copy of the cookie is then worthless too)."""
    session_id = session.get("sid")
    if isinstance(session_id, str):
        with db.session_scope() as rows:
            rows.execute(
                update(DashboardSession)
                .where(DashboardSession.id == _digest(session_id))
                .values(ended_at=utcnow())
            )
    session.clear()


def _principal_of(session_id: object) -> Principal | None:
    """The principal of a live session: not signed out, not expired, its token valid."""
    if not isinstance(session_id, str) or len(session_id) > 128:
        return None
    with db.session_scope() as rows:
        token_id = rows.scalar(
            select(DashboardSession.token_id).where(
                DashboardSession.id == _digest(session_id),
                DashboardSession.ended_at.is_(None),
                DashboardSession.expires_at > utcnow(),
            )
        )
    return principal_by_id(token_id) if token_id is not None else None


def current_operator() -> Operator | None:
    """The signed-in operator, or None (no cookie, a session ended or expired, a revoked
    token)."""
    csrf = session.get("csrf")
    principal = _principal_of(session.get("sid")) if isinstance(csrf, str) else None
    if principal is None or not isinstance(csrf, str):
        if session:
            session.clear()
        return None
    return Operator(principal, csrf)


def csrf_is_valid(operator: Operator) -> bool:
    """Whether this request carries the session's CSRF token."""
    sent = request.headers.get(CSRF_HEADER) or request.form.get(CSRF_FIELD) or ""
    return hmac.compare_digest(sent.encode(), operator.csrf.encode())


def session_principal(app: Flask, cookie_header: str) -> Principal | None:
    """The principal of the dashboard session in a Cookie header, if it is live: the
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
    return _principal_of(data.get("sid")) if isinstance(data, dict) else None
