"""The dashboard's pages. Each page is a frame (navigation, filters, forms) around a live
part: ``/fragments/<page>`` renders that part alone, and the page's event stream
(:mod:`api.dashboard.live`) sends it again whenever it changed."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlencode

import dramatiq
from flask import Blueprint, render_template, request
from werkzeug.datastructures import MultiDict
from werkzeug.exceptions import HTTPException

from api.dashboard import job_search, queue_view
from api.dashboard.access import operator, refusal, viewer
from api.dashboard.failure_groups import failure_groups
from api.dashboard.job_page import job_details
from api.dashboard.overview import alive_workers, overview
from api.dashboard.queue_view import management_queue_link, management_ui
from api.dashboard.reading import reading
from api.dashboard.schedule_view import schedule_views
from api.pagination import decode_cursor, encode_cursor
from app import audit
from app.config import load_settings
from app.errors import NotFound
from app.models import Worker
from app.operations.dead_letters import DeadLetterFilter, process
from app.timeutil import utcnow
from app.workers import list_workers, status

bp = Blueprint("dashboard", __name__, template_folder="templates", static_folder="static",
               static_url_path="/ui-static")  # fmt: skip


#: Dead letters the page looks through for the 200 it lists.
DEAD_LETTERS_LISTED_SCANNED = 5000


#: Longer than any cursor this dashboard makes.
MAX_CURSOR_CHARS = 200


class PageError(Exception):
    """The page cannot be shown as asked (a bad filter, a missing job): status and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Page:
    title: str
    context: Callable[[MultiDict[str, str]], dict[str, Any]]
    admin: bool = False
    #: How much more often (< 1) or less often (> 1) than the setting the page is
    #: re-read while open.
    refresh: float = 1.0


def _cursor(args: MultiDict[str, str]) -> Any:
    raw = args.get("cursor")
    if not raw:
        return None
    try:
        if len(raw) > MAX_CURSOR_CHARS:
            raise HTTPException()
        return decode_cursor(raw)
    except (HTTPException, RecursionError):
        raise PageError(400, "That page link is broken: start from the first page.") from None


def overview_context(args: MultiDict[str, str]) -> dict[str, Any]:
    op = operator()
    with reading() as session:
        found = overview(
            session,
            tenant=op.tenant,
            admin=op.is_admin,
            broker=dramatiq.get_broker(),
            settings=load_settings(),
            now=utcnow(),
        )
    return {"ov": found}


def jobs_context(args: MultiDict[str, str]) -> dict[str, Any]:
    op = operator()
    try:
        wanted = job_search.JobFilter.from_args(args, admin=op.is_admin)
    except job_search.FilterError as error:
        raise PageError(400, f"The filter cannot be used: {error}.") from None
    with reading() as session:
        rows, following = job_search.page(session, wanted, tenant=op.tenant, cursor=_cursor(args))
    next_args = None
    if following is not None:
        last = SimpleNamespace(created_at=following[0], id=following[1])
        next_args = {**wanted.as_args(), "cursor": encode_cursor(last)}  # type: ignore[arg-type]
    return {"filter": wanted, "rows": rows, "next_args": next_args, "now": utcnow()}


def job_context(args: MultiDict[str, str]) -> dict[str, Any]:
    try:
        return job_details(args.get("id", ""), operator(), load_settings())
    except NotFound:
        raise PageError(404, "No job with that id.") from None


def failures_context(args: MultiDict[str, str]) -> dict[str, Any]:
    with reading() as session:
        groups, capped = failure_groups(session, tenant=operator().tenant, now=utcnow())
    return {"groups": groups, "capped": capped}


def dead_letters_context(args: MultiDict[str, str]) -> dict[str, Any]:
    queue = args.get("queue", "").strip()
    if queue and queue not in dramatiq.get_broker().get_declared_queues():
        raise PageError(404, f"No queue named {queue!r}.")
    letters = process(
        dramatiq.get_broker(),
        DeadLetterFilter(queue=queue or None),
        redrive=False,
        limit=200,
        max_scanned=DEAD_LETTERS_LISTED_SCANNED,
    )
    return {"letters": letters, "queue": queue}


