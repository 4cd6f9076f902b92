"""Each worker process reports itself to the worker registry every few seconds."""

from __future__ import annotations

import logging
import os
import threading
from typing import Any

from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy
from dramatiq.middleware import Middleware

from app import db
from app.timeutil import utcnow
from app.workers import (
    Beat,
    process_key,
    record_beat,
    record_stop,
    resident_bytes,
    worker_id,
)

logger = logging.getLogger(__name__)


class WorkerHeartbeat(Middleware):
    """Counts this process's jobs and writes a heartbeat row from a background thread."""

    def __init__(self, *, interval: float) -> None:
        self._interval = interval
        self._lock = threading.Lock()
        self._running: set[str] = set()
        self._processed = 0
        self._failed = 0
        self._stop_event = threading.Event()
        self._thread: threading.Thread | None = None
        self._queues: list[str] = []
        self._started_at = utcnow()
        self._threads: int | None = None

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._queues = sorted(worker.consumer_whitelist or broker.get_declared_queues())
        self._started_at = utcnow()
        self._threads = worker.worker_threads
        with self._lock:  # A new worker on this broker starts its own counts.
            self._running.clear()
            self._processed = self._failed = 0
        self._stop_event.clear()
        self._thread = threading.Thread(
            target=self._beat_forever, name="jobstack-heartbeat", daemon=True
        )
        self._thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        self._stop_event.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            with db.session_scope() as session:
                record_beat(session, self._beat())  # the final counts
                record_stop(session, worker_id())
        except Exception:
            logger.warning("Could not record this worker's stop.", exc_info=True)

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._running.add(message.message_id)

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        with self._lock:
            self._running.discard(message.message_id)
            self._processed += 1
            if message.failed:
                self._failed += 1

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        with self._lock:
            self._running.discard(message.message_id)

    def _beat(self) -> Beat:
        with self._lock:
            return Beat(
                worker_id=worker_id(),
                pid=os.getpid(),
                queues=self._queues,
                started_at=self._started_at,
                running_job_ids=sorted(self._running),
                processed=self._processed,
                failed=self._failed,
                threads=self._threads,
                rss_bytes=resident_bytes(),
                process_key=process_key(),
            )

    def _beat_forever(self) -> None:
        while True:
            try:
                with db.session_scope() as session:
                    record_beat(session, self._beat())
            except Exception:
                logger.warning("Heartbeat failed; trying again.", exc_info=True)
            if self._stop_event.wait(self._interval):
                return
