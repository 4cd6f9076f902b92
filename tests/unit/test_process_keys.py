"""A process key tells a process that ended from one still running, on this machine only."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

from app import workers
from app.workers import process_gone, process_key


@pytest.fixture
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    process = subprocess.Popen(["sleep", "60"])
    yield process
    process.kill()
    process.wait()


def test_a_running_process_is_not_gone(sleeper: subprocess.Popen[bytes]) -> None:
    key = process_key(sleeper.pid)
    assert key is not None and f"|{sleeper.pid}|" in key
    assert not process_gone(key)
    assert not process_gone(process_key() or "")


def test_a_killed_process_is_gone_before_and_after_it_is_reaped(
    sleeper: subprocess.Popen[bytes],
) -> None:
    key = process_key(sleeper.pid)
    assert key is not None
    sleeper.kill()
    os.waitid(os.P_PID, sleeper.pid, os.WEXITED | os.WNOWAIT)  # Dead, not yet reaped.
    assert process_gone(key)  # A zombie runs nothing.
    sleeper.wait()
    assert process_gone(key)


def test_a_pid_taken_by_another_process_is_gone() -> None:
    key = process_key()
    assert key is not None
    *scope, pid, started = key.split("|")
    # This pid, started at another time: the process the key named has ended.
    assert process_gone("|".join([*scope, pid, str(int(started) + 1)]))


def test_a_process_whose_proc_entry_cannot_be_read_is_gone_only_if_the_kernel_says_so(
    sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc mounted with hidepid, or another user's worker: signal 0 decides."""
    alive = process_key(sleeper.pid)
    dead_process = subprocess.Popen(["true"])
    dead = process_key(dead_process.pid)
    dead_process.wait()
    assert alive is not None and dead is not None
    monkeypatch.setattr(workers, "_stat", lambda pid: None)

    assert not process_gone(alive)
    assert process_gone(dead)


@pytest.mark.parametrize(
    "key",
    [
        "another-boot|pid:[4026531836]||1|1",  # Another machine, or this one before a reboot.
        "another-boot|pid:[4026531836]|1|1",  # Not five fields.
        "",
        "not a key",
        "a|b|c|not-a-pid|1",
    ],
)
def test_a_process_elsewhere_or_a_bad_key_is_never_called_gone(key: str) -> None:
    assert not process_gone(key)
