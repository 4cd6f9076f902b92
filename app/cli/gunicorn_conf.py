"""gunicorn settings of ``jobstack api``: JSON log lines (JOBSTACK_LOG_FORMAT=json).

Access lines are written by :mod:`api.serving.access_log` on the ``gunicorn.access``
logger configured here; uvicorn's own lines go to ``uvicorn.error``, JSON too.
"""

from __future__ import annotations

from typing import Any

from app.config import load_settings


def _json_logging() -> dict[str, Any]:
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "json",
        "filters": ["job_context"],
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"job_context": {"()": "app.logs.JobContextFilter"}},
        "formatters": {"json": {"()": "app.logs.JsonFormatter"}},
        "handlers": {
            "console": {**handler, "stream": "ext://sys.stdout"},
            "error_console": {**handler, "stream": "ext://sys.stderr"},
        },
        "root": {"level": "INFO", "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["console"], "propagate": False},
            "uvicorn.error": {"level": "INFO", "handlers": ["error_console"], "propagate": False},
            "pika": {"level": "WARNING"},
        },
    }


# gunicorn 25.1+ opens a control socket at one path per user by default: a second API on
# the host would take over the first's. jobstack does not use it.
control_socket_disable = True

if load_settings().log_format == "json":
    logconfig_dict = _json_logging()
