"""``/docs``: Swagger UI served by the API itself, from the pinned ``swagger-ui-bundle`` package.

Why not flask-smorest's own ``/docs``: it loads Swagger UI from whatever
``OPENAPI_SWAGGER_UI_URL`` names (a CDN, unpinned, so a blank page without internet access)
and its page starts Swagger UI with an inline ``<script>``, which a Content-Security-Policy
without ``'unsafe-inline'`` (:data:`DOCS_CSP`) blocks. Here the page has no inline script
or style: it loads the bundle's files from ``/docs/assets/`` (the package's folder of
swagger-ui-dist files, installed from PyPI, nothing committed to this repository) and
starts Swagger UI from ``/docs/init.js``, which reads the spec's URL from a data attribute.
Nothing is fetched from the internet at run time. flask-smorest's Swagger UI route stays
off (``OPENAPI_SWAGGER_UI_PATH`` is None) so that this is the only ``/docs``.

Like ``/openapi.json``, these GET endpoints need no token.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, render_template_string, send_from_directory, url_for
from swagger_ui_bundle import swagger_ui_path  # type: ignore[import-untyped]

blp = Blueprint("docs", __name__)

#: The folder of swagger-ui-dist files that the installed package ships (its name carries
#: Swagger UI's version, e.g. ``swagger-ui-4.15.5``).
ASSETS_DIR = Path(str(swagger_ui_path))

#: Asset URLs carry the bundle's version as a query string, so they can be cached long
#: and still change when the package is upgraded.
ASSETS_VERSION = ASSETS_DIR.name

#: Kinds of files served from :data:`ASSETS_DIR`: its HTML pages (the package's demo page,
#: which would load a spec from the internet, and OAuth2's redirect page) are not.
ASSET_SUFFIXES = frozenset({".js", ".css", ".png", ".map"})

ASSET_MAX_AGE = 365 * 24 * 3600

#: The Content-Security-Policy of ``/docs``: no ``'unsafe-inline'``, for scripts or styles
#: (Swagger UI 4.15.5 sets styles through the DOM, which CSP allows; checked in Chromium:
#: loading, expanding, "Try it out", models and the Authorize dialog report no violation).
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>jobstack API</title>
  <link rel="stylesheet" href="{{ asset('swagger-ui.css') }}">
  <link rel="icon" type="image/png" href="{{ asset('favicon-32x32.png') }}">
</head>
<body>
  <div id="swagger-ui" data-spec-url="{{ spec_url }}"></div>
  <script src="{{ asset('swagger-ui-bundle.js') }}"></script>
  <script src="{{ url_for('docs.init_script') }}"></script>
</body>
</html>
"""

#: Starts Swagger UI on the page's ``#swagger-ui`` element. ``validatorUrl: null``: no
#: badge fetched from validator.swagger.io.
INIT_SCRIPT = """\
"use strict";
window.addEventListener("DOMContentLoaded", function () {
  var element = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: element.dataset.specUrl,
    domNode: element,
    deepLinking: true,
    validatorUrl: null
  });
});
"""


def _asset_url(filename: str) -> str:
    return url_for("docs.asset", filename=filename, v=ASSETS_VERSION)


@blp.get("/docs")
def page() -> Response:
    html = render_template_string(PAGE, asset=_asset_url, spec_url=url_for("api-docs.openapi_json"))
    response = Response(html, mimetype="text/html")
    response.headers["Content-Security-Policy"] = DOCS_CSP
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/docs/init.js")
def init_script() -> Response:
    response = Response(INIT_SCRIPT, mimetype="text/javascript")
    response.headers["Cache-Control"] = "no-cache"
    return response


@blp.get("/docs/assets/<path:filename>")
def asset(filename: str) -> Response:
    if Path(filename).suffix not in ASSET_SUFFIXES:
        abort(404)
    # send_from_directory answers 404 for a path that leaves the folder (``..``, absolute).
    return send_from_directory(ASSETS_DIR, filename, max_age=ASSET_MAX_AGE)
