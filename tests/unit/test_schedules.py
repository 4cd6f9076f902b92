"""Cron specs are validated, and periodiq's stale-tick skip spares retries."""

from __future__ import annotations

from datetime import timedelta

import pendulum
import pytest
from dramatiq.broker import MessageProxy
from dramatiq.middleware import SkipMessage

from app.context import JobContext, enter_job
from app.cron import cron
from app.errors import ConfigurationError
from app.middleware.periodic import JobPeriodiq
from app.timeutil import utcnow
from tests.unit.conftest import StubActors


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("* * * * * *", "needs 5 fields"),
        ("0 0 * *", "needs 5 fields"),
        ("@reboot", "unknown alias"),
        ("61 * * * *", "minute must be within 0-59"),
        ("* 25 * * *", "hour must be within 0-23"),
        ("0 0 5-1 * *", "day of month must be within 1-31"),
        ("0 0 * 13 *", "month must be within 1-12"),
        ("0 0 * * x", "is invalid"),
    ],
)
def test_a_spec_periodiq_would_misread_is_refused(spec: str, why: str) -> None:
    with pytest.raises(ConfigurationError, match=why):
        cron(spec)


def test_sunday_is_0_and_7() -> None:
    wednesday = pendulum.datetime(2026, 11, 18, 9, 0, tz="UTC")
    runs = {str(cron(f"0 12 * * {day}").next_valid_date(wednesday)) for day in ("0", "7", "sun")}
    assert runs == {"2026-11-22 12:00:00+00:00"}  # a Sunday


def _tick(stub: StubActors, age: timedelta, attempt: int) -> MessageProxy:
    scheduled_at = (utcnow() - age).isoformat()
    message = stub.echo.message_with_options(args=(1,), scheduled_at=scheduled_at)
    enter_job(JobContext(id=message.message_id, attempt=attempt))
    return MessageProxy(message)


def test_a_stale_tick_is_skipped_on_its_first_attempt_only(stub: StubActors) -> None:
    stub.echo.options["periodic"] = cron("* * * * *")
    middleware = JobPeriodiq()
    try:
        with pytest.raises(SkipMessage):
            middleware.before_process_message(stub.broker, _tick(stub, timedelta(minutes=2), 1))
        middleware.before_process_message(stub.broker, _tick(stub, timedelta(minutes=2), 2))
        middleware.before_process_message(stub.broker, _tick(stub, timedelta(seconds=1), 1))
    finally:
        enter_job(None)
