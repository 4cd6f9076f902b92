"""Lets running jobs be cancelled: registers them and runs the control threads."""

from __future__ import annotations

from typing import Any

from dramatiq import Broker, Worker
from dramatiq.broker import MessageProxy
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.middleware import Middleware

from app.context import current_job_or_none
from app.errors import JobCancelled
from app.operations.cancellation import CancelPoller, ControlListener, RunningJobs


class Cancellation(Middleware):
    """Last in the middleware list: its ``after_*`` hooks run first, so a job leaves the
    registry (and can no longer be interrupted) as soon as its actor has returned."""

    def __init__(self, *, grace: float, poll_interval: float, broadcast: bool) -> None:
        self.running = RunningJobs(grace=grace)
        #: Seconds between two checks of the database for cancelled jobs running here.
        self.poll_interval = poll_interval
        #: Whether to listen on the RabbitMQ fanout exchange as well (at once).
        self.broadcast = broadcast
        self._threads: list[ControlListener | CancelPoller] = []

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # Jobs claimed as their messages arrive wait in this process before they run;
        # a cancellation meanwhile must keep them from starting.
        watchers = getattr(broker, "claim_watchers", None)
        if watchers is not None:
            watchers.append(self.running.expect)

    def after_worker_boot(self, broker: Broker, worker: Worker) -> None:
        self._threads = [CancelPoller(self.running, self.poll_interval)]
        if self.broadcast and isinstance(broker, RabbitmqBroker):
            self._threads.append(ControlListener(broker, self.running))
        for thread in self._threads:
            thread.start()

    def before_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        watchers = getattr(broker, "claim_watchers", None)
        if watchers is not None and self.running.expect in watchers:
            watchers.remove(self.running.expect)
        for thread in self._threads:
            thread.stop()
        self._threads = []

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        job = current_job_or_none()  # Set by Tracking, earlier in the list.
        if job is not None and job.id == message.message_id:
            self.running.add(job)
            # Cancelled while it waited for this thread: stop before the actor starts.
            job.checkpoint()

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any = None,
        exception: BaseException | None = None,
    ) -> None:
        while True:
            try:
                forced = self.running.remove(message.message_id)
                break
            except JobCancelled:
                # The forced interruption, raised just as the job ended on its own, landed
                # here: the job is over, and an exception escaping an after-hook would end
                # the worker thread. Remove it again (the interruption comes only once).
                continue
        job = current_job_or_none()
        if forced and job is not None:
            job.cancel_forced = True

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        self.running.remove(message.message_id)
