"""Worker processes log JSON lines tagged with the running job's ids."""

from __future__ import annotations

import logging

from dramatiq import Broker
from dramatiq.middleware import Middleware

from app.logs import use_json_logs


class JobLogging(Middleware):
    """After a worker process boots, switches its log handlers to JSON with job context."""

    def __init__(self, *, json_lines: bool) -> None:
        self.json_lines = json_lines

    def after_process_boot(self, broker: Broker) -> None:
        if self.json_lines:
            use_json_logs()
            logging.getLogger("pika").setLevel(logging.WARNING)
