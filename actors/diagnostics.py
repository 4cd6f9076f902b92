"""Actors for tests, benchmarks and smoke checks of a deployment."""

from __future__ import annotations

import time
from typing import Any

import dramatiq
from marshmallow import Schema, fields, validate

from app.context import current_job
from app.errors import PermanentError

# Retries of ``fail`` are meant to be watched, not waited for.
FAST_MIN_BACKOFF_MS = 200
FAST_MAX_BACKOFF_MS = 2_000


class NoArgs(Schema):
    pass


class EchoArgs(Schema):
    value = fields.Raw(required=True, allow_none=True)


class SleepArgs(Schema):
    seconds = fields.Float(required=True, validate=validate.Range(0, 3600))


class FailArgs(Schema):
    times = fields.Integer(required=True, validate=validate.Range(0, 1000))
    permanent = fields.Boolean()
    message = fields.String(validate=validate.Length(max=1000))


@dramatiq.actor(actor_name="diagnostics.noop", public=True, schema=NoArgs)
def noop() -> None:
    """Do nothing: measures the platform's own cost per job."""


@dramatiq.actor(actor_name="diagnostics.echo", public=True, schema=EchoArgs)
def echo(value: Any) -> Any:
    """Return ``value``, which becomes the job's result."""
    return value


@dramatiq.actor(actor_name="diagnostics.sleep", public=True, schema=SleepArgs)
def sleep(seconds: float) -> float:
    """Sleep ``seconds``, reporting progress every second; returns the seconds slept."""
    job = current_job()
    started = time.monotonic()
    while (elapsed := time.monotonic() - started) < seconds:
        job.progress(int(100 * elapsed / seconds), f"{elapsed:.0f}s of {seconds:g}s")
        time.sleep(min(1.0, seconds - elapsed))
    return seconds


@dramatiq.actor(
    actor_name="diagnostics.fail",
    public=True,
    schema=FailArgs,
    min_backoff=FAST_MIN_BACKOFF_MS,
    max_backoff=FAST_MAX_BACKOFF_MS,
)
def fail(times: int, permanent: bool = False, message: str | None = None) -> int:
    """Raise on the first ``times`` attempts and succeed on attempt ``times + 1``.

    With ``permanent`` the error is a PermanentError, which is never retried; ``message``
    is what the error says (by default, which attempt failed).
    """
    attempt = current_job().attempt
    if attempt <= times:
        error = PermanentError if permanent else RuntimeError
        raise error(message or f"diagnostics.fail: attempt {attempt} fails ({times} planned)")
    return attempt
