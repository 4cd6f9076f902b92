"""The real ``dramatiq actors`` and ``jobstack`` CLIs, as a user runs them."""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from contextlib import closing
from pathlib import Path

from actors import diagnostics
from app.jobs import get_job, list_events, submit
from app.states import JobState
from app.timeutil import utcnow
from tests.acceptance.conftest import WorkerProcess, jobstack
from tests.support.locks import job_row_held
from tests.support.waiting import wait_for_state, wait_until


def test_the_dramatiq_cli_processes_submitted_jobs(
    start_worker: Callable[[], WorkerProcess],
) -> None:
    start_worker()
    jobs = [submit(diagnostics.echo, kwargs={"value": n}) for n in range(20)]

    results = [wait_for_state(job.id, timeout=30) for job in jobs]
    assert [(job.state, job.result) for job in results] == [("succeeded", n) for n in range(20)]
    assert all(job.worker_id and ":" in job.worker_id for job in results)


def test_jobstack_submit_wait_prints_the_finished_job(
    start_worker: Callable[[], WorkerProcess],
) -> None:
    start_worker()
    done = jobstack(
        "submit",
        "diagnostics.echo",
        "--kwargs",
        '{"value": {"ok": true}}',
        "--wait",
        "--timeout",
        "30",
    )
    assert done.returncode == 0, done.stderr
    job = json.loads(done.stdout)
    assert (job["state"], job["result"], job["attempts"]) == ("succeeded", {"ok": True}, 1)

    shown = jobstack("jobs", "show", job["id"], "--events")
    assert [e["to_state"] for e in json.loads(shown.stdout)["events"]] == [
        "queued",
        "running",
        "succeeded",
    ]
    listed = jobstack("jobs", "list", "--state", "succeeded")
    assert job["id"] in listed.stdout


def test_jobstack_submit_wait_exits_1_for_a_failed_job(
    start_worker: Callable[[], WorkerProcess],
) -> None:
    start_worker()
    done = jobstack(
        "submit", "diagnostics.fail", "--kwargs", '{"times": 1, "permanent": true}', "--wait"
    )
    assert done.returncode == 1
    assert json.loads(done.stdout)["error_type"] == "PermanentError"


def test_bad_cli_input_is_refused_with_what_was_wrong(clean_db: str) -> None:
    bad_json = jobstack("submit", "diagnostics.echo", "--kwargs", "{value: 1}")
    assert bad_json.returncode == 2
    assert "--kwargs" in bad_json.stderr and "not valid JSON" in bad_json.stderr

    unknown = jobstack("submit", "diagnostics.nope")
    assert unknown.returncode == 1
    assert "no actor named 'diagnostics.nope'" in unknown.stderr

    missing = jobstack("jobs", "show", "no-such-id")
    assert missing.returncode == 1 and "no job with id no-such-id" in missing.stderr


