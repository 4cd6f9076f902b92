"""The gate that holds a message's ack until its job's commit."""

from __future__ import annotations

from app.recording.acks import AfterCommit


def test_an_action_given_before_the_gate_opens_waits_for_it() -> None:
    gate, done = AfterCommit(), []
    gate.run_after(lambda: done.append("ack"))
    assert done == []

    gate.open()
    assert done == ["ack"]


def test_an_action_given_after_the_gate_opened_runs_at_once() -> None:
    gate, done = AfterCommit(), []
    gate.open()
    gate.run_after(lambda: done.append("ack"))
    assert done == ["ack"]


def test_opening_twice_runs_the_action_once() -> None:
    gate, done = AfterCommit(), []
    gate.run_after(lambda: done.append("ack"))
    gate.open()
    gate.open()
    assert done == ["ack"]
