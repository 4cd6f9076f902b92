"""Runs the outbox relay thread inside each worker process."""

from __future__ import annotations

from dramatiq import Broker, Worker
from dramatiq.middleware import Middleware

from app.config import Settings
from app.outbox.relay import Relay


class OutboxRelay(Middleware):
    """Starts a :class:`Relay` when a worker boots and stops it before shutdown."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._relay: Relay | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        if self._settings.relay_enabled:
            self._relay = Relay(broker, self._settings)
            self._relay.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        if self._relay is not None:
            self._relay.stop()
            self._relay = None
