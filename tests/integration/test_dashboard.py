"""The operator dashboard through Flask's test client on the real database and RabbitMQ:
signing in, the session cookie, CSRF, scopes, tenants, escaping, bulk actions, the audit
log. (In a real browser: tests/acceptance/test_dashboard_browser.py.)"""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from flask.testing import FlaskClient

from api.dashboard import CONTENT_SECURITY_POLICY
from api.dashboard.failure_groups import group_key
from app import audit
from app.jobs import get_job
from app.states import JobState
from app.timeutil import utcnow
from app.tokens import create_token, revoke_token
from tests.integration.conftest import Tokens
from tests.support.dashboard import bearer_token, sign_in
from tests.support.factories import make_job

PAGES = ["/", "/jobs", "/failures", "/dead-letters", "/queues", "/schedules", "/workers", "/audit"]
ADMIN_PAGES = {"/dead-letters", "/queues", "/schedules", "/workers", "/audit"}


def _failed(tenant: str, **fields: object) -> str:
    now = utcnow()
    defaults: dict[str, object] = {
        "started_at": now - timedelta(seconds=2),
        "finished_at": now,
        "error_type": "RuntimeError",
        "error_message": "it broke",
        "error_traceback": (
            'Traceback:\n  File "/srv/app/actors/x.py", line 12, in run\nRuntimeError'
        ),
    }
    fields = {**defaults, **fields}
    return make_job(JobState.FAILED, attempts=1, actor="diagnostics.fail", tenant=tenant, **fields)


def test_a_visitor_is_sent_to_sign_in_and_an_api_token_opens_a_session(
    client: FlaskClient, tokens: Tokens
) -> None:
    first = client.get("/jobs?state=failed")
    assert first.status_code == 302
    assert first.headers["Location"] == "/sign-in?next=%2Fjobs%3Fstate%3Dfailed"
    form = client.get("/sign-in").text
    assert '<label for="token">API token</label>' in form and ">Sign in</button>" in form

    refused = client.post("/sign-in", data={"token": "jst_not-a-token"})
    assert refused.status_code == 401 and "unknown or revoked" in refused.text
    assert "Set-Cookie" not in refused.headers

    answer = client.post(
        "/sign-in", data={"token": bearer_token(tokens.acme), "next": "/jobs?state=failed"}
    )
    assert answer.status_code == 303 and answer.headers["Location"] == "/jobs?state=failed"
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith("jobstack_session=")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Expires=" in cookie
    assert "Secure" not in cookie  # Plain HTTP here; HTTPS below.
    assert bearer_token(tokens.acme) not in cookie
    assert client.get("/jobs").status_code == 200


def test_a_token_that_cannot_read_does_not_sign_in(client: FlaskClient) -> None:
    refused = client.post("/sign-in", data={"token": create_token("acme", {"jobs:write"})})
    assert refused.status_code == 401 and "lacks &#39;jobs:read&#39;" in refused.text
    assert client.get("/jobs").status_code == 302


def test_a_sign_in_form_posted_from_another_site_is_refused(
    client: FlaskClient, tokens: Tokens
) -> None:
    token = bearer_token(tokens.acme)
    for headers in ({"Sec-Fetch-Site": "cross-site"}, {"Origin": "http://evil.example"}):
        refused = client.post("/sign-in", data={"token": token}, headers=headers)
        assert refused.status_code == 403 and "Set-Cookie" not in refused.headers
    same = client.post("/sign-in", data={"token": token}, headers={"Sec-Fetch-Site": "same-origin"})
    assert same.status_code == 303


def test_the_cookie_is_secure_over_https_and_never_leaves_for_another_site(
    client: FlaskClient, tokens: Tokens
) -> None:
    answer = client.post(
        "/sign-in", data={"token": bearer_token(tokens.acme)}, base_url="https://dash.example"
    )
    assert "Secure" in answer.headers["Set-Cookie"]
    # Only paths on this site are followed after signing in.
    for target in (
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "/\t/evil.example",
        "/\n/evil.example",
    ):
        moved = client.post("/sign-in", data={"token": bearer_token(tokens.acme), "next": target})
        assert moved.headers["Location"] == "/"


def test_signing_out_or_revoking_the_token_ends_the_session(
    client: FlaskClient, tokens: Tokens
) -> None:
    csrf = sign_in(client, bearer_token(tokens.acme))
    cookie = client.get_cookie("jobstack_session")
    assert cookie is not None
    assert client.post("/sign-out", data={"csrf_token": csrf}).status_code == 303
    assert client.get("/jobs").status_code == 302
    # A copy of the cookie taken before signing out is worthless now.
    client.set_cookie("jobstack_session", cookie.value)
    assert client.get("/jobs").status_code == 302
    assert (
        client.post("/jobs/bulk", data={"action": "retry", "csrf_token": csrf}).status_code == 302
    )

    token = create_token("acme", {"jobs:read"})
    sign_in(client, token)
    assert client.get("/fragments/jobs").status_code == 200
    token_id = next(e.token_id for e in audit.entries(tenant="acme", before=None, limit=1))
    revoke_token(token_id)
    assert client.get("/fragments/jobs").status_code == 401
    assert client.get("/jobs").status_code == 302


