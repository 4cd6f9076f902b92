"""SIGTERM stops a worker gracefully: the running job finishes, nothing is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from actors import diagnostics
from app.jobs import get_job, submit
from app.states import JobState
from tests.acceptance.conftest import BIN, REPO
from tests.support.rabbit import purge, real_broker
from tests.support.waiting import wait_for_state, wait_until


def _start(command: list[str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as out:
        process = subprocess.Popen(
            command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    wait_until(lambda: "is ready for action" in log.read_text(), 30, "the worker to boot")
    return process


WORKER = [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "2"]


@pytest.mark.parametrize(
    ("how", "command"),
    [
        # Kubernetes signals the container's main process only.
        ("main process", WORKER),
        # honcho (jobstack up) signals the whole process group, through single_signal.
        ("process group", [sys.executable, "-m", "app.cli.single_signal", "--", *WORKER]),
    ],
)
def test_sigterm_lets_the_running_job_finish(
    clean_db: str, tmp_path: Path, how: str, command: list[str]
) -> None:
    purge(real_broker())
    process = _start(command, tmp_path / "worker.log")
    job = submit(diagnostics.sleep, kwargs={"seconds": 3})
    wait_for_state(job.id, {JobState.RUNNING}, timeout=20)

    if how == "main process":
        process.send_signal(signal.SIGTERM)
    else:
        os.killpg(process.pid, signal.SIGTERM)
    assert process.wait(30) == 0

    done = get_job(job.id)
    assert (done.state, done.attempts, done.result) == ("succeeded", 1, 3)
    assert real_broker().get_queue_message_counts("default") == (0, 0, 0)
