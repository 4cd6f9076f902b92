"""A worker host's metrics: the shared folder, emptied once per dramatiq command, and the
server that adds up its processes behind the optional token."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from wsgiref.simple_server import WSGIServer, make_server

import pytest

from app.config import Settings
from app.observability import metrics_dir
from app.observability.metrics_auth import allowed
from app.observability.metrics_server import metrics_app
from tests.support.ports import free_port
from tests.support.served_api import REPO

#: A worker process in miniature: its metrics folder set, one attempt counted.
COUNT_ONE_ATTEMPT = """
import sys
from app.observability import metrics_dir
metrics_dir.share(sys.argv[1])
from app.observability.worker_metrics import WorkerMetrics
metrics = WorkerMetrics()
metrics.attempts.labels("default", "m.echo", "succeeded").inc()
metrics.in_progress.labels("default", "m.echo").inc()
if sys.argv[2:] == ["leave"]:
    metrics_dir.leave(sys.argv[1])
"""


def test_the_first_worker_process_of_a_command_empties_the_folder(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    assert metrics_dir.claim(str(folder), "100:7")
    (folder / "counter_1.db").write_bytes(b"x")
    # The command's other worker processes find the folder theirs already.
    assert not metrics_dir.claim(str(folder), "100:7")
    assert (folder / "counter_1.db").exists()
    # The next command (same pid, started again later) empties it.
    assert metrics_dir.claim(str(folder), "100:9")
    assert not (folder / "counter_1.db").exists()


def test_a_second_command_joins_the_folder_of_a_running_one(tmp_path: Path) -> None:
    folder = tmp_path / "metrics"
    running = metrics_dir.this_command()  # This test's parent: it runs.
    assert metrics_dir.claim(str(folder), running)
    (folder / "counter_1.db").write_bytes(b"x")
    # Another dramatiq command on the host while the first still runs: it joins.
    assert not metrics_dir.claim(str(folder), "4194000:1")
    assert (folder / "counter_1.db").exists()
    # Once both are gone (4194000 is no process here), the next command empties it.
    assert not metrics_dir.claim(str(folder), running)
    (folder / ".owner").write_text("4194000:1\n4194001:5")
    assert metrics_dir.claim(str(folder), "4194002:9")
    assert not (folder / "counter_1.db").exists()


def test_a_worker_process_belongs_to_its_parents_command() -> None:
    child = subprocess.run(
        [
            sys.executable,
            "-c",
            "from app.observability import metrics_dir; print(metrics_dir.this_command())",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    pid, _, started = child.stdout.strip().partition(":")
    assert int(pid) == os.getpid() and started.isdigit()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    folder = tmp_path / "metrics"
    settings = Settings(metrics_dir=str(folder), metrics_token="s3cret")
    server: WSGIServer = make_server("127.0.0.1", free_port(), metrics_app(settings))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}", folder
    server.shutdown()
    server.server_close()
    thread.join()


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        with error:
            return error.code, error.read().decode()


def test_the_server_adds_up_the_worker_processes(served: tuple[str, Path]) -> None:
    base, folder = served
    for last_words in ([], ["leave"]):
        subprocess.run(
            [sys.executable, "-c", COUNT_ONE_ATTEMPT, str(folder), *last_words],
            cwd=REPO,
            check=True,
        )

    status, text = _get(f"{base}/metrics", "s3cret")
    assert status == 200
    assert (
        'jobstack_job_attempts_total{actor="m.echo",outcome="succeeded",queue="default"} 2.0'
        in text
    )
    # The process that left (a worker shut down) runs nothing any more.
    assert 'jobstack_jobs_in_progress{actor="m.echo",queue="default"} 1.0' in text


def test_the_server_wants_the_token_when_one_is_set(served: tuple[str, Path]) -> None:
    base, _folder = served
    assert _get(f"{base}/metrics")[0] == 401
    assert _get(f"{base}/metrics", "wrong")[0] == 401
    assert _get(f"{base}/metrics", "s3cret")[0] == 200
    assert _get(f"{base}/elsewhere", "s3cret")[0] == 404


def test_the_metrics_token_is_optional() -> None:
    assert allowed(None, "")
    assert allowed("Bearer anything", "")
    assert not allowed(None, "t")
    assert not allowed("Basic t", "t")
    assert allowed("bearer t", "t")
