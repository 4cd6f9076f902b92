"""Stopping running jobs: cooperatively at a checkpoint, by force after a grace period.

Each worker process keeps a registry of the jobs its threads run. A cancellation reaches
it through the RabbitMQ fanout exchange ``jobstack.control`` (at once) or through the
job's ``cancel_requested_at`` column, which a poller checks (the fallback for a missed
broadcast). The job's context is flagged, so its next ``checkpoint()`` or ``progress()``
raises JobCancelled; a job still running after the grace period gets JobCancelled raised
in its thread, as Dramatiq's TimeLimit does.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass

import dramatiq
import pika
import pika.exceptions
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import raise_thread_exception
from sqlalchemy import select

from app import db
from app.context import JobContext
from app.errors import JobCancelled
from app.models import Job

logger = logging.getLogger(__name__)

CONTROL_EXCHANGE = "jobstack.control"


@dataclass
class _Running:
    thread_id: int
    context: JobContext
    forced: bool = False


class RunningJobs:
    """The jobs this process's worker threads run, and their cancellation."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self._lock = threading.Lock()
        self._jobs: dict[str, _Running] = {}
        # Jobs claimed here (shown running) whose worker thread has not taken them yet,
        # and whether their cancellation arrived meanwhile.
        self._claimed: dict[str, bool] = {}

    def expect(self, job_id: str) -> None:
        """Watch a job claimed here before its thread runs it: a cancellation that
        arrives meanwhile keeps its actor from starting."""
        with self._lock:
            self._claimed[job_id] = False

    def add(self, context: JobContext) -> None:
        """Register a job its thread is about to run; flags it when its cancellation
        arrived while it waited for the thread."""
        with self._lock:
            self._jobs[context.id] = _Running(threading.get_ident(), context)
            cancelled = self._claimed.pop(context.id, False)
        if cancelled:
            context.cancel_requested.set()

    def remove(self, job_id: str) -> bool:
        """Forget a job; returns whether it was interrupted by force."""
        with self._lock:
            running = self._jobs.pop(job_id, None)
            self._claimed.pop(job_id, None)
        return bool(running and running.forced)

    def cancel_pending(self, job_id: str) -> bool:
        """Whether ``job_id`` is claimed here, not yet running, and cancelled."""
        with self._lock:
            return self._claimed.get(job_id) is True

    def ids(self) -> list[str]:
        with self._lock:
            return [*self._jobs, *self._claimed]

    def cancel(self, job_id: str) -> bool:
        """Flag ``job_id`` for cancellation if it runs here; force it after the grace."""
        with self._lock:
            if self._claimed.get(job_id) is False:
                self._claimed[job_id] = True
                logger.info("Cancelling job %s before it starts.", job_id)
                return True
            running = self._jobs.get(job_id)
            if running is None or running.context.cancel_requested.is_set():
                return False
            running.context.cancel_requested.set()
        logger.info("Cancelling job %s (grace %.1fs).", job_id, self.grace)
        timer = threading.Timer(self.grace, self._force, args=(job_id, running))
        timer.daemon = True
        timer.start()
        return True

    def _force(self, job_id: str, running: _Running) -> None:
        with self._lock:
            # Only the same run of the job, still running: the thread may have moved on to
            # other work, or the job may have stopped at its checkpoint just now.
            if self._jobs.get(job_id) is not running or running.context.stopped.is_set():
                return
            running.forced = True
            logger.warning("Job %s ignored its cancellation; interrupting it.", job_id)
            raise_thread_exception(running.thread_id, JobCancelled)  # type: ignore[no-untyped-call]


def broadcast_cancel(broker: dramatiq.Broker, job_id: str) -> None:
    """Tell every worker process that ``job_id`` is cancelled (best effort)."""
    if not isinstance(broker, RabbitmqBroker):
        return
    try:
        channel = broker.channel
        channel.exchange_declare(CONTROL_EXCHANGE, exchange_type="fanout", durable=True)
        channel.basic_publish(
            CONTROL_EXCHANGE, "", json.dumps({"type": "cancel", "job_id": job_id}).encode()
        )
    except pika.exceptions.AMQPError:
        del broker.connection
        logger.warning(
            "Could not broadcast the cancellation of job %s; workers poll for it.", job_id
        )


class ControlListener(threading.Thread):
    """Consumes the control fanout exchange and cancels the jobs it names."""

    def __init__(self, broker: RabbitmqBroker, running: RunningJobs) -> None:
        super().__init__(name="jobstack-control", daemon=True)
        self.broker = broker
        self.running = running
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            try:
                self._consume()
            except pika.exceptions.AMQPError as error:
                logger.warning("Control listener disconnected (%s); reconnecting.", error)
                self._stop_event.wait(2)

    def _consume(self) -> None:
        # Read at each (re)connection: the broker hands out its nodes in a new order.
        connection = pika.BlockingConnection(self.broker.parameters)
        try:
            channel = connection.channel()
            channel.exchange_declare(CONTROL_EXCHANGE, exchange_type="fanout", durable=True)
            queue = channel.queue_declare("", exclusive=True, auto_delete=True).method.queue
            channel.queue_bind(queue, CONTROL_EXCHANGE)
            for _method, _properties, body in channel.consume(
                queue, auto_ack=True, inactivity_timeout=0.5
            ):
                if self._stop_event.is_set():
                    break
                if body:
                    self._on_command(body)
        finally:
            if connection.is_open:
                connection.close()

    def _on_command(self, body: bytes) -> None:
        try:
            command = json.loads(body)
            if command.get("type") == "cancel":
                self.running.cancel(str(command["job_id"]))
        except (ValueError, KeyError, TypeError, AttributeError):
            logger.warning("Ignoring a malformed control message: %r", body[:200])

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)


class CancelPoller(threading.Thread):
    """Checks the database for cancellation requests of the jobs running here."""

    def __init__(self, running: RunningJobs, interval: float) -> None:
        super().__init__(name="jobstack-cancel-poller", daemon=True)
        self.running = running
        self.interval = interval
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            ids = self.running.ids()
            if not ids:
                continue
            try:
                with db.session_scope() as session:
                    cancelled = session.scalars(
                        select(Job.id).where(Job.id.in_(ids), Job.cancel_requested_at.is_not(None))
                    ).all()
            except Exception:
                logger.warning("Could not poll for cancellations.", exc_info=True)
                continue
            for job_id in cancelled:
                self.running.cancel(job_id)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=5)
