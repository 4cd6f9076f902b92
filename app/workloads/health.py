"""The periodic health check: is the API ready, the database answering, the broker up?"""

from __future__ import annotations

import urllib.error
import urllib.request

import dramatiq
from sqlalchemy import text

from app import db
from app.models import HealthCheck
from app.operations.queues import broker_reachable
from app.timeutil import utcnow

TIMEOUT = 5.0


def _api(url: str) -> tuple[bool, str | None]:
    try:
        with urllib.request.urlopen(url.rstrip("/") + "/readyz", timeout=TIMEOUT) as response:
            return response.status == 200, None
    except urllib.error.HTTPError as error:
        return False, f"/readyz answered {error.code}"
    except (OSError, ValueError) as error:
        return False, f"{type(error).__name__}: {error}"


def _database() -> tuple[bool, str | None]:
    try:
        with db.session_scope() as session:
            session.execute(text("SELECT 1"))
    except Exception as error:
        return False, f"{type(error).__name__}: {error}"
    return True, None


def run_health_check(api_url: str, broker: dramatiq.Broker) -> HealthCheck:
    """Check the three and record the result (recording needs the database, of course)."""
    api_ok, api_detail = _api(api_url)
    database_ok, database_detail = _database()
    broker_error = broker_reachable(broker)
    check = HealthCheck(
        at=utcnow(),
        ok=api_ok and database_ok and broker_error is None,
        api_ok=api_ok,
        api_detail=api_detail,
        database_ok=database_ok,
        database_detail=database_detail,
        broker_ok=broker_error is None,
        broker_detail=broker_error,
    )
    with db.session_scope() as session:
        session.add(check)
    return check
