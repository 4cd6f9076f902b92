"""What operators do from the dashboard: sign in and out, cancel and retry a job, retry
what a filter or a failure group matches, re-drive dead letters.

Every action that moves more than one job is shown first as a count ("this will retry
132 jobs"), then done on a second, confirmed request; every action is written to the audit
log with its count. Forms post back with the session's CSRF token (:mod:`access`).
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlencode, urlsplit

import dramatiq
from flask import redirect, render_template, request
from sqlalchemy import select

from api.dashboard import job_search
from api.dashboard.access import action, operator, refusal, viewer
from api.dashboard.failure_groups import FailureGroup, find_group
from api.dashboard.pages import bp
from api.dashboard.reading import reading
from api.dashboard.session import (
    SignInRefused,
    csrf_is_valid,
    current_operator,
    sign_in,
    sign_out,
)
from app import audit
from app.config import load_settings
from app.errors import InvalidTransition, NotFound
from app.models import Job
from app.operations import control
from app.operations.dead_letters import DeadLetterFilter, process
from app.timeutil import utcnow

#: Dead letters one re-drive (or its count) looks at, at most.
DEAD_LETTERS_SCANNED = 50_000


def _record(what: str, target: str | None, count: int, **detail: Any) -> None:
    op = operator()
    audit.record(
        token_id=op.principal.token_id,
        tenant=op.principal.tenant,
        action=what,
        target=target,
        job_count=count,
        detail=detail or None,
    )


#: What a path to return to after signing in may hold: printable ASCII without a
#: backslash (browsers and Werkzeug drop tabs and newlines: ``/\t/evil`` is ``//evil``).
SAFE_PATH = re.compile(r"/(?![/\\])[\x21-\x5b\x5d-\x7e]*")


def _safe_next(target: str | None) -> str:
    """Where to go after signing in: a path on this site only (never ``//host``)."""
    if not target or len(target) > 2000 or not SAFE_PATH.fullmatch(target):
        return "/"
    parts = urlsplit(target)
    return target if not parts.scheme and not parts.netloc else "/"


def _same_site_post() -> bool:
    """Whether a POST came from a page of this site: browsers say so in Sec-Fetch-Site
    (or, older ones, in Origin). A sign-in form on another site must not sign a visitor
    in as someone else (login CSRF)."""
    fetch_site = request.headers.get("Sec-Fetch-Site")
    if fetch_site is not None:
        return fetch_site in ("same-origin", "none")
    origin = request.headers.get("Origin")
    return origin is None or urlsplit(origin).netloc == request.host


@bp.get("/sign-in")
def sign_in_form() -> Any:
    return render_template("sign_in.html", next=_safe_next(request.args.get("next")), op=None)


@bp.post("/sign-in")
def sign_in_submit() -> Any:
    back_to = _safe_next(request.form.get("next"))
    if not _same_site_post():
        return refusal(403, "Sign in from this dashboard's own sign-in page.")
    try:
        found = sign_in(request.form.get("token", ""))
    except SignInRefused as refused:
        return render_template("sign_in.html", next=back_to, error=str(refused), op=None), 401
    audit.record(
        token_id=found.principal.token_id,
        tenant=found.principal.tenant,
        action="sign_in",
        target=None,
        job_count=0,
    )
    return redirect(back_to, code=303)


@bp.post("/sign-out")
def sign_out_submit() -> Any:
    found = current_operator()
    if found is not None and not csrf_is_valid(found):
        return refusal(403, "The form's CSRF token is missing or wrong: reload the page.")
    sign_out()
    return redirect("/sign-in", code=303)


@bp.post("/jobs/<string:job_id>/cancel")
@action()
def cancel_job(job_id: str) -> Any:
    try:
        job = control.cancel(job_id, tenant=operator().tenant, reason="dashboard")
    except NotFound:
        return refusal(404, "No job with that id.")
    except InvalidTransition as error:
        return refusal(409, f"The job cannot be cancelled: it is {error.from_state}.")
    _record("cancel", job_id, 1, state=job.state)
    return redirect(f"/jobs/{job_id}", code=303)


@bp.post("/jobs/<string:job_id>/retry")
@action()
def retry_job(job_id: str) -> Any:
    try:
        control.retry(job_id, tenant=operator().tenant)
    except NotFound:
        return refusal(404, "No job with that id.")
    except InvalidTransition as error:
        return refusal(409, f"The job cannot be retried: it is {error.from_state}.")
    _record("retry", job_id, 1)
    return redirect(f"/jobs/{job_id}", code=303)


def _confirm(
    title: str, verb: str, found: int, what: str, url: str, fields: dict[str, str], *, back: str
) -> Any:
    """The dry run's page: how many jobs ``verb`` would move (at most the bulk limit), and
    the form that moves them."""
    limit = load_settings().dashboard_bulk_max
    return render_template(
        "confirm.html",
        op=operator(),
        title=title,
        count=min(found, limit),
        over_limit=found > limit,
        verb=verb,
        what=what,
        action_url=url,
        fields=fields,
        back=back,
    )


BULK_ACTIONS = {
    "retry": ("Retry", tuple(s.value for s in control.RETRYABLE)),
    "cancel": ("Cancel", tuple(s.value for s in control.CANCELLABLE)),
}


def _bulk_ids(verb: str, wanted: job_search.JobFilter) -> list[str]:
    limit = load_settings().dashboard_bulk_max
    with reading() as session:
        return job_search.matching_ids(
            session,
            wanted,
            tenant=operator().tenant,
            state_in=BULK_ACTIONS[verb][1],
            limit=limit + 1,
        )


def _outcome(verb: str, done: int, skipped: int) -> str:
    later = f", {skipped} skipped (they changed meanwhile)" if skipped else ""
    return f"{BULK_ACTIONS[verb][0]}: {done} jobs{later}."


def _apply(verb: str, ids: list[str]) -> tuple[int, int]:
    """Done and skipped (they changed state meanwhile, or vanished)."""
    done = skipped = 0
    tenant = operator().tenant
    for job_id in ids:
        try:
            if verb == "retry":
                control.retry(job_id, tenant=tenant)
            else:
                control.cancel(job_id, tenant=tenant, reason="dashboard")
            done += 1
        except (InvalidTransition, NotFound):
            skipped += 1
    return done, skipped


@bp.route("/jobs/bulk", methods=["GET", "POST"])
@viewer(page=True)
def bulk() -> Any:
    """GET: how many jobs the action would move (the dry run); POST: move them."""
    source = request.args if request.method == "GET" else request.form
    verb = source.get("action", "")
    if verb not in BULK_ACTIONS:
        return refusal(400, "Unknown bulk action: use retry or cancel.")
    try:
        wanted = job_search.JobFilter.from_args(source, admin=operator().is_admin)
    except job_search.FilterError as error:
        return refusal(400, f"The filter cannot be used: {error}.")
    if request.method == "POST":
        return _bulk_post(verb, wanted)
    if not operator().can_act:
        return refusal(403, "This token may only read ('jobs:read'): it cannot act.")
    ids = _bulk_ids(verb, wanted)
    return _confirm(
        f"{BULK_ACTIONS[verb][0]} jobs",
        BULK_ACTIONS[verb][0],
        len(ids),
        wanted.describe(),
        "/jobs/bulk",
        {**wanted.as_args(), "action": verb},
        back=f"/jobs?{urlencode(wanted.as_args())}",
    )


@action()
def _bulk_post(verb: str, wanted: job_search.JobFilter) -> Any:
    ids = _bulk_ids(verb, wanted)[: load_settings().dashboard_bulk_max]
    done, skipped = _apply(verb, ids)
    _record(f"bulk_{verb}", wanted.describe(), done, skipped=skipped)
    return render_template(
        "done.html",
        op=operator(),
        title=f"{BULK_ACTIONS[verb][0]} jobs",
        message=_outcome(verb, done, skipped),
        back=f"/jobs?{urlencode(wanted.as_args())}",
    )


def _group(key: str) -> tuple[FailureGroup | None, list[str]]:
    with reading() as session:
        return find_group(session, tenant=operator().tenant, key=key[:64], now=utcnow())


def _group_words(group: FailureGroup) -> str:
    where = group.frame if operator().is_admin else group.function
    return f"failed jobs with {group.error_type} at {where}"


@bp.route("/failures/retry", methods=["GET", "POST"])
@viewer(page=True)
def retry_group() -> Any:
    source = request.args if request.method == "GET" else request.form
    key = source.get("group", "")
    if request.method == "POST":
        return _retry_group_post(key)
    if not operator().can_act:
        return refusal(403, "This token may only read ('jobs:read'): it cannot act.")
    group, ids = _group(key)
    if group is None:
        return refusal(404, "No such failure group in the last 7 days (retried already?).")
    return _confirm(
        "Retry a failure group",
        "Retry",
        len(ids),
        _group_words(group),
        "/failures/retry",
        {"group": key},
        back="/failures",
    )


@action()
def _retry_group_post(key: str) -> Any:
    group, ids = _group(key)
    if group is None:
        return refusal(404, "No such failure group in the last 7 days (retried already?).")
    done, skipped = _apply("retry", ids[: load_settings().dashboard_bulk_max])
    _record("retry_group", f"{group.error_type} at {group.frame}", done, skipped=skipped)
    return render_template(
        "done.html",
        op=operator(),
        title="Retry a failure group",
        message=_outcome("retry", done, skipped),
        back="/failures",
    )


def _dead_letter_filter(source: Any) -> DeadLetterFilter | str:
    queue = source.get("queue", "").strip()
    if queue and queue not in dramatiq.get_broker().get_declared_queues():
        return f"No queue named {queue!r}."
    job_id = source.get("job", "").strip()[:36]
    if job_id and not queue:
        # One job's letter sits in its own queue's .XQ: only that one is looked through.
        with reading() as session:
            queue = session.scalar(select(Job.queue).where(Job.id == job_id)) or ""
    return DeadLetterFilter(queue=queue or None, job_id=job_id or None)


@bp.route("/dead-letters/redrive", methods=["GET", "POST"])
@viewer(page=True, admin=True)
def redrive() -> Any:
    source = request.args if request.method == "GET" else request.form
    wanted = _dead_letter_filter(source)
    if isinstance(wanted, str):
        return refusal(400, wanted)
    if request.method == "POST":
        return _redrive_post(wanted)
    found = process(
        dramatiq.get_broker(),
        wanted,
        redrive=False,
        limit=load_settings().dashboard_bulk_max + 1,
        max_scanned=DEAD_LETTERS_SCANNED,
    )
    what = (
        f"dead letters of job {wanted.job_id}"
        if wanted.job_id
        else (f"dead letters in {wanted.queue}" if wanted.queue else "every dead letter")
    )
    return _confirm(
        "Re-drive dead letters",
        "Re-drive",
        len(found),
        what,
        "/dead-letters/redrive",
        {"queue": wanted.queue or "", "job": wanted.job_id or ""},
        back="/dead-letters",
    )


@action(admin=True)
def _redrive_post(wanted: DeadLetterFilter) -> Any:
    moved = process(
        dramatiq.get_broker(),
        wanted,
        redrive=True,
        limit=load_settings().dashboard_bulk_max,
        max_scanned=DEAD_LETTERS_SCANNED,
    )
    _record("redrive", wanted.job_id or wanted.queue or "every queue", len(moved))
    return render_template(
        "done.html",
        op=operator(),
        title="Re-drive dead letters",
        message=f"Re-driven: {len(moved)} dead letters.",
        back="/dead-letters",
    )
