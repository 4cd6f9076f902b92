"""How a worker process names itself in job rows and leases."""

from __future__ import annotations

import os
import socket


def worker_id() -> str:
    """``hostname:pid`` of this process (read at call time, so correct after fork)."""
    return f"{socket.gethostname()}:{os.getpid()}"
