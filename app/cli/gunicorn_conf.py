"""gunicorn settings of ``jobstack api``: JSON log lines (JOBSTACK_LOG_FORMAT=json).

Access lines name the response's X-Correlation-ID, so a request can be followed from the
API's access log into the worker's log lines of its job.
"""

from __future__ import annotations

from typing import Any

from app.config import load_settings

access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms correlation_id=%({x-correlation-id}o)s'


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
            "pika": {"level": "WARNING"},
        },
    }


if load_settings().log_format == "json":
    logconfig_dict = _json_logging()
