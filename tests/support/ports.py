"""Free TCP ports for the servers the tests start."""

from __future__ import annotations

import random
import socket
import threading
from collections.abc import Container
from pathlib import Path

_handed_out: set[int] = set()
_lock = threading.Lock()


def free_ports(count: int, avoid: Container[int] = ()) -> list[int]:
    """``count`` TCP ports free now, below the kernel's ephemeral range, none handed out
    before in this process.

    A port the kernel picks (bind to port 0) comes from the ephemeral range, which every
    outgoing connection draws from too: on a machine busy with connections to RabbitMQ
    and PostgreSQL, one of them could take the port before the server binds it.
    """
    low = _ephemeral_range_start()
    candidates = [port for port in range(20000, low) if port not in avoid]
    random.shuffle(candidates)
    chosen: list[int] = []
    with _lock:
        for port in candidates:
            if port not in _handed_out and _is_free(port):
                _handed_out.add(port)
                chosen.append(port)
                if len(chosen) == count:
                    return chosen
    raise RuntimeError(f"no {count} free TCP ports between 20000 and {low}")


def free_port() -> int:
    """One port, as :func:`free_ports` chooses them."""
    return free_ports(1)[0]


def _ephemeral_range_start() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def _is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True
