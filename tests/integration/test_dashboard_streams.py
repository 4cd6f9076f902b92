"""The dashboard as ``jobstack api`` serves it (the event loop in front of Flask): form
bodies only from a session, and each page's live stream, which ends when the session does."""

from __future__ import annotations

import http.client
import json
import re
import time
from collections.abc import Callable
from urllib.parse import quote, urlencode

import pytest

from app.states import JobState
from app.tokens import create_token, revoke_token
from tests.integration.conftest import Tokens
from tests.support.dashboard import bearer_token
from tests.support.factories import make_job


def _request(
    port: int, method: str, path: str, body: str = "", cookie: str = ""
) -> tuple[int, dict[str, str], str]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    headers = {"Content-Type": "application/x-www-form-urlencoded"} if body else {}
    if cookie:
        headers["Cookie"] = cookie
    connection.request(method, path, body=body or None, headers=headers)
    answer = connection.getresponse()
    found = answer.status, {k.lower(): v for k, v in answer.getheaders()}, answer.read().decode()
    connection.close()
    return found


def _signed_in(port: int, token: str) -> tuple[str, str]:
    """The session cookie and its CSRF token, signed in over HTTP."""
    status, headers, _ = _request(port, "POST", "/sign-in", urlencode({"token": token}))
    assert status == 303, headers
    cookie = headers["set-cookie"].split(";", 1)[0]
    page = _request(port, "GET", "/jobs", cookie=cookie)[2]
    found = re.search(r'data-csrf="([^"]+)"', page)
    assert found
    return cookie, found[1]


def test_a_form_body_is_read_only_from_a_session_and_sign_in_bodies_are_small(
    served_port: int, tokens: Tokens
) -> None:
    job_id = make_job(JobState.FAILED, tenant="acme")
    status, headers, body = _request(served_port, "POST", f"/jobs/{job_id}/retry", "x=1")
    assert status == 401 and json.loads(body)["code"] == 401
    status, _, _ = _request(served_port, "POST", "/sign-in", "token=" + "a" * 5000)
    assert status == 413

    cookie, _ = _signed_in(served_port, bearer_token(tokens.acme))
    status, headers, body = _request(
        served_port, "POST", f"/jobs/{job_id}/retry", "x=1", cookie=cookie
    )
    assert status == 403 and "CSRF" in body and headers["content-type"].startswith("text/html")


class _Events:
    """An open event stream, read event by event."""

    def __init__(self, port: int, path: str, cookie: str) -> None:
        self.connection = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
        self.connection.request("GET", path, headers={"Cookie": cookie})
        self.response = self.connection.getresponse()

    def next(self) -> tuple[str, str]:
        kind, data = "message", list[str]()
        while True:
            line = self.response.readline().decode()
            if line == "":
                raise AssertionError("the stream ended")
            line = line.rstrip("\n")
            if not line:
                if data:
                    return kind, "\n".join(data)
                continue
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: "):
                data.append(line[6:])

    def until(self, wanted: Callable[[str, str], bool], within: float = 10) -> tuple[str, str]:
        """The first event ``wanted`` accepts. Renders before it are skipped: a page whose
        ages tick ("850 ms ago") is sent again at every refresh, changed or not."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            event = self.next()
            if wanted(*event):
                return event
        raise AssertionError(f"no such event within {within} s")

    def close(self) -> None:
        self.connection.close()


def test_a_page_stream_sends_the_live_part_when_it_changes_and_ends_with_the_session(
    served_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_DASHBOARD_REFRESH_SECONDS", "0.2")
    token = create_token("acme", {"jobs:read"})
    cookie, _ = _signed_in(served_port, token)
    first = make_job(JobState.QUEUED, tenant="acme")
    stream = _Events(served_port, "/live?src=" + quote("/fragments/jobs?state=queued"), cookie)
    try:
        assert stream.response.status == 200
        assert stream.response.getheader("Content-Type", "").startswith("text/event-stream")
        kind, data = stream.next()
        assert kind == "render" and f'data-job="{first}"' in data
        second = make_job(JobState.QUEUED, tenant="acme")
        stream.until(lambda kind, data: kind == "render" and f'data-job="{second}"' in data)

        token_id = next(iter(re.findall(r'title="token ([^"]+)"', _request(
            served_port, "GET", "/jobs", cookie=cookie)[2])))  # fmt: skip
        revoke_token(token_id)
        assert stream.until(lambda kind, _: kind == "end") == ("end", "401")
    finally:
        stream.close()


@pytest.mark.parametrize("source", ["/v1/jobs", "https://evil.example/", "/fragments/nope"])
def test_only_a_dashboard_fragment_can_be_followed(
    served_port: int, tokens: Tokens, source: str
) -> None:
    cookie, _ = _signed_in(served_port, bearer_token(tokens.admin))
    status, _, body = _request(served_port, "GET", "/live?src=" + quote(source), cookie=cookie)
    assert status == 400 and "fragments" in body


def test_signing_out_ends_the_pages_open_in_that_session(
    served_port: int, tokens: Tokens, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("JOBSTACK_DASHBOARD_REFRESH_SECONDS", "0.2")
    cookie, csrf = _signed_in(served_port, bearer_token(tokens.acme))
    stream = _Events(served_port, "/live?src=" + quote("/fragments/overview"), cookie)
    try:
        assert stream.next()[0] == "render"
        signed_out = _request(
            served_port, "POST", "/sign-out", urlencode({"csrf_token": csrf}), cookie=cookie
        )
        assert signed_out[0] == 303
        assert stream.until(lambda kind, _: kind == "end") == ("end", "401")
    finally:
        stream.close()
