"""Logging: JSON lines that carry the job id and correlation id of the running job."""

from __future__ import annotations

import json
import logging
from contextvars import ContextVar
from datetime import UTC, datetime

from app.config import load_settings
from app.context import current_job_or_none
from app.observability.tracing import current_ids

#: The correlation id of the API request this thread serves.
_request_correlation: ContextVar[str | None] = ContextVar("jobstack_request_cid", default=None)


def bind_request_correlation(correlation_id: str | None) -> None:
    """Tag this thread's log lines with an API request's correlation id (None: stop)."""
    _request_correlation.set(correlation_id)


class JobContextFilter(logging.Filter):
    """Adds ``job_id`` and ``correlation_id``: of the job this thread runs, or of the API
    request it serves (None outside both)."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = current_job_or_none()
        record.job_id = job.id if job else None
        record.correlation_id = job.correlation_id if job else _request_correlation.get()
        ids = current_ids()
        record.trace_id, record.span_id = ids if ids else (None, None)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "pid": record.process,
            "thread": record.threadName,
            "job_id": getattr(record, "job_id", None),
            "correlation_id": getattr(record, "correlation_id", None),
        }
        trace_id = getattr(record, "trace_id", None)
        if trace_id:
            # Only while a span is active: the line then leads to its trace.
            entry["trace_id"] = trace_id
            entry["span_id"] = getattr(record, "span_id", None)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def use_json_logs(logger: logging.Logger | None = None) -> None:
    """Give every handler of ``logger`` (default: root) the JSON format and job context."""
    for handler in (logger or logging.getLogger()).handlers:
        handler.setFormatter(JsonFormatter())
        if not any(isinstance(f, JobContextFilter) for f in handler.filters):
            handler.addFilter(JobContextFilter())


def configure_logging() -> None:
    """Log to stderr at ``JOBSTACK_LOG_LEVEL``, keeping pika's chatter at warnings."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
    if settings.log_format == "json":
        use_json_logs()
