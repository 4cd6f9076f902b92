"""The dashboard in Debian's Chromium, against ``jobstack api`` and a real worker on
RabbitMQ: signing in, a job followed live, the actions, and what each token may see."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect

from app.jobs import get_job
from app.tokens import create_token
from tests.acceptance.conftest import BIN, WorkerProcess
from tests.support.browser import Session, chromium
from tests.support.served_api import ServedApi
from tests.support.waiting import wait_until


@dataclass
class Stack:
    api: ServedApi
    browser: Browser
    writer: str
    reader: str
    admin: str
    other_tenant: str
    sessions: list[Session]

    def session(self, token: str) -> Session:
        session = Session(self.browser, self.api.base)
        self.sessions.append(session)
        session.sign_in(token)
        return session

    def submit(self, token: str, actor: str, **kwargs: Any) -> str:
        status, _, job = self.api.call(
            "POST",
            "/v1/jobs",
            {"actor": actor, "kwargs": kwargs},
            {"Authorization": f"Bearer {token}"},
        )
        assert status == 202, job
        return str(job["id"])

    def state_of(self, job_id: str) -> str:
        return get_job(job_id).state


@pytest.fixture
def stack(
    clean_db: str, tmp_path: Path, start_worker: Callable[..., WorkerProcess]
) -> Iterator[Stack]:
    api = ServedApi(BIN, tmp_path / "api.log")
    start_worker()
    with chromium() as browser:
        found = Stack(
            api,
            browser,
            writer=create_token("acme", {"jobs:read", "jobs:write"}),
            reader=create_token("acme", {"jobs:read"}),
            admin=create_token("ops", {"admin"}),
            other_tenant=create_token("globex", {"jobs:read", "jobs:write"}),
            sessions=[],
        )
        try:
            yield found
            for session in found.sessions:
                assert session.policy_violations() == [], session.console
        finally:
            for session in found.sessions:
                session.close()
            api.stop()


def _state(page: Page) -> str:
    return page.locator(".job-status .badge").inner_text()


def test_a_job_submitted_over_http_appears_and_is_followed_live_to_success(stack: Stack) -> None:
    session = stack.session(stack.writer)
    page = session.goto("/jobs")
    # Set once: a reload would lose it, so finding it at the end proves none happened.
    page.evaluate("window.__loadedOnce = true")
    # Two 6-second jobs take both worker threads: the next job waits, queued, for one,
    # long enough for a 2 s list refresh, the click and the detail page on a busy machine.
    blockers = [stack.submit(stack.writer, "diagnostics.sleep", seconds=6) for _ in range(2)]
    job_id = stack.submit(stack.writer, "diagnostics.sleep", seconds=4)

    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row).to_be_visible()
    assert page.evaluate("window.__loadedOnce") is True
    row.get_by_role("link").click()
    page.wait_for_url(re.compile(f"/jobs/{job_id}$"))
    page.evaluate("window.__loadedOnce = true")

    seen_states: list[str] = []
    progress: list[int] = []
    deadline = time.monotonic() + 40
    while time.monotonic() < deadline:
        state = _state(page)
        if not seen_states or seen_states[-1] != state:
            seen_states.append(state)
        value = int(page.locator("[data-progress]").get_attribute("data-progress") or 0)
        if state == "running" and (not progress or progress[-1] != value):
            progress.append(value)
        if state == "succeeded":
            break
        page.wait_for_timeout(100)
    assert seen_states == ["queued", "running", "succeeded"], seen_states
    assert len(progress) >= 2 and progress == sorted(progress) and progress[-1] > 0, progress
    assert page.evaluate("window.__loadedOnce") is True
    expect(page.locator("[data-progress]")).to_have_text("100%")
    expect(page.locator(".timeline")).to_contain_text("succeeded")
    assert {stack.state_of(b) for b in blockers} == {"succeeded"}


def test_cancel_a_running_job_and_retry_a_failed_one_from_their_pages(stack: Stack) -> None:
    session = stack.session(stack.writer)
    running = stack.submit(stack.writer, "diagnostics.sleep", seconds=60)
    page = session.goto(f"/jobs/{running}")
    expect(page.locator(".job-status .badge")).to_have_text("running")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator(".job-status .badge")).to_have_text("cancelled")
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    assert stack.state_of(running) == "cancelled"

    failed = stack.submit(stack.writer, "diagnostics.fail", times=1, permanent=True)
    page = session.goto(f"/jobs/{failed}")
    expect(page.locator(".job-status .badge")).to_have_text("failed")
    expect(page.locator(".error-message")).to_contain_text("attempt 1 fails")
    page.get_by_role("button", name="Retry").click()
    expect(page.locator(".job-status .badge")).to_have_text("succeeded")
    assert get_job(failed).attempts == 2


def test_a_dead_letter_is_re_driven_after_the_dry_run_count(stack: Stack) -> None:
    failed = stack.submit(stack.other_tenant, "diagnostics.fail", times=1, permanent=True)
    wait_until(lambda: stack.state_of(failed) == "failed", 20, "the job to fail")
    session = stack.session(stack.admin)
    page = session.goto("/dead-letters")
    row = page.locator("tr", has=page.locator(f'a[href="/jobs/{failed}"]'))
    expect(row).to_be_visible()
    row.get_by_role("link", name="Re-drive…").click()
    expect(page.locator(".confirm")).to_contain_text("This will re-drive 1 job")
    assert stack.state_of(failed) == "failed"  # The dry run moved nothing.
    page.get_by_role("button", name="Re-drive").click()
    expect(page.get_by_role("status")).to_contain_text("Re-driven: 1 dead letters.")
    wait_until(lambda: stack.state_of(failed) == "succeeded", 20, "the re-driven job to run")
    page = session.goto("/audit")
    expect(page.locator("#live")).to_contain_text("redrive")


def test_a_read_only_token_sees_no_action_and_forged_or_csrf_less_posts_are_refused(
    stack: Stack,
) -> None:
    failed = stack.submit(stack.writer, "diagnostics.fail", times=1, permanent=True)
    wait_until(lambda: stack.state_of(failed) == "failed", 20, "the job to fail")
    reader = stack.session(stack.reader)
    page = reader.goto(f"/jobs/{failed}")
    expect(page.locator(".job-status .badge")).to_have_text("failed")
    expect(page.get_by_role("button", name="Retry")).to_have_count(0)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    forged = page.evaluate(
        """async (id) => {
            const csrf = document.querySelector("main").dataset.csrf;
            const body = new URLSearchParams({csrf_token: csrf});
            const answer = await fetch(`/jobs/${id}/retry`, {method: "POST", body});
            return answer.status;
        }""",
        failed,
    )
    assert forged == 403

    writer = stack.session(stack.writer)
    page = writer.goto(f"/jobs/{failed}")
    expect(page.get_by_role("button", name="Retry")).to_be_visible()
    without_csrf = page.evaluate(
        """async (id) => (await fetch(`/jobs/${id}/retry`, {method: "POST",
            body: new URLSearchParams({other: "1"})})).status""",
        failed,
    )
    assert without_csrf == 403
    assert stack.state_of(failed) == "failed"


def test_one_tenant_cannot_find_anothers_job_by_id_or_search(stack: Stack) -> None:
    theirs = stack.submit(stack.other_tenant, "diagnostics.noop")
    wait_until(lambda: stack.state_of(theirs) == "succeeded", 20, "their job to run")
    session = stack.session(stack.writer)
    page = session.goto(f"/jobs/{theirs}")
    expect(page.get_by_role("alert")).to_have_text("No job with that id.")
    page = session.goto("/jobs")
    page.get_by_label("Search").fill(theirs)
    page.get_by_role("button", name="Filter").click()
    expect(page.locator("#live")).to_contain_text("No job matches.")
    expect(page.locator(f'tr[data-job="{theirs}"]')).to_have_count(0)


def test_an_error_message_with_a_script_tag_is_shown_as_text(stack: Stack) -> None:
    message = "<script>window.__pwned = 1</script><img src=x onerror=window.__pwned=2>"
    failed = stack.submit(
        stack.writer, "diagnostics.fail", times=1, permanent=True, message=message
    )
    wait_until(lambda: stack.state_of(failed) == "failed", 20, "the job to fail")
    session = stack.session(stack.writer)
    page = session.goto(f"/jobs/{failed}")
    expect(page.locator(".error-message")).to_have_text(message)
    page.wait_for_timeout(2500)  # A live update or two: they are escaped too.
    expect(page.locator(".error-message")).to_have_text(message)
    assert page.evaluate("window.__pwned") is None
    page = session.goto("/failures")
    expect(page.locator("#live")).to_contain_text("<script>window.__pwned = 1</script>")
    assert page.evaluate("window.__pwned") is None


#: WCAG 2 contrast of every text on the page against the background it is drawn on: the
#: texts below 4.5:1 (3:1 for large text).
LOW_CONTRAST = """() => {
  const luminance = (rgb) => {
    const [r, g, b] = rgb.map((v) => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const parse = (css) => (css.match(/[\\d.]+/g) || []).map(Number);
  const background = (element) => {
    for (let node = element; node; node = node.parentElement) {
      const rgba = parse(getComputedStyle(node).backgroundColor);
      if (rgba.length === 3 || (rgba.length === 4 && rgba[3] > 0)) return rgba.slice(0, 3);
    }
    return [255, 255, 255];
  };
  const low = [];
  for (const element of document.querySelectorAll("body *")) {
    const own = Array.from(element.childNodes).some(
      (n) => n.nodeType === 3 && n.textContent.trim());
    if (!own || !element.getClientRects().length) continue;
    const style = getComputedStyle(element);
    const a = luminance(parse(style.color).slice(0, 3));
    const b = luminance(background(element));
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && Number(style.fontWeight) >= 700);
    if (ratio < (large ? 3 : 4.5)) {
      const text = element.textContent.trim().slice(0, 30);
      low.push(`${element.tagName} "${text}" ${ratio.toFixed(2)}`);
    }
  }
  return low;
}"""


def test_the_pages_are_readable_and_work_from_the_keyboard(stack: Stack) -> None:
    failed = stack.submit(stack.writer, "diagnostics.fail", times=1, permanent=True)
    wait_until(lambda: stack.state_of(failed) == "failed", 20, "the job to fail")
    session = Session(stack.browser, stack.api.base)
    stack.sessions.append(session)
    page = session.goto("/")
    # The token field has the focus (autofocus applies once the page is shown: wait for
    # it rather than type into nothing on a loaded machine); Enter signs in.
    page.wait_for_function("document.activeElement && document.activeElement.id === 'token'")
    page.keyboard.type(stack.admin)
    page.keyboard.press("Enter")
    page.wait_for_url(stack.api.base + "/")
    page.keyboard.press("Tab")  # The skip link comes first...
    assert page.evaluate("document.activeElement.textContent") == "Skip to content"
    page.keyboard.press("Tab")  # ...then the navigation, with a visible focus ring.
    focused = page.evaluate(
        "(() => { const s = getComputedStyle(document.activeElement);"
        " return [document.activeElement.textContent, s.outlineStyle, s.outlineWidth]; })()"
    )
    assert focused[0] == "Overview" and focused[1] != "none" and focused[2] != "0px", focused
    for path in ("/", "/jobs", f"/jobs/{failed}", "/failures", "/dead-letters", "/workers"):
        page = session.goto(path)
        page.wait_for_timeout(300)
        assert page.evaluate(LOW_CONTRAST) == [], path
