"""The operator dashboard, served by the API process at ``/``.

Server-rendered pages (Jinja2) with one small script that keeps their live part current
over Server-Sent Events; charts are SVG drawn on the server. Everything is served from
the API itself, under a Content-Security-Policy that allows no inline script and nothing
from elsewhere.

- :mod:`.session`, :mod:`.access`: signing in with an API token, CSRF, scopes;
- :mod:`.pages`, :mod:`.actions`, :mod:`.live`: the routes;
- :mod:`.overview`, :mod:`.throughput`, :mod:`.job_search`, :mod:`.job_page`,
  :mod:`.failure_groups`, :mod:`.queue_view`, :mod:`.schedule_view`: what pages show;
- :mod:`.charts`, :mod:`.formatting`, :mod:`.percentiles`, :mod:`.sql_time`: helpers.
"""

from __future__ import annotations

from flask import Flask, Response, request

from api.dashboard import actions, live, session  # noqa: F401  (registers their routes)
from api.dashboard.charts import latency_chart, throughput_chart
from api.dashboard.formatting import register as register_filters
from api.dashboard.pages import bp

#: Scripts, styles, images and connections from this origin only; no inline script, no
#: framing, no plugins, forms posting only here.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
    "form-action 'self'"
)


def _secure_headers(response: Response) -> Response:
    if request.blueprint != bp.name:
        return response
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CONTENT_SECURITY_POLICY)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if request.endpoint != f"{bp.name}.static":
        # Pages show jobs' data: never kept by a browser cache or a proxy.
        headers.setdefault("Cache-Control", "no-store")
    return response


def init_app(app: Flask) -> None:
    session.init_app(app)
    register_filters(app)
    app.add_template_global(throughput_chart, "throughput_chart")
    app.add_template_global(latency_chart, "latency_chart")
    app.register_blueprint(bp)
    app.after_request(_secure_headers)
