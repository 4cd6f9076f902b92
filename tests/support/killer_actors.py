"""An actor whose every run kills the worker process running it (poison), for the CLI tests."""

from __future__ import annotations

import os
import signal

import dramatiq

import actors  # noqa: F401  (jobstack's broker and actors first)


@dramatiq.actor(actor_name="tests.killer")
def killer() -> None:
    os.kill(os.getpid(), signal.SIGKILL)
