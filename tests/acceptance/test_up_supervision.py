"""``jobstack up`` outlives its processes: a worker process killed by the OOM killer takes
neither the API nor the scheduler down, and the worker comes back."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from actors import diagnostics
from app.jobs import submit
from tests.acceptance.conftest import BIN, REPO
from tests.support.ports import free_port
from tests.support.rabbit import purge, real_broker
from tests.support.waiting import wait_for_state, wait_until

READY = "Worker process is ready for action."


def _stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time) of a live process, from /proc (psutil is not installed)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name in parentheses may hold spaces; the fields after it do not.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] == "Z":
        return None
    return int(fields[1]), int(fields[19])


def _parent(pid: int) -> int:
    stat = _stat(pid)
    return stat[0] if stat else -1


def _cmdline(pid: int) -> list[str]:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]
    except OSError:
        return []


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _descendants(root: int) -> set[int]:
    parents = {pid: stat[0] for pid in _pids() if (stat := _stat(pid))}
    found: set[int] = set()
    frontier = {root}
    while frontier:
        frontier = {pid for pid, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def _is_dramatiq(pid: int) -> bool:
    return _cmdline(pid)[1:3] == ["-m", "dramatiq"]


class Up:
    """``jobstack up`` in a session of its own, logging to a file; remembers every process
    it has seen under it so that none outlives the test."""

    def __init__(self, log: Path) -> None:
        self.log = log
        bind = f"127.0.0.1:{free_port()}"
        self.base = f"http://{bind}"
        #: Every process seen under ``jobstack up``: pid → start time (pids are reused).
        self.seen: dict[int, int] = {}
        command = [str(BIN / "jobstack"), "up", "--bind", bind, "--processes", "2"]
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [*command, "--threads", "2"],
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def tree(self) -> set[int]:
        pids = _descendants(self.process.pid)
        for pid in {self.process.pid, *pids}:
            if stat := _stat(pid):
                self.seen.setdefault(pid, stat[1])
        return pids

    def dramatiq_main(self) -> int | None:
        """The pid of Dramatiq's main process, if exactly one runs."""
        pids = self.tree()
        mains = [p for p in pids if _is_dramatiq(p) and not _is_dramatiq(_parent(p))]
        return mains[0] if len(mains) == 1 else None

    def worker_processes(self, main: int) -> list[int]:
        """Dramatiq's worker processes: forks of its main process, with its command line."""
        return [p for p in self.tree() if _parent(p) == main and _cmdline(p) == _cmdline(main)]

    def ready_count(self) -> int:
        return self.log.read_text().count(READY)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.base}/healthz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def leftovers(self) -> list[int]:
        """The processes seen under ``jobstack up`` that still run, orphans included."""
        return [pid for pid, started in self.seen.items() if (s := _stat(pid)) and s[1] == started]

    def kill_everything(self) -> None:
        """Freeze every process first, so that none starts another, then SIGKILL them all."""
        for signum in (signal.SIGSTOP, signal.SIGSTOP, signal.SIGKILL):
            self.tree()
            for pid in self.leftovers():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
        self.process.wait(10)


class HealthWatch:
    """Asks the API for /healthz every 50 ms in a thread and counts the refusals."""

    def __init__(self, up: Up) -> None:
        self.up, self.asked, self.failed = up, 0, 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.stopping.wait(0.05):
            self.asked += 1
            self.failed += not self.up.healthy()

    def stop(self) -> None:
        self.stopping.set()
        self.thread.join(5)


@pytest.fixture
def up(clean_db: str, tmp_path: Path) -> Iterator[Up]:
    purge(real_broker())
    started = Up(tmp_path / "up.log")
    try:
        yield started
    finally:
        started.kill_everything()
        lines = started.log.read_text().splitlines()
        print("\n".join(line for line in lines if "GET /healthz" not in line))


def test_a_killed_worker_process_is_replaced_while_the_api_keeps_answering(up: Up) -> None:
    wait_until(up.healthy, 60, "the API to answer /healthz")
    wait_until(lambda: up.ready_count() >= 2, 60, "both worker processes to be ready")
    old_main = wait_until(up.dramatiq_main, 10, "Dramatiq's main process")
    victim = up.worker_processes(old_main)[0]
    watch = HealthWatch(up)

    os.kill(victim, signal.SIGKILL)  # What the OOM killer does.
    killed_at = time.monotonic()

    def new_workers_ready() -> bool:
        if up.process.poll() is not None:
            raise AssertionError(f"jobstack up exited ({up.process.returncode}) after the kill")
        main = up.dramatiq_main()
        return main not in (None, old_main) and up.ready_count() >= 4

    wait_until(new_workers_ready, 30, "a new Dramatiq main process with ready workers")
    restarted_in = time.monotonic() - killed_at
    job = submit(diagnostics.echo, kwargs={"value": "after the kill"})
    done = wait_for_state(job.id, timeout=30)
    watch.stop()

    assert (done.state, done.result) == ("succeeded", "after the kill")
    assert up.process.poll() is None, "jobstack up exited"
    assert watch.asked > 20 and watch.failed == 0, f"{watch.failed}/{watch.asked} refused"
    assert up.healthy()
    assert restarted_in < 20, f"the worker took {restarted_in:.1f}s to come back"
    print(f"worker back and ready {restarted_in:.1f}s after the kill")

    # Ctrl-C's SIGTERM still stops every process, none of them started again.
    up.tree()
    up.process.send_signal(signal.SIGTERM)
    up.process.wait(30)
    wait_until(lambda: not up.leftovers(), 30, "every process of jobstack up to exit")
