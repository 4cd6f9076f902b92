"""``/docs``: Swagger UI from the installed swagger-ui-bundle package, same-origin only, and
working under a Content-Security-Policy without ``'unsafe-inline'`` scripts."""

from __future__ import annotations

from html.parser import HTMLParser

import pytest
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from api import create_app
from api.docs_assets import DOCS_CSP

JAVASCRIPT = {"text/javascript", "application/javascript"}


class _Page(HTMLParser):
    """The URLs, scripts, stylesheets and inline code of an HTML page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.scripts: list[str] = []
        self.stylesheets: list[str] = []
        self.inline_scripts = 0
        self.style_elements = 0
        self.style_attributes = 0
        self.spec_urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = {name: value or "" for name, value in attrs}
        self.urls += [value for name, value in values.items() if name in ("src", "href")]
        if "style" in values:
            self.style_attributes += 1
        if "data-spec-url" in values:
            self.spec_urls.append(values["data-spec-url"])
        if tag == "script":
            self._in_script = True
            if "src" in values:
                self.scripts.append(values["src"])
        elif tag == "link" and values.get("rel") == "stylesheet":
            self.stylesheets.append(values["href"])
        elif tag == "style":
            self.style_elements += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "script":
            self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1


@pytest.fixture
def client(database_url: str) -> FlaskClient:
    return create_app({"TESTING": True}).test_client()


def _page(client: FlaskClient) -> _Page:
    response = client.get("/docs")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = _Page()
    page.feed(response.get_data(as_text=True))
    return page


def test_docs_is_an_html_page_of_same_origin_urls_only(client: FlaskClient) -> None:
    page = _page(client)
    assert page.scripts
    assert page.stylesheets
    for url in page.urls:
        assert url.startswith("/"), url
        assert not url.startswith("//"), url
        assert "http://" not in url
        assert "https://" not in url


def _get(client: FlaskClient, url: str) -> TestResponse:
    """The response to a GET, read whole and closed (files are streamed)."""
    response = client.get(url)
    response.get_data()
    response.close()
    return response


def test_every_script_and_stylesheet_of_docs_is_served(client: FlaskClient) -> None:
    page = _page(client)
    for url in page.scripts:
        response = _get(client, url)
        assert response.status_code == 200, url
        assert response.mimetype in JAVASCRIPT, url
        assert len(response.get_data()) > 200, url
    for url in page.stylesheets:
        response = _get(client, url)
        assert response.status_code == 200, url
        assert response.mimetype == "text/css", url
        assert len(response.get_data()) > 10_000, url
    # The bundle itself, not an empty stand-in, and cacheable for long.
    (bundle,) = [url for url in page.scripts if "swagger-ui-bundle.js" in url]
    response = _get(client, bundle)
    assert len(response.get_data()) > 500_000
    assert "SwaggerUIBundle" in response.get_data(as_text=True)
    assert response.cache_control.max_age is not None
    assert response.cache_control.max_age >= 24 * 3600


def test_docs_starts_swagger_ui_on_this_apis_openapi_document(client: FlaskClient) -> None:
    page = _page(client)
    (spec_url,) = page.spec_urls
    spec = client.get(spec_url)
    assert spec.status_code == 200
    assert spec.get_json()["info"]["title"] == "jobstack"
    (init,) = [url for url in page.scripts if url.startswith("/docs/init.js")]
    script = client.get(init).get_data(as_text=True)
    assert "SwaggerUIBundle(" in script
    assert "specUrl" in script


def test_docs_sends_a_csp_without_inline_scripts_and_has_none(client: FlaskClient) -> None:
    response = client.get("/docs")
    csp = response.headers["Content-Security-Policy"]
    assert csp == DOCS_CSP
    directives = {
        name: values for name, *values in (part.split() for part in csp.split(";") if part.strip())
    }
    for name in ("script-src", "default-src"):
        assert "'unsafe-inline'" not in directives[name]
        assert "'unsafe-eval'" not in directives[name]
        assert not any(value.startswith(("http:", "https:", "*")) for value in directives[name])
    assert directives["script-src"] == ["'self'"]
    assert directives["object-src"] == ["'none'"]
    # The page itself needs no exception: no inline script, no inline style.
    page = _page(client)
    assert page.inline_scripts == 0
    assert page.style_elements == 0
    assert page.style_attributes == 0


def test_docs_is_the_only_docs_route(client: FlaskClient) -> None:
    assert client.application.config["OPENAPI_SWAGGER_UI_PATH"] is None
    rules = [rule for rule in client.application.url_map.iter_rules() if rule.rule == "/docs"]
    assert [rule.endpoint for rule in rules] == ["docs.page"]


@pytest.mark.parametrize(
    "path",
    [
        "/docs/assets/../setup.cfg",
        "/docs/assets/../../../../setup.cfg",
        "/docs/assets/..%2f..%2f..%2f..%2fsetup.cfg",
        "/docs/assets/%2e%2e/__init__.py",
        "/docs/assets//etc/passwd",
        "/docs/assets/does-not-exist.js",
        # The package's own pages: its demo loads a spec from the internet.
        "/docs/assets/index.html",
        "/docs/assets/oauth2-redirect.html",
    ],
)
def test_nothing_outside_the_bundles_assets_is_served(client: FlaskClient, path: str) -> None:
    # Werkzeug redirects ``//`` to ``/`` first.
    response = client.get(path, follow_redirects=True)
    assert response.status_code == 404
    assert response.get_json()["code"] == 404