def queues_context(args: MultiDict[str, str]) -> dict[str, Any]:
    settings = load_settings()
    with reading() as session:
        views = queue_view.queue_views(
            session, dramatiq.get_broker(), settings.broker_url, utcnow()
        )
    base = management_ui(settings.broker_url, settings.rabbitmq_ui_url)
    links = {v.name: management_queue_link(base, settings.broker_url, v.name) for v in views}
    return {"queues": views, "links": links, "ui": base, "now": utcnow()}


def schedules_context(args: MultiDict[str, str]) -> dict[str, Any]:
    with reading() as session:
        views = schedule_views(session, dramatiq.get_broker(), utcnow())
        session.expunge_all()
    return {"schedules": views, "now": utcnow()}


def workers_context(args: MultiDict[str, str]) -> dict[str, Any]:
    gone_after = load_settings().worker_gone_after
    with reading() as session:
        workers: list[Worker] = list_workers(session)[:200]
        alive = len(alive_workers(session, utcnow(), gone_after))
        session.expunge_all()
    rows = [(worker, status(worker, gone_after)) for worker in workers]
    return {"workers": rows, "alive": alive, "now": utcnow()}


def audit_context(args: MultiDict[str, str]) -> dict[str, Any]:
    before = args.get("before", "")
    valid = re.fullmatch(r"[0-9]{1,18}", before) is not None
    entries = audit.entries(tenant=None, before=int(before) if valid else None, limit=100)
    return {"entries": entries}


PAGES: dict[str, Page] = {
    "overview": Page("Overview", overview_context),
    "jobs": Page("Jobs", jobs_context),
    # A running job's progress is what its page is watched for.
    "job": Page("Job", job_context, refresh=0.5),
    "failures": Page("Failures", failures_context),
    # Listing dead letters fetches them from RabbitMQ and puts them back.
    "dead-letters": Page("Dead letters", dead_letters_context, admin=True, refresh=5.0),
    "queues": Page("Queues", queues_context, admin=True),
    # Cron jobs are jobstack's own (the reserved tenant's): admins only.
    "schedules": Page("Schedules", schedules_context, admin=True),
    "workers": Page("Workers", workers_context, admin=True),
    "audit": Page("Audit", audit_context, admin=True),
}


def render_page(name: str, args: MultiDict[str, str], *, fragment: bool) -> Any:
    page = PAGES[name]
    if page.admin and not operator().is_admin:
        return refusal(403, "This page is for admins (a token with the 'admin' scope).")
    try:
        context = page.context(args)
    except PageError as error:
        return refusal(error.status, str(error))
    template = f"fragments/{name}.html" if fragment else f"pages/{name}.html"
    live = f"/fragments/{name}?{urlencode(list(args.items(multi=True)))}".rstrip("?")
    return render_template(
        template, page=name, title=page.title, live=live, op=operator(), **context
    )


def _page_route(rule: str, name: str) -> None:
    def view(**kwargs: str) -> Any:
        args = MultiDict(request.args)
        args.update(kwargs)
        return render_page(name, args, fragment=False)

    view.__name__ = f"page_{name.replace('-', '_')}"
    bp.add_url_rule(rule, view_func=viewer()(view))


for _rule, _name in (
    ("/", "overview"),
    ("/jobs", "jobs"),
    ("/jobs/<string:id>", "job"),
    ("/failures", "failures"),
    ("/dead-letters", "dead-letters"),
    ("/queues", "queues"),
    ("/schedules", "schedules"),
    ("/workers", "workers"),
    ("/audit", "audit"),
):
    _page_route(_rule, _name)


@bp.get("/fragments/<string:name>")
@viewer(page=False)
def fragment(name: str) -> Any:
    if name not in PAGES:
        return refusal(404, "No such page.")
    return render_page(name, request.args, fragment=True)
