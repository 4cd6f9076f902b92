from __future__ import annotations

import pytest

from app.config import Settings, load_settings
from app.errors import ConfigurationError
from app.rabbitmq.nodes import amqp_url


def test_defaults_run_on_one_machine_with_nothing_configured() -> None:
    settings = load_settings({})
    assert settings.database_url == "sqlite:///var/jobstack.db"
    assert settings.broker_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.storage_dir == "var/storage"


def test_variables_are_read_and_typed() -> None:
    settings = load_settings(
        {
            "JOBSTACK_DATABASE_URL": "postgresql+psycopg://db/jobs",
            "JOBSTACK_RELAY_GRACE": "2.5",
            "JOBSTACK_RELAY_BATCH": "10",
            "JOBSTACK_RELAY_ENABLED": "false",
        }
    )
    assert settings.database_url == "postgresql+psycopg://db/jobs"
    assert (settings.relay_grace, settings.relay_batch, settings.relay_enabled) == (2.5, 10, False)


def test_a_bad_value_names_the_variable() -> None:
    with pytest.raises(ConfigurationError, match="JOBSTACK_RELAY_BATCH='many'"):
        load_settings({"JOBSTACK_RELAY_BATCH": "many"})


def test_the_broker_url_gets_heartbeat_and_blocked_timeout_unless_given() -> None:
    url = amqp_url(Settings(broker_url="amqp://u:p@rabbit:5672/%2F"))
    assert "heartbeat=60" in url and "blocked_connection_timeout=300" in url
    assert url.startswith("amqp://u:p@rabbit:5672/%2F?")
    explicit = amqp_url(Settings(broker_url="amqp://rabbit/%2F?heartbeat=5"))
    assert "heartbeat=5" in explicit and "heartbeat=60" not in explicit


def test_operator_queues_are_read_and_dotted_names_refused() -> None:
    from app.broker import configured_queues

    assert configured_queues(Settings(queues=" reports, bulk-import ,")) == [
        "reports",
        "bulk-import",
    ]
    with pytest.raises(ConfigurationError, match=r"JOBSTACK_QUEUES: 'reports\.XQ'"):
        configured_queues(Settings(queues="reports.XQ"))
