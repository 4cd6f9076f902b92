"""The API's ``/metrics``: jobs, queues, outbox, workers and schedules, at scrape time."""

from __future__ import annotations

from flask import Flask

from app.config import Settings


def register(app: Flask, settings: Settings) -> None:
    return None
