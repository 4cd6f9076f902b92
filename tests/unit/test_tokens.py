"""Token verification, and how long a verified token is trusted without a lookup."""

from __future__ import annotations

import pytest
from sqlalchemy import update

from app import db
from app.models import ApiToken
from app.timeutil import utcnow
from app.tokens import authenticate, create_token


def _revoke_all() -> None:
    with db.session_scope() as session:
        session.execute(update(ApiToken).values(revoked_at=utcnow()))


def test_a_revoked_token_is_trusted_until_its_cache_entry_expires(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    token = create_token("acme", {"jobs:read"})
    principal = authenticate(token)
    assert principal is not None and principal.tenant == "acme"

    _revoke_all()
    # Within JOBSTACK_TOKEN_CACHE_SECONDS this process does not ask the database again.
    assert authenticate(token) == principal

    now = [1_000_000.0]
    monkeypatch.setattr("app.tokens.time.monotonic", lambda: now[0])
    assert authenticate(token) is None  # The entry is from "long ago": looked up, refused.


def test_with_no_cache_a_revoked_token_is_refused_at_once(
    clean_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_TOKEN_CACHE_SECONDS", "0")
    token = create_token("acme", {"jobs:read"})
    assert authenticate(token) is not None
    _revoke_all()
    assert authenticate(token) is None
