"""``make screenshots``: the dashboard's pages as PNGs in docs/images/, taken in Debian's
Chromium from a throwaway stack (its own SQLite database, its own RabbitMQ vhost when
``rabbitmqctl`` can make one, an API and a worker) filled with a few jobs of every kind.

    python infra/scripts/screenshots.py [--out docs/images]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from playwright.sync_api import Page, sync_playwright

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
CHROMIUM = "/usr/bin/chromium"
VHOST = "jobstack-screenshots"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def wait_for(check: Callable[[], bool], seconds: float, what: str) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise SystemExit(f"screenshots: gave up waiting for {what}")


@contextmanager
def own_vhost() -> Iterator[str]:
    """A broker URL on a vhost of its own (so no running worker takes these jobs), or the
    default vhost when rabbitmqctl cannot make one."""
    rabbitmqctl = shutil.which("rabbitmqctl") or "/usr/sbin/rabbitmqctl"
    made = subprocess.run([rabbitmqctl, "add_vhost", VHOST], capture_output=True).returncode == 0
    if made:
        subprocess.run(
            [rabbitmqctl, "set_permissions", "-p", VHOST, "guest", ".*", ".*", ".*"],
            capture_output=True,
            check=True,
        )
        yield f"amqp://guest:guest@127.0.0.1:5672/{VHOST}"
        subprocess.run([rabbitmqctl, "delete_vhost", VHOST], capture_output=True)
    else:
        print("screenshots: rabbitmqctl cannot add a vhost; using the default one")
        yield "amqp://guest:guest@127.0.0.1:5672/%2F"


class Stack:
    """An API and a worker on a fresh database."""

    def __init__(self, folder: Path, broker_url: str) -> None:
        self.env = {
            **os.environ,
            "JOBSTACK_DATABASE_URL": f"sqlite:///{folder / 'jobs.db'}",
            "JOBSTACK_BROKER_URL": broker_url,
            "JOBSTACK_LOG_FORMAT": "text",
            "JOBSTACK_HEARTBEAT_INTERVAL": "1",
        }
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.run("db", "upgrade")
        self.admin = self.run("tokens", "create", "--tenant", "ops", "--scopes", "admin")
        self.writer = self.run(
            "tokens", "create", "--tenant", "acme", "--scopes", "jobs:read,jobs:write"
        )
        log = (folder / "stack.log").open("ab")
        self.processes = [
            subprocess.Popen(
                [str(BIN / "jobstack"), "api", "--bind", f"127.0.0.1:{self.port}",
                 "--workers", "1"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
            ),
            subprocess.Popen(
                [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "4"],
                cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,
            ),
        ]  # fmt: skip
        wait_for(self._healthy, 30, "the API")

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [str(BIN / "jobstack"), *args], cwd=ROOT, env=self.env, capture_output=True, text=True
        )
        if done.returncode:
            raise SystemExit(f"screenshots: jobstack {' '.join(args)} failed:\n{done.stderr}")
        return done.stdout.strip()

    def _healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.base + "/healthz", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def submit(self, actor: str, **kwargs: Any) -> str:
        request = urllib.request.Request(
            self.base + "/v1/jobs",
            data=json.dumps({"actor": actor, "kwargs": kwargs}).encode(),
            headers={"Content-Type": "application/json", "Authorization": f"Bearer {self.writer}"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=10) as answer:
            return str(json.load(answer)["id"])

    def stop(self) -> None:
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def fill(stack: Stack) -> dict[str, str]:
    """Jobs of every kind; returns a few by role."""
    for _ in range(40):
        stack.submit("diagnostics.noop")
    stack.submit("diagnostics.echo", value={"rows": 1200, "file": "names-2024.csv"})
    jobs = {
        "running": stack.submit("diagnostics.sleep", seconds=120),
        "retried": stack.submit("diagnostics.fail", times=2),
        "failed": stack.submit("diagnostics.fail", times=99),
        "rejected": stack.submit(
            "diagnostics.fail", times=1, permanent=True, message="input row 17: <b>not a date</b>"
        ),
    }
    for _ in range(3):
        stack.submit("diagnostics.fail", times=1, permanent=True, message="upstream said 503")
    time.sleep(10)  # Retries with their backoff, and a few heartbeats.
    return jobs


def shoot(stack: Stack, jobs: dict[str, str], out: Path) -> list[Path]:
    taken: list[Path] = []
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        page: Page = browser.new_context(viewport={"width": 1280, "height": 860}).new_page()

        def save(name: str, *, full: bool = False) -> None:
            page.wait_for_timeout(2500)  # One live update at least.
            path = out / f"dashboard-{name}.png"
            page.screenshot(path=str(path), full_page=full)
            taken.append(path)

        page.goto(stack.base + "/")
        page.get_by_label("API token").fill(stack.admin)
        save("sign-in")
        page.get_by_role("button", name="Sign in").click()
        page.wait_for_url(stack.base + "/")
        save("overview", full=True)
        for name, path in [
            ("jobs", "/jobs"),
            ("job-running", f"/jobs/{jobs['running']}"),
            ("job-failed", f"/jobs/{jobs['failed']}"),
            ("failures", "/failures"),
            ("dead-letters", "/dead-letters"),
            ("queues", "/queues"),
            ("schedules", "/schedules"),
            ("workers", "/workers"),
        ]:
            page.goto(stack.base + path)
            save(name, full=name.startswith("job-"))
        page.goto(stack.base + "/dead-letters/redrive")
        save("redrive-count")
        page.get_by_role("button", name="Re-drive").click()
        page.goto(stack.base + "/audit")
        save("audit")
        browser.close()
    return taken


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "images")
    options = parser.parse_args()
    if not Path(CHROMIUM).is_file():
        raise SystemExit(
            f"screenshots: needs Debian's Chromium at {CHROMIUM} (apt-get install chromium)"
        )
    options.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as folder, own_vhost() as broker_url:
        stack = Stack(Path(folder), broker_url)
        try:
            taken = shoot(stack, fill(stack), options.out)
        finally:
            stack.stop()
    for path in taken:
        print(f"screenshots: wrote {path.relative_to(ROOT) if path.is_relative_to(ROOT) else path}")


if __name__ == "__main__":
    main()
