"""Make sure the RabbitMQ vhost of JOBSTACK_BROKER_URL exists (the quorum test run's).

A queue's type cannot change, and the classic test runs keep classic queues named
``default`` and so on in ``/``: the quorum run needs a vhost of its own. AMQP cannot create
one, so this asks ``rabbitmqctl`` on this machine, or else RabbitMQ's management API.

    python -m tests.support.vhost        # before the quorum test run (tox.ini does it)
"""

from __future__ import annotations

import base64
import contextlib
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from urllib.parse import quote, unquote, urlsplit

import pika
import pika.exceptions

from app.config import load_settings

MANAGEMENT_PORT = 15672


def _with_rabbitmqctl(vhost: str, user: str) -> bool:
    rabbitmqctl = shutil.which("rabbitmqctl") or shutil.which("rabbitmqctl", path="/usr/sbin")
    if rabbitmqctl is None:
        return False
    added = subprocess.run(
        [rabbitmqctl, "add_vhost", vhost], capture_output=True, text=True, timeout=60
    )
    if added.returncode != 0 and "already exists" not in added.stderr + added.stdout:
        return False
    granted = subprocess.run(
        [rabbitmqctl, "set_permissions", "-p", vhost, user, ".*", ".*", ".*"],
        capture_output=True,
        timeout=60,
    )
    return granted.returncode == 0


def _with_management_api(host: str, vhost: str, user: str, password: str) -> bool:
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    base = f"http://{host}:{MANAGEMENT_PORT}/api"
    requests = [
        (f"{base}/vhosts/{quote(vhost, safe='')}", b""),
        (
            f"{base}/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
            b'{"configure": ".*", "write": ".*", "read": ".*"}',
        ),
    ]
    for url, body in requests:
        request = urllib.request.Request(url, data=body, method="PUT")
        request.add_header("Authorization", f"Basic {auth}")
        request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=10):
                pass
        except (urllib.error.URLError, OSError):
            return False
    return True


def _opens(url: str) -> bool:
    with contextlib.suppress(pika.exceptions.AMQPError, OSError):
        pika.BlockingConnection(pika.URLParameters(url)).close()
        return True
    return False


def ensure_vhost(url: str) -> str:
    """Create ``url``'s vhost (with the URL's user allowed everything there) unless it
    exists; its name. Raises SystemExit saying what to do when neither way works."""
    url = url.split(";")[0]
    parts = urlsplit(url)
    vhost = unquote(parts.path.lstrip("/")) or "/"
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    if vhost == "/" or _opens(url):
        return vhost
    if _with_rabbitmqctl(vhost, user) or _with_management_api(
        parts.hostname or "127.0.0.1", vhost, user, password
    ):
        return vhost
    raise SystemExit(
        f"Could not create the RabbitMQ vhost {vhost!r}: run, as root on the RabbitMQ host,\n"
        f"  rabbitmqctl add_vhost {vhost} && "
        f'rabbitmqctl set_permissions -p {vhost} {user} ".*" ".*" ".*"'
    )


if __name__ == "__main__":
    print(f"RabbitMQ vhost ready: {ensure_vhost(load_settings().broker_url)}", file=sys.stderr)
