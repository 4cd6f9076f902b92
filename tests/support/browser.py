"""Debian's Chromium driven by Playwright: the dashboard tested in a real browser.

Playwright's own browsers are never downloaded (no ``playwright install``): it launches
``/usr/bin/chromium`` (Debian's ``chromium`` package, which ``.ci/run`` installs). Without
it the browser tests skip, and fail under CI=true.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from playwright.sync_api import Browser, ConsoleMessage, Page, expect, sync_playwright

from tests.support.services import require

CHROMIUM = Path(os.environ.get("JOBSTACK_TEST_CHROMIUM", "/usr/bin/chromium"))

#: How long a page action or an ``expect`` waits: a worker and a 1–2 s page refresh may
#: stand between a click and what it shows, on a machine that runs the whole suite.
WAIT_MS = 20_000
# The context's default timeout does not reach expect(), which has its own 5 s.
expect.set_options(timeout=WAIT_MS)


@contextmanager
def chromium() -> Iterator[Browser]:
    require(CHROMIUM.is_file(), f"Chromium at {CHROMIUM} (Debian's chromium package)")
    with sync_playwright() as playwright:
        # --no-sandbox: CI runs as root, where Chromium's sandbox cannot start.
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        try:
            yield browser
        finally:
            browser.close()


class Session:
    """One signed-in browser context (its own cookies), and what its console reported."""

    def __init__(self, browser: Browser, base: str) -> None:
        self.base = base
        self.context = browser.new_context(viewport={"width": 1280, "height": 900})
        self.context.set_default_timeout(WAIT_MS)
        self.page: Page = self.context.new_page()
        self.console: list[str] = []
        self.page.on("console", self._note)

    def _note(self, message: ConsoleMessage) -> None:
        if message.type in ("error", "warning"):
            self.console.append(message.text)

    def sign_in(self, token: str) -> Page:
        self.page.goto(self.base + "/")
        self.page.get_by_label("API token").fill(token)
        self.page.get_by_role("button", name="Sign in").click()
        self.page.wait_for_url(self.base + "/")
        return self.page

    def goto(self, path: str) -> Page:
        self.page.goto(self.base + path)
        return self.page

    def policy_violations(self) -> list[str]:
        return [text for text in self.console if "Content Security Policy" in text]

    def close(self) -> None:
        self.context.close()
