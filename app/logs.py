"""Logging set-up for jobstack's own commands."""

from __future__ import annotations

import logging

from app.config import load_settings


def configure_logging() -> None:
    """Log to stderr at ``JOBSTACK_LOG_LEVEL``, keeping pika's chatter at warnings."""
    logging.basicConfig(
        level=load_settings().log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("pika").setLevel(logging.WARNING)
