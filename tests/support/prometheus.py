"""A real Prometheus server, scraping the targets it is given every second, and a client
of its HTTP query API."""

from __future__ import annotations

import json
import shutil
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tests.support.ports import free_port
from tests.support.services import require
from tests.support.waiting import wait_until

#: Where Debian's package puts it; PATH wins.
DEFAULT_BINARY = "/usr/bin/prometheus"
#: Ports tried before giving up on a Prometheus that cannot bind its address.
BIND_ATTEMPTS = 3


class RunningPrometheus:
    """``prometheus`` with its configuration and data in ``folder``, scraping ``targets``
    (job name: ``host:port``) with the bearer ``token`` when one is given."""

    def __init__(self, folder: Path, targets: dict[str, str], token: str | None = None) -> None:
        binary = shutil.which("prometheus") or DEFAULT_BINARY
        require(Path(binary).is_file(), f"Prometheus ({binary})")
        folder.mkdir(parents=True, exist_ok=True)
        authorization = {"authorization": {"type": "Bearer", "credentials": token}} if token else {}
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": [target]}], **authorization}
                for job, target in targets.items()
            ],
        }
        # JSON is YAML: no YAML library needed.
        (folder / "prometheus.yml").write_text(json.dumps(config))
        self.log = folder / "prometheus.log"
        # A free port can be taken by another process's connection before Prometheus
        # binds it (seen in CI): start again on another one.
        for attempt in range(1, BIND_ATTEMPTS + 1):
            self.port = free_port()
            self._start(binary, folder)
            try:
                wait_until(self._ready, 30, "Prometheus to be ready")
                return
            except BaseException:
                self.stop()
                if attempt == BIND_ATTEMPTS or "address already in use" not in self._log_text():
                    raise

    def _start(self, binary: str, folder: Path) -> None:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    binary,
                    f"--config.file={folder / 'prometheus.yml'}",
                    f"--storage.tsdb.path={folder / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
            )

    def _log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"Prometheus exited:\n{self.log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def query(self, expression: str) -> dict[tuple[tuple[str, str], ...], float]:
        """The instant vector of ``expression``: each series' labels (sorted pairs, without
        ``__name__``) and its value."""
        url = f"http://127.0.0.1:{self.port}/api/v1/query?" + urllib.parse.urlencode(
            {"query": expression}
        )
        with urllib.request.urlopen(url, timeout=5) as response:
            answer: dict[str, Any] = json.load(response)
        assert answer["status"] == "success", answer
        return {
            tuple(sorted((k, v) for k, v in series["metric"].items() if k != "__name__")): float(
                series["value"][1]
            )
            for series in answer["data"]["result"]
        }

    def by(self, label: str, expression: str) -> dict[str, float]:
        """``expression``'s values keyed by one label's value."""
        return {dict(labels)[label]: value for labels, value in self.query(expression).items()}

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
