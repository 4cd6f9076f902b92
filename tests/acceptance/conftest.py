"""The real command-line programs, started as subprocesses against the test database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.rabbit import purge, real_broker
from tests.support.waiting import wait_until

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


class WorkerProcess:
    """``dramatiq actors`` running in its own process group, logging to a file."""

    def __init__(
        self, log: Path, env: dict[str, str] | None = None, modules: tuple[str, ...] = ()
    ) -> None:
        self.log = log
        self.start_offset = log.stat().st_size if log.exists() else 0
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [str(BIN / "dramatiq"), "actors", *modules, "-p", "1", "-t", "2"],
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        wait_until(self._ready, 30, "the dramatiq worker to boot")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"dramatiq exited early:\n{self.log.read_text()}")
        return "is ready for action" in self.log.read_text()[self.start_offset :]

    def kill(self) -> None:
        """SIGKILL the whole process group: no shutdown, no acks."""
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def start_worker(clean_db: str, tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    purge(real_broker())
    started: list[WorkerProcess] = []

    def start(env: dict[str, str] | None = None, modules: tuple[str, ...] = ()) -> WorkerProcess:
        worker = WorkerProcess(tmp_path / f"worker-{len(started)}.log", env, modules)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.stop()


def jobstack(
    *args: str, timeout: float = 60, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the ``jobstack`` console script (with extra environment variables ``env``)."""
    return subprocess.run(
        [str(BIN / "jobstack"), *args],
        cwd=REPO,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
