"""What RabbitMQ tells the API's ``/metrics``: the messages of each queue, by kind.

Every message of a queue Q and of its delay and dead-letter queues is counted once:

- ``ready``: in Q, waiting for a worker;
- ``delayed``: in Q.DQ (retries and delayed sends), not yet taken by a worker;
- ``unacked``: delivered from Q or Q.DQ and not yet acknowledged: running, prefetched,
  or a delayed message a worker holds until its due time;
- ``dead``: in Q.XQ.

``ready``, ``delayed`` and ``dead`` come over AMQP, with passive declares (as
``GET /v1/queues`` reads them). AMQP does not tell unacknowledged messages; RabbitMQ's
management HTTP API does (the rabbitmq_management plugin, port 15672, or 15671 for
amqps://, with the broker URL's user and vhost). It is asked when it answers; when it does
not, the ``unacked`` series are left out rather than reported as 0. RabbitMQ refreshes
those numbers every 5 seconds (its ``collect_statistics_interval``).
"""

from __future__ import annotations

import base64
import json
import logging
import urllib.request
from urllib.parse import quote, unquote, urlsplit

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.common import dq_name, q_name

from app.operations.queues import queue_stats

logger = logging.getLogger(__name__)

#: Ports of RabbitMQ's management HTTP API: plain, and with TLS (for amqps:// brokers).
MANAGEMENT_PORT = 15672
MANAGEMENT_TLS_PORT = 15671
#: Seconds the API waits for the management API before leaving ``unacked`` out.
MANAGEMENT_TIMEOUT = 2.0


def queue_messages(broker: dramatiq.Broker, broker_url: str) -> dict[tuple[str, str], int]:
    """(queue, kind): how many messages, for every queue declared on ``broker``."""
    counts: dict[tuple[str, str], int] = {}
    for stats in queue_stats(broker):
        if q_name(stats.name) != stats.name:
            continue  # The stub broker lists its delay queues among its queues.
        counts[(stats.name, "ready")] = stats.ready
        counts[(stats.name, "delayed")] = stats.delayed
        counts[(stats.name, "dead")] = stats.dead_letter
    if not isinstance(broker, RabbitmqBroker):
        return counts
    unacked = unacked_messages(*management_api(broker_url))
    if unacked is None:
        return counts
    for queue in {queue for queue, _kind in counts}:
        if queue in unacked:
            # Workers hold Q.DQ's messages unacked until they are due: still delayed.
            counts[(queue, "unacked")] = unacked[queue]
            counts[(queue, "delayed")] += unacked.get(dq_name(queue), 0)
    return counts


def management_api(broker_url: str) -> tuple[str, str]:
    """The management API's list of the queues of the broker at ``broker_url`` (its host
    and vhost), and the ``Authorization`` header of the URL's user."""
    parts = urlsplit(broker_url)
    tls = parts.scheme == "amqps"
    vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
    url = (
        f"{'https' if tls else 'http'}://{parts.hostname or '127.0.0.1'}:"
        f"{MANAGEMENT_TLS_PORT if tls else MANAGEMENT_PORT}/api/queues/{quote(vhost, safe='')}"
        "?columns=name,messages_unacknowledged"
    )
    user, password = unquote(parts.username or "guest"), unquote(parts.password or "guest")
    credentials = base64.b64encode(f"{user}:{password}".encode()).decode()
    return url, f"Basic {credentials}"


def unacked_messages(url: str, authorization: str) -> dict[str, int] | None:
    """Queue name: its unacknowledged messages, from the management API's list of queues
    at ``url``; None when it does not answer."""
    request = urllib.request.Request(url, headers={"Authorization": authorization})
    try:
        with urllib.request.urlopen(request, timeout=MANAGEMENT_TIMEOUT) as response:
            queues = json.load(response)
    except (OSError, ValueError) as error:
        logger.debug("RabbitMQ's management API did not answer (%s); no unacked counts.", error)
        return None
    return {
        queue["name"]: int(queue["messages_unacknowledged"])
        for queue in queues
        # A queue RabbitMQ has no statistics for yet comes without the field.
        if "messages_unacknowledged" in queue
    }