def test_every_page_is_served_under_a_policy_that_allows_no_inline_script(
    client: FlaskClient, tokens: Tokens
) -> None:
    sign_in(client, bearer_token(tokens.admin))
    _failed("acme")
    assert "'unsafe-inline'" not in CONTENT_SECURITY_POLICY
    for path in PAGES:
        page = client.get(path)
        assert page.status_code == 200, (path, page.text[:500])
        assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
        assert page.headers["Cache-Control"] == "no-store"
        assert page.headers["X-Frame-Options"] == "DENY"
        # Everything comes from this origin: no CDN, no inline script.
        assert not re.search(r'(src|href)="(https?:)?//', page.text), path
        assert not re.search(r"<script(?![^>]*\bsrc=)[^>]*>", page.text), path
        assert not re.search(r'\sstyle="', page.text), path
        assert not re.search(r"\son[a-z]+=", page.text), path
    with client.get("/ui-static/dashboard.js") as script:
        assert script.status_code == 200 and b"EventSource" in script.get_data()


def test_a_read_only_token_sees_no_action_and_a_forged_post_changes_nothing(
    client: FlaskClient, tokens: Tokens
) -> None:
    job_id = _failed("acme")
    csrf = sign_in(client, bearer_token(tokens.reader))
    page = client.get(f"/jobs/{job_id}").text
    assert "it broke" in page
    assert ">Retry</button>" not in page and ">Cancel</button>" not in page
    assert "/jobs/bulk" not in client.get("/jobs").text

    forged = client.post(f"/jobs/{job_id}/retry", data={"csrf_token": csrf})
    assert forged.status_code == 403 and "jobs:read" in forged.text
    assert client.get("/jobs/bulk?action=retry&state=failed").status_code == 403
    assert (
        client.post("/jobs/bulk", data={"action": "retry", "csrf_token": csrf}).status_code == 403
    )
    assert get_job(job_id).state == "failed"
    for path in ADMIN_PAGES:
        assert client.get(path).status_code == 403, path


