"""``app.cli.respawn``, the restart loop around each process of ``jobstack up``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.cli.respawn import FIRST_DELAY, MAX_DELAY, STABLE_AFTER, next_delay, respawned
from tests.support.waiting import wait_until


def test_restarts_wait_one_second_doubling_to_thirty_and_start_over_after_a_stable_minute() -> None:
    delays: list[float] = []
    delay = None
    for _ in range(8):
        delay = next_delay(delay, ran_for=0.5)
        delays.append(delay)
    assert delays == [1, 2, 4, 8, 16, 30, 30, 30]
    assert (FIRST_DELAY, MAX_DELAY) == (1, 30)
    assert next_delay(MAX_DELAY, ran_for=STABLE_AFTER) == FIRST_DELAY


@pytest.fixture
def run_respawned() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        # The command runs in a session of its own (single_signal's): kill it by pid.
        for pid in [process.pid, *_descendants(process.pid)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        process.wait(5)


def _script(tmp_path: Path, body: str) -> list[str]:
    """A Python child that appends to ``runs`` when it starts, then runs ``body``."""
    runs = tmp_path / "runs"
    prelude = f"import signal, sys, time\nopen({str(runs)!r}, 'a').write('run\\n')\n"
    return [sys.executable, "-c", prelude + body]


def test_a_command_that_exits_is_started_again_until_sigterm(
    tmp_path: Path, run_respawned: list[subprocess.Popen[bytes]]
) -> None:
    log = tmp_path / "respawn.log"
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            respawned(_script(tmp_path, "sys.exit(3)")), stderr=stderr, start_new_session=True
        )
    run_respawned.append(process)
    wait_until(lambda: "starting it again in 2 s" in log.read_text(), 10, "a second restart")

    process.send_signal(signal.SIGTERM)  # While it waits 2 s before the third run.
    assert process.wait(1) == 3
    assert (tmp_path / "runs").read_text() == "run\n" * 2
    assert "respawn: the command exited with code 3 after" in log.read_text()


def test_a_signal_to_the_process_group_reaches_the_command_once_and_does_not_restart_it(
    tmp_path: Path, run_respawned: list[subprocess.Popen[bytes]]
) -> None:
    terms = tmp_path / "terms"
    body = (
        f"signal.signal(signal.SIGTERM, lambda *_: open({str(terms)!r}, 'a').write('term\\n'))\n"
        f"while not open({str(terms)!r}, 'a+').tell(): time.sleep(0.01)\n"
        "time.sleep(0.5)\n"  # Time for a second signal to arrive, if one were sent.
    )
    process = subprocess.Popen(respawned(_script(tmp_path, body)), start_new_session=True)
    run_respawned.append(process)
    runs = tmp_path / "runs"
    wait_until(runs.exists, 10, "the command to start")
    wait_until(lambda: _has_sigterm_handler(process.pid), 10, "the handler")

    # What honcho does: SIGTERM to respawn and single_signal, both in this group.
    os.killpg(process.pid, signal.SIGTERM)

    assert process.wait(10) == 0
    assert terms.read_text() == "term\n"
    assert runs.read_text() == "run\n"


def _has_sigterm_handler(respawn: int) -> bool:
    """Whether the command under ``respawn`` (its grandchild) handles SIGTERM yet."""
    for child in _children(respawn):
        for command in _children(child):
            status = Path(f"/proc/{command}/status").read_text()
            caught = int(status.split("SigCgt:")[1].split()[0], 16)
            return bool(caught & (1 << (signal.SIGTERM - 1)))
    return False


def _descendants(pid: int) -> list[int]:
    return [d for child in _children(pid) for d in (child, *_descendants(child))]


def _children(pid: int) -> list[int]:
    try:
        tasks = Path(f"/proc/{pid}/task").iterdir()
        return [int(c) for t in tasks for c in (t / "children").read_text().split()]
    except OSError:
        return []
