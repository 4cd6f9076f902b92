"""Closing a dropped connection silences pika for the closing thread only."""

from __future__ import annotations

import logging
import threading

import pytest

from app.rabbitmq.quiet_close import closing_quietly


def test_only_the_closing_thread_is_silenced_and_only_while_it_closes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    pika_logger = logging.getLogger("pika.adapters.blocking_connection")
    own = logging.getLogger("jobstack.test.broker")
    with caplog.at_level(logging.ERROR):
        with closing_quietly(own):
            pika_logger.error("closing: reset by peer")
            own.error("closing: exception while closing Channel")
            other = threading.Thread(target=lambda: pika_logger.error("another thread's error"))
            other.start()
            other.join()
        pika_logger.error("after closing")

    assert caplog.messages == ["another thread's error", "after closing"]
