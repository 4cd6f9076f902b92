"""Closing a connection RabbitMQ may already have dropped, without error logs."""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Iterator


class _ThisThreadClosing(logging.Filter):
    """Drops the records of the thread inside :func:`closing_quietly`; other threads log."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        return not getattr(self.local, "closing", False)


_filter = _ThisThreadClosing()


@contextlib.contextmanager
def closing_quietly(*loggers: logging.Logger) -> Iterator[None]:
    """Silence pika's loggers, and ``loggers``, for this thread while it closes a connection.

    An API thread that sat idle past two heartbeats holds a connection RabbitMQ has
    closed; closing it makes pika log "connection reset" errors, which error reporting
    (Sentry) would raise as incidents for an ordinary quiet spell.
    """
    for logger in (*_pika_loggers(), *loggers):
        if _filter not in logger.filters:
            logger.addFilter(_filter)
    outer = getattr(_filter.local, "closing", False)
    _filter.local.closing = True
    try:
        yield
    finally:
        _filter.local.closing = outer


def _pika_loggers() -> list[logging.Logger]:
    # A filter applies only to the logger that makes the record, not to its children.
    return [
        logger
        for name, logger in list(logging.root.manager.loggerDict.items())
        if (name == "pika" or name.startswith("pika.")) and isinstance(logger, logging.Logger)
    ]
