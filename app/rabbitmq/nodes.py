"""The broker's nodes: JOBSTACK_BROKER_URL names one RabbitMQ node or, ``;``-separated as
pika accepts, several nodes of a cluster."""

from __future__ import annotations

from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from app.config import Settings
from app.errors import ConfigurationError


def amqp_urls(settings: Settings) -> list[str]:
    """The broker's node URLs (JOBSTACK_BROKER_URL, ``;``-separated as pika accepts), each
    with jobstack's heartbeat and blocked-connection timeout.

    Every URL needs both: pika reads them from the node it connects to, so a setting on
    one URL alone leaves a publisher blocked on another node waiting forever. Values
    already in a URL's query string win.
    """
    urls = []
    for url in settings.broker_url.split(";"):
        if not url.strip():
            continue
        parts = urlsplit(url.strip())
        query = dict(parse_qsl(parts.query))
        query.setdefault("heartbeat", str(settings.broker_heartbeat))
        query.setdefault("blocked_connection_timeout", str(settings.broker_blocked_timeout))
        urls.append(urlunsplit(parts._replace(query=urlencode(query))))
    if not urls:
        raise ConfigurationError("JOBSTACK_BROKER_URL names no broker")
    return urls


def amqp_url(settings: Settings) -> str:
    """:func:`amqp_urls` joined as one ``;``-separated URL."""
    return ";".join(amqp_urls(settings))
