"""A stub broker with jobstack's full middleware stack, and actors declared on it."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import dramatiq
import pytest
from dramatiq.brokers.stub import StubBroker

from app.broker import build_middleware
from app.context import current_job
from app.errors import PermanentError
from tests.support.workers import close_broker, running_worker


@dataclass
class StubActors:
    broker: StubBroker
    echo: dramatiq.Actor[Any, Any]
    flaky: dramatiq.Actor[Any, Any]
    broken: dramatiq.Actor[Any, Any]
    counted: dramatiq.Actor[Any, Any]
    runs: list[str] = field(default_factory=list)


@pytest.fixture
def stub(clean_db: str) -> Iterator[StubActors]:
    broker = StubBroker(middleware=build_middleware())
    broker.emit_after("process_boot")
    runs: list[str] = []
    lock = threading.Lock()

    @dramatiq.actor(broker=broker, actor_name="t.echo")
    def echo(value: Any) -> Any:
        return value

    @dramatiq.actor(
        broker=broker, actor_name="t.flaky", max_retries=2, min_backoff=10, max_backoff=20
    )
    def flaky(times: int) -> int:
        attempt = current_job().attempt
        if attempt <= times:
            raise RuntimeError(f"attempt {attempt} fails")
        return attempt

    @dramatiq.actor(broker=broker, actor_name="t.broken")
    def broken() -> None:
        raise PermanentError("the input can never work")

    @dramatiq.actor(broker=broker, actor_name="t.counted")
    def counted() -> None:
        with lock:
            runs.append(current_job().id)

    yield StubActors(broker, echo, flaky, broken, counted, runs)
    close_broker(broker)


@pytest.fixture
def stub_worker(stub: StubActors) -> Iterator[dramatiq.Worker]:
    with running_worker(stub.broker, threads=2) as worker:
        yield worker
