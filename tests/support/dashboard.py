"""Signing a Flask test client in to the dashboard, and reading its pages."""

from __future__ import annotations

import re

from flask.testing import FlaskClient

CSRF = re.compile(r'data-csrf="([^"]+)"')


def sign_in(client: FlaskClient, token: str) -> str:
    """Sign ``client`` in with ``token``; returns the session's CSRF token."""
    answer = client.post("/sign-in", data={"token": token, "next": "/jobs"})
    assert answer.status_code == 303, answer.text
    page = client.get("/jobs")
    found = CSRF.search(page.text)
    assert found, "the signed-in page carries no CSRF token"
    return found[1]


def bearer_token(headers: dict[str, str]) -> str:
    """The token of an ``Authorization: Bearer`` header (the suite's token fixtures)."""
    return headers["Authorization"].removeprefix("Bearer ")
