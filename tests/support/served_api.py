"""``jobstack api`` as a subprocess on a free port, and a tiny JSON client of it."""

from __future__ import annotations

import json
import os
import subprocess
import urllib.error
import urllib.request
from email.message import Message
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.waiting import wait_until

REPO = Path(__file__).resolve().parents[2]


class ServedApi:
    """The API served by ``jobstack api --workers N``, logging to ``log``."""

    def __init__(self, bin_dir: Path, log: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = log
        with log.open("ab") as out:
            command = [str(bin_dir / "jobstack"), "api", "--bind", f"127.0.0.1:{self.port}"]
            self.process = subprocess.Popen(
                [*command, "--workers", "1"],
                cwd=REPO,
                env={**os.environ, "JOBSTACK_LOG_FORMAT": "json", **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        wait_until(self._healthy, 30, "the API to answer /healthz")

    def _healthy(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the API exited:\n{self.log.read_text()}")
        try:
            return self.call("GET", "/healthz")[0] == 200
        except OSError:
            return False

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        headers: dict[str, str] | None = None,
        timeout: float = 10,
    ) -> tuple[int, Message, Any]:
        """Status, headers (names case-insensitive) and JSON body of one request."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                return (
                    response.status,
                    response.headers,
                    json.loads(response.read() or b"null"),
                )
        except urllib.error.HTTPError as error:
            return error.code, error.headers, json.loads(error.read() or b"null")