def test_a_post_without_the_csrf_token_is_refused_and_with_it_acts_and_is_audited(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    job_id = _failed("acme")
    csrf = sign_in(client, bearer_token(tokens.acme))
    page = client.get(f"/jobs/{job_id}").text
    assert ">Retry</button>" in page

    for data in ({}, {"csrf_token": "wrong"}):
        refused = client.post(f"/jobs/{job_id}/retry", data=data)
        assert refused.status_code == 403 and "CSRF" in refused.text
    assert get_job(job_id).state == "failed"

    done = client.post(f"/jobs/{job_id}/retry", data={"csrf_token": csrf})
    assert done.status_code == 303 and done.headers["Location"] == f"/jobs/{job_id}"
    assert get_job(job_id).state == "queued"
    entry = audit.entries(tenant="acme", before=None, limit=1)[0]
    assert (entry.action, entry.target, entry.job_count) == ("retry", job_id, 1)


def test_a_tenant_never_sees_another_tenants_job_count_or_failure(
    client: FlaskClient, tokens: Tokens
) -> None:
    theirs = _failed("globex", correlation_id="corr-globex-1", idempotency_key="key-globex-1")
    mine = _failed("acme", error_type="ValueError")
    sign_in(client, bearer_token(tokens.acme))
    assert client.get(f"/jobs/{theirs}").status_code == 404
    assert client.get(f"/fragments/job?id={theirs}").status_code == 404
    for search in (theirs, "corr-globex-1", "key-globex-1"):
        listed = client.get(f"/fragments/jobs?search={search}").text
        assert "No job matches." in listed and theirs not in listed
    assert mine in client.get("/jobs").text and theirs not in client.get("/jobs").text
    failures = client.get("/failures").text
    assert "ValueError" in failures and "RuntimeError" not in failures
    overview = client.get("/fragments/overview").text
    assert re.search(r'data-state="failed">1<', overview), overview

    # An admin finds it by any of the three, across tenants.
    sign_in(client, bearer_token(tokens.admin))
    for search in (theirs, "corr-globex-1", "key-globex-1"):
        assert f'data-job="{theirs}"' in client.get(f"/fragments/jobs?search={search}").text
    assert re.search(r'data-state="failed">2<', client.get("/fragments/overview").text)


def test_values_from_jobs_are_shown_as_text(client: FlaskClient, tokens: Tokens) -> None:
    job_id = _failed(
        "acme",
        error_message="<script>alert('x')</script>",
        kwargs={"html": "<img src=x onerror=alert(1)>"},
        result=None,
    )
    sign_in(client, bearer_token(tokens.acme))
    for path in (f"/jobs/{job_id}", "/failures"):
        page = client.get(path).text
        assert "&lt;script&gt;alert(" in page, path
        assert "<script>alert" not in page and "<img src=x" not in page, path


def test_a_bulk_retry_shows_its_count_first_then_retries_every_matching_job(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    mine = [_failed("acme") for _ in range(3)]
    theirs = _failed("globex")
    running = make_job(JobState.RUNNING, tenant="acme")
    csrf = sign_in(client, bearer_token(tokens.acme))

    dry_run = client.get("/jobs/bulk?action=retry")
    assert dry_run.status_code == 200
    assert (
        'data-count="3"' in dry_run.text
        and "This will retry <strong>3</strong> jobs" in dry_run.text
    )
    assert all(get_job(job).state == "failed" for job in mine)

    done = client.post("/jobs/bulk", data={"action": "retry", "csrf_token": csrf})
    assert done.status_code == 200 and "Retry: 3 jobs." in done.text
    assert {get_job(job).state for job in mine} == {"queued"}
    assert (get_job(theirs).state, get_job(running).state) == ("failed", "running")
    entry = audit.entries(tenant="acme", before=None, limit=1)[0]
    assert (entry.action, entry.job_count) == ("bulk_retry", 3)


def test_a_bulk_action_moves_exactly_what_its_count_showed(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    base = utcnow().replace(second=0, microsecond=0) - timedelta(minutes=5)
    early = make_job(JobState.QUEUED, tenant="acme", created_at=base + timedelta(seconds=10))
    late = make_job(JobState.QUEUED, tenant="acme", created_at=base + timedelta(seconds=40))
    csrf = sign_in(client, bearer_token(tokens.acme))
    since = (base + timedelta(seconds=30)).strftime("%Y-%m-%dT%H:%M:%S")
    counted = client.get(f"/jobs/bulk?action=cancel&created_after={since}")
    assert 'data-count="1"' in counted.text
    fields = dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', counted.text))
    done = client.post("/jobs/bulk", data={**fields, "csrf_token": csrf})
    assert "Cancel: 1 jobs." in done.text
    assert (get_job(early).state, get_job(late).state) == ("queued", "cancelled")


def test_a_failure_group_is_retried_after_its_count(
    client: FlaskClient, tokens: Tokens, rabbit: RabbitmqBroker
) -> None:
    grouped = [_failed("acme") for _ in range(2)]
    other = _failed("acme", error_type="KeyError")
    csrf = sign_in(client, bearer_token(tokens.acme))
    page = client.get("/failures").text
    # A tenant sees where by function only: the frame's path is the server's.
    assert "in run" in page and "actors/x.py" not in page
    key = group_key("RuntimeError", "actors/x.py:12 in run")
    assert f"/failures/retry?group={key}" in page
    count = client.get(f"/failures/retry?group={key}")
    assert 'data-count="2"' in count.text and "RuntimeError at run" in count.text
    done = client.post("/failures/retry", data={"group": key, "csrf_token": csrf})
    assert "Retry: 2 jobs." in done.text
    assert [get_job(job).state for job in grouped] == ["queued", "queued"]
    assert get_job(other).state == "failed"


def test_the_overview_counts_and_charts_finished_jobs(client: FlaskClient, tokens: Tokens) -> None:
    now = utcnow()
    for seconds in (1.0, 3.0):
        make_job(
            JobState.SUCCEEDED,
            attempts=1,
            tenant="acme",
            created_at=now - timedelta(seconds=10),
            started_at=now - timedelta(seconds=10) + timedelta(milliseconds=40),
            finished_at=now - timedelta(seconds=10) + timedelta(seconds=seconds),
        )
    _failed("acme")
    sign_in(client, bearer_token(tokens.acme))
    page = client.get("/fragments/overview").text
    assert re.search(r'data-state="succeeded">2<', page)
    assert "2 succeeded, 1 failed over the last 1h" in page
    # Run times of 1 s, 3 s and 2 s: the median falls in the 1-2.5 s bucket.
    p50 = re.search(r"<th scope=\"row\">Run time</th><td>([^<]+)</td>", page)
    assert p50 and p50[1].endswith(" s") and 1.0 <= float(p50[1].split()[0]) <= 2.5


@pytest.mark.parametrize(
    "path",
    [
        "/jobs?state=nope",
        "/jobs?created_after=yesterday",
        "/jobs?cursor=xyz",
        "/jobs?cursor=" + "W" * 5000,
        "/jobs?tenant=globex",
    ],
)
def test_a_bad_filter_is_a_clear_400(client: FlaskClient, tokens: Tokens, path: str) -> None:
    sign_in(client, bearer_token(tokens.acme))
    answer = client.get(path)
    assert answer.status_code == 400
    assert "text/html" in answer.headers["Content-Type"]
    assert any(
        word in answer.text for word in ("state:", "created_after:", "page link", "only admins")
    )