def test_a_job_whose_worker_is_killed_completes_on_a_new_worker_as_attempt_2(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    # Production's heartbeat interval: the dead worker's last beat is recent, and only
    # seeing that its process is gone lets the new worker start the job at once.
    beats = {"JOBSTACK_HEARTBEAT_INTERVAL": "10"}
    first = start_worker(env=beats)
    job = submit(diagnostics.sleep, kwargs={"seconds": 3})
    wait_for_state(job.id, {JobState.RUNNING}, timeout=20)

    first.kill()
    assert get_job(job.id).state == "running"  # Nobody recorded an outcome.

    second = start_worker(env=beats)
    ready_at = utcnow()
    done = wait_for_state(job.id, timeout=30)
    assert (done.state, done.attempts, done.result) == ("succeeded", 2, 3)
    events = [e for e in list_events(job.id) if e.kind != "progress"]
    assert [e.kind for e in events] == ["created", "started", "redelivered", "succeeded"]
    assert "came back from RabbitMQ while worker" not in second.log.read_text()
    print(f"\nrestarted {(events[2].at - ready_at).total_seconds():.2f} s after the new worker")


def test_db_upgrade_creates_the_schema_in_a_new_database(tmp_path: Path) -> None:
    path = tmp_path / "fresh.db"
    done = jobstack("db", "upgrade", env={"JOBSTACK_DATABASE_URL": f"sqlite:///{path}"})
    assert done.returncode == 0, done.stderr
    with closing(sqlite3.connect(path)) as connection:
        tables = {row[0] for row in connection.execute("SELECT name FROM sqlite_master")}
    assert {"jobs", "job_events", "leases", "alembic_version"} <= tables


def test_a_message_that_kills_its_worker_three_times_is_dead_lettered_as_poison(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    from tests.support import killer_actors
    from tests.support.rabbit import real_broker

    job = submit(killer_actors.killer)
    for death in range(1, 4):
        worker = start_worker(modules=("tests.support.killer_actors",))
        worker.process.wait(30)  # The job kills it.
        assert get_job(job.id).attempts == death

    last = start_worker(modules=("tests.support.killer_actors",))
    done = wait_for_state(job.id, timeout=20)
    assert (done.state, done.error_type, done.attempts) == ("failed", "PoisonMessage", 3)
    assert list_events(job.id)[-1].data == {"reason": "poison", "dead_lettered": True, "deaths": 3}
    assert last.process.poll() is None  # This worker lives on.
    broker = real_broker()
    # The state is committed first, then the message is nacked into default.XQ.
    wait_until(lambda: broker.get_queue_message_counts("default")[2] == 1, 10, "the dead letter")


def test_jobstack_dlq_lists_and_redrives_dead_letters(
    start_worker: Callable[..., WorkerProcess],
) -> None:
    start_worker()
    job = submit("diagnostics.fail", kwargs={"times": 1}, max_retries=0)
    assert wait_for_state(job.id, timeout=20).state == "failed"

    def listed() -> list[dict[str, object]]:
        out = jobstack("dlq", "list", "--actor", "diagnostics.fail").stdout
        return [json.loads(line) for line in out.splitlines()]

    [letter] = wait_until(listed, 10, "the dead letter")
    assert (letter["job_id"], letter["error_type"]) == (job.id, "RuntimeError")

    dry = jobstack("dlq", "redrive", "--dry-run")
    assert "found 1 dead letter(s)" in dry.stderr
    assert get_job(job.id).state == "failed"

    done = jobstack("dlq", "redrive", "--error-type", "RuntimeError")
    assert done.returncode == 0 and "re-drove 1 dead letter(s)" in done.stderr
    assert wait_for_state(job.id, timeout=20).state == "succeeded"


def test_a_worker_killed_while_its_outcome_waits_for_the_database_acks_nothing(
    start_worker: Callable[..., WorkerProcess], tmp_path: Path
) -> None:
    from tests.support import gated_actors
    from tests.support.rabbit import real_broker

    modules = ("tests.support.gated_actors",)
    first = start_worker(modules=modules)
    go = tmp_path / "go"
    job = submit(gated_actors.until_file, kwargs={"path": str(go)})
    wait_for_state(job.id, {JobState.RUNNING}, timeout=20)

    broker = real_broker()
    with job_row_held(job.id):
        go.touch()  # The actor returns; its outcome's commit waits for the row.
        wait_until(
            lambda: f"Job {job.id} (tests.until_file) succeeded" in first.log.read_text(),
            20,
            "the worker to hand over the outcome",
        )
        first.kill()
        # Nothing was acked: RabbitMQ puts the message back as the connection drops.
        wait_until(
            lambda: broker.get_queue_message_counts("default")[0] == 1, 20, "the message back"
        )

    start_worker(modules=modules)
    done = wait_for_state(job.id, timeout=30)
    assert (done.state, done.result) == ("succeeded", "done")
    kinds = [e.kind for e in list_events(job.id)]
    # PostgreSQL may still finish the statement the dead worker sent once the row is
    # free (it notices a vanished client only when it answers): then the redelivered
    # message finds the job finished and is skipped. Otherwise it runs as attempt 2.
    assert (done.attempts, kinds) in [
        (1, ["created", "started", "succeeded"]),
        (2, ["created", "started", "redelivered", "succeeded"]),
    ]
