"""The one error root of jobstack and its branches.

Every exception jobstack raises derives from :class:`JobstackError`, except the two
control-flow exceptions at the bottom, which must derive from Dramatiq's for Dramatiq to
act on them (the reason is in each docstring). Errors that belong to one workload are
declared beside it (``UnsafeArchive``, ``DatasetError``, ``WebhookRefused`` …), still
under this root. An exception's docstring is its default message.

    JobstackError
    ├── ConfigurationError
    ├── PermanentError           an actor's failure that no retry can fix
    ├── SubmitError
    │   ├── UnknownActor
    │   └── UnknownQueue
    ├── NotFound                 the API answers 404 for every one of them
    │   ├── JobNotFound
    │   ├── DatasetNotFound
    │   └── RunNotFound
    ├── InvalidTransition
    ├── StaleAttempt
    ├── RecordingError
    ├── NotInJob                 (also a RuntimeError)
    ├── InvalidProgress          (also a ValueError)
    └── NaiveDatetime            (also a ValueError)
"""

from __future__ import annotations

from dramatiq.middleware import Interrupt, MiddlewareError


class JobstackError(Exception):
    """Base class of every jobstack error."""

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())


class ConfigurationError(JobstackError):
    """A JOBSTACK_* setting is invalid."""


class PermanentError(JobstackError):
    """Raised by an actor for a failure that no retry can fix; the job fails at once."""


class SubmitError(JobstackError):
    """A job could not be submitted as asked."""


class UnknownActor(SubmitError):
    """No actor of that name is registered."""


class UnknownQueue(SubmitError):
    """No queue of that name is declared: the API does not create queues."""


class NotFound(JobstackError):
    """The thing asked for does not exist (or belongs to another tenant)."""


class JobNotFound(NotFound):
    """No job has that id."""


class DatasetNotFound(NotFound):
    """No dataset has that id."""


class RunNotFound(NotFound):
    """No ingestion run has that id."""


class InvalidTransition(JobstackError):
    """The job's state does not allow the requested transition."""

    def __init__(self, job_id: str, from_state: str, to_state: str) -> None:
        super().__init__(f"job {job_id}: {from_state} -> {to_state} is not allowed")
        self.job_id = job_id
        self.from_state = from_state
        self.to_state = to_state


class StaleAttempt(JobstackError):
    """The job moved on to another attempt; an update for an older attempt was dropped."""


class RecordingError(JobstackError):
    """A batch of job state changes could not be applied as the worker planned it."""


class NotInJob(JobstackError, RuntimeError):
    """current_job() is only available inside a running tracked actor."""


class InvalidProgress(JobstackError, ValueError):
    """Progress must be a percentage between 0 and 100."""


class NaiveDatetime(JobstackError, ValueError):
    """Naive datetimes are ambiguous; pass an aware UTC datetime."""


class TrackingUnavailable(MiddlewareError):
    """The job database could not be reached, so the message was not started.

    It derives from Dramatiq's MiddlewareError so that it escapes ``emit_before``
    (which swallows other errors) and the Retries middleware schedules the message again.
    """


class JobCancelled(Interrupt):
    """The running job was cancelled; it ends ``cancelled``, without retry or dead letter.

    An Interrupt (a BaseException) so that an actor's ``except Exception`` does not
    swallow it.
    """

    def __init__(self, message: str | None = None) -> None:
        super().__init__(message or "the job was cancelled")
