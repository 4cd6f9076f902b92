"""Per-tenant limits: one tenant cannot fill every worker thread nor flood submissions."""

from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select

from app import db
from app.models import Job
from tests.integration.conftest import Tokens

JOB = {"actor": "diagnostics.noop", "kwargs": {}}


def _jobs_of(tenant: str) -> int:
    with db.session_scope() as session:
        return session.scalar(select(func.count()).where(Job.tenant == tenant)) or 0


def test_a_tenant_over_its_unfinished_jobs_limit_gets_429_and_others_do_not(
    client: FlaskClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_TENANT_MAX_ACTIVE", "3")
    for _ in range(3):
        assert client.post("/v1/jobs", json=JOB, headers=tokens.acme).status_code == 202
    refused = client.post("/v1/jobs", json=JOB, headers=tokens.acme)
    assert refused.status_code == 429
    assert "has 3 unfinished jobs and may have at most 3" in refused.get_json()["message"]
    assert refused.headers["Retry-After"]
    assert _jobs_of("acme") == 3

    assert client.post("/v1/jobs", json=JOB, headers=tokens.globex).status_code == 202
    # A batch that would go over is refused whole: nothing of it is stored.
    batch = client.post("/v1/jobs/batch", json={"jobs": [JOB] * 3}, headers=tokens.globex)
    assert batch.status_code == 429
    assert _jobs_of("globex") == 1


def test_a_tenant_over_its_submission_rate_gets_429_with_retry_after(
    client: FlaskClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_TENANT_SUBMITS_PER_MINUTE", "2")
    assert (
        client.post("/v1/jobs/batch", json={"jobs": [JOB] * 2}, headers=tokens.acme).status_code
        == 202
    )
    refused = client.post("/v1/jobs", json=JOB, headers=tokens.acme)
    assert refused.status_code == 429
    assert "submitted 2 jobs in the last minute" in refused.get_json()["message"]
    assert refused.headers["Retry-After"] == "60"
    # A replay of an accepted request (same Idempotency-Key) is not a new submission.
    monkeypatch.setenv("JOBSTACK_TENANT_SUBMITS_PER_MINUTE", "3")
    keyed = {**tokens.acme, "Idempotency-Key": "report-7"}
    assert client.post("/v1/jobs", json=JOB, headers=keyed).status_code == 202
    assert client.post("/v1/jobs", json=JOB, headers=keyed).status_code == 202
    assert _jobs_of("acme") == 3


def test_priorities_above_the_tenants_cap_are_kept_for_operators(
    client: FlaskClient, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_TENANT_MAX_PRIORITY", "5")
    urgent = {**JOB, "priority": 9}
    refused = client.post("/v1/jobs", json=urgent, headers=tokens.acme)
    assert refused.status_code == 422
    assert "at most 5 for tenants" in str(refused.get_json()["errors"]["json"]["priority"])
    assert (
        client.post("/v1/jobs", json={**JOB, "priority": 5}, headers=tokens.acme).status_code == 202
    )
    batch = client.post("/v1/jobs/batch", json={"jobs": [JOB, urgent]}, headers=tokens.acme)
    assert batch.status_code == 422
    assert _jobs_of("acme") == 1
    assert client.post("/v1/jobs", json=urgent, headers=tokens.admin).status_code == 202
