"""jobstack on a 3-node RabbitMQ cluster with quorum queues: a broker node killed while
jobs are submitted and run, and a worker host cut off from the broker, lose no job.

Everything runs here: the nodes (tests.support.rabbit_cluster), the API (``jobstack api``)
and the workers (``dramatiq actors``) as real processes, the worker hosts of the second
test in network namespaces (tests.support.netns). Run by ``tox -e quorum`` (marker
``cluster``); the counts each test measured are printed (``-s`` shows them).
"""

from __future__ import annotations

import collections
import json
import os
import re
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pika
import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import make_url

from app import db
from app.models import Job, JobEvent
from app.tokens import create_token
from tests.acceptance.conftest import BIN, REPO
from tests.support.netns import WorkerHost, netns_available
from tests.support.rabbit_cluster import RabbitCluster, scripts_dir
from tests.support.served_api import ServedApi
from tests.support.services import require
from tests.support.waiting import wait_until

pytestmark = [pytest.mark.cluster, pytest.mark.acceptance]

#: The actor every job runs: public, so the API takes it; it sleeps ``seconds``.
ACTOR = "diagnostics.sleep"
#: Logged by the tracking middleware each time an actor's run ends, before the outcome is
#: stored: how often each job ran to completion, wherever it ran.
COMPLETED = re.compile(r"Job ([0-9a-f-]{36}) \(diagnostics\.sleep\) succeeded after attempt")
NOT_RECORDED = re.compile(r"Outcome of job ([0-9a-f-]{36}) not recorded")
#: A message delivered again whose job had finished meanwhile, or was still running on the
#: worker that had it first (app.recording.attempts).
DELIVERED_AGAIN = re.compile(
    r"Skipping message ([0-9a-f-]{36}): job is|Job ([0-9a-f-]{36}) came back from RabbitMQ"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    require(scripts_dir() is not None, "RabbitMQ's server scripts (Debian package rabbitmq-server)")
    with RabbitCluster() as running:
        yield running


def _quorum_env(broker_url: str, database_url: str) -> dict[str, str]:
    return {
        "JOBSTACK_BROKER_URL": broker_url,
        "JOBSTACK_QUEUE_TYPE": "quorum",
        "JOBSTACK_DATABASE_URL": database_url,
        "JOBSTACK_LOG_FORMAT": "json",
    }


class Worker:
    """``dramatiq actors`` with 8 threads, in this machine's namespace or a WorkerHost's."""

    def __init__(self, log: Path, env: dict[str, str], host: WorkerHost | None = None) -> None:
        self.log = log
        self.start_offset = log.stat().st_size if log.exists() else 0
        command = [str(BIN / "dramatiq"), "actors", "-p", "1", "-t", "8"]
        full_env = {**os.environ, **env}
        with log.open("ab") as out:
            options: dict[str, Any] = {
                "cwd": REPO,
                "env": full_env,
                "stdout": out,
                "stderr": subprocess.STDOUT,
            }
            if host is None:
                self.process = subprocess.Popen(command, start_new_session=True, **options)
            else:
                self.process = host.popen(command, **options)
        wait_until(self._ready, 60, f"the worker logging to {log.name} to boot")

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the worker exited:\n{self.log.read_text()[-4000:]}")
        return "is ready for action" in self.log.read_text()[self.start_offset :]

    def delivered_again(self) -> set[str]:
        """Jobs whose message reached this worker again and did not run here."""
        return {a or b for a, b in DELIVERED_AGAIN.findall(self.log.read_text())}

    def completions(self, since: int = 0) -> collections.Counter[str]:
        """Job id -> runs that ended in success here (from byte ``since`` of its log)."""
        text = self.log.read_text()[since:]
        return collections.Counter(COMPLETED.findall(text))

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, 15)
            try:
                self.process.wait(40)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, 9)
                self.process.wait(10)


@dataclass
class Submitter:
    """Threads that POST jobs to the API one at a time, counting what was accepted."""

    api: ServedApi
    token: str
    seconds: float
    accepted: list[str] = field(default_factory=list)
    refused: collections.Counter[int] = field(default_factory=collections.Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, count: int) -> None:
        for _ in range(count):
            try:
                status, _headers, body = self.api.call(
                    "POST",
                    "/v1/jobs",
                    {"actor": ACTOR, "kwargs": {"seconds": self.seconds}},
                    {"Authorization": f"Bearer {self.token}"},
                )
            except OSError:
                status, body = 0, None
            with self.lock:
                if status in (200, 201, 202):
                    self.accepted.append(body["id"])
                else:
                    self.refused[status] += 1

    def in_threads(self, total: int, threads: int) -> list[threading.Thread]:
        started = []
        for index in range(threads):
            share = total // threads + (1 if index < total % threads else 0)
            thread = threading.Thread(target=self.submit, args=(share,), daemon=True)
            thread.start()
            started.append(thread)
        return started


def _jobs(ids: list[str]) -> dict[str, Job]:
    with db.session_scope() as session:
        found = session.scalars(select(Job).where(Job.id.in_(ids))).all()
        return {job.id: job for job in found}


def _redelivered(ids: list[str], workers: list[Worker]) -> set[str]:
    """Jobs whose message RabbitMQ gave out again: started from it, or skipped or put off
    by the worker that got it."""
    again = set().union(*(worker.delivered_again() for worker in workers)) & set(ids)
    return again | _started_redelivered(ids)


def _started_redelivered(ids: list[str]) -> set[str]:
    """Jobs that a worker started from a message RabbitMQ had given out before."""
    with db.session_scope() as session:
        rows = session.execute(
            select(JobEvent.job_id, JobEvent.kind, JobEvent.data).where(JobEvent.job_id.in_(ids))
        ).all()
    return {
        row.job_id
        for row in rows
        if row.kind == "redelivered" or (row.data or {}).get("redelivered") is True
    }


def _all_finished(ids: list[str]) -> bool:
    with db.session_scope() as session:
        unfinished = session.scalar(
            select(func.count())
            .select_from(Job)
            .where(Job.id.in_(ids), Job.state.not_in(("succeeded", "failed", "cancelled")))
        )
    time.sleep(0.5)  # Polled: leave the two cores to the workers.
    return unfinished == 0


def _depths(cluster: RabbitCluster, queues: tuple[str, ...]) -> dict[str, int]:
    connection = pika.BlockingConnection([pika.URLParameters(url) for url in cluster.urls()])
    try:
        channel = connection.channel()
        return {q: channel.queue_declare(q, passive=True).method.message_count for q in queues}
    finally:
        connection.close()


def _consumer_nodes(cluster: RabbitCluster, queue: str) -> list[str]:
    """The node each consumer of ``queue`` is connected through (one entry per consumer)."""
    via = cluster.any_alive()

    def rows(*command: str) -> list[dict[str, Any]]:
        text = cluster.rabbitmqctl(via, *command, "--formatter", "json")
        return list(json.loads(text or "[]"))

    channels = {row["pid"]: row["name"] for row in rows("list_channels", "pid", "name")}
    by_port = {cluster.amqp_port(name): name for name in cluster.node_names}
    nodes = []
    for row in rows("list_consumers", "-p", "/", "queue_name", "channel_pid"):
        name = channels.get(row["channel_pid"], "")
        # A channel's name is "client:port -> server:port (n)": the server port names the node.
        found = re.search(r"-> [^ ]+:(\d+) ", name)
        if row["queue_name"] == queue and found:
            nodes.append(by_port[int(found.group(1))])
    return nodes


def _both_consumers_of_default(cluster: RabbitCluster) -> list[str]:
    """The nodes the two workers consume `default` through, once both do: a worker logs
    that it is ready before its consumer threads connect."""

    def both() -> list[str] | None:
        nodes = _consumer_nodes(cluster, "default")
        return nodes if len(nodes) == 2 else None

    return wait_until(both, 60, "both workers consuming default")


def _report(title: str, numbers: dict[str, Any]) -> None:
    print(f"\n{title}: " + ", ".join(f"{key}={value}" for key, value in numbers.items()))


def test_a_killed_broker_node_loses_no_job(
    cluster: RabbitCluster, database_url: str, clean_db: str, tmp_path: Path
) -> None:
    jobs = 2000
    env = _quorum_env(cluster.url_list(heartbeat=5), database_url)
    workers = [Worker(tmp_path / f"worker-{n}.log", env) for n in range(2)]
    api = ServedApi(BIN, tmp_path / "api.log", env)
    token = create_token("acme", {"jobs:read", "jobs:write"})
    admin = create_token("ops", {"admin"})
    try:
        leader = cluster.leader_of("default")
        # Connections go to the nodes in random order: restart a worker until one consumes
        # `default` through the leader, so that killing it catches jobs in flight.
        for _ in range(20):
            if leader in _both_consumers_of_default(cluster):
                break
            workers[0].stop()
            workers[0] = Worker(workers[0].log, env)
        assert leader in _both_consumers_of_default(cluster)
        submitter = Submitter(api, token, seconds=0.05)
        threads = submitter.in_threads(jobs, threads=4)
        wait_until(lambda: len(submitter.accepted) >= jobs // 2, 120, "half the jobs accepted")
        killed_at = len(submitter.accepted)
        cluster.kill(leader)  # While submissions go on and workers hold messages.
        for thread in threads:
            thread.join(300)
        accepted = list(submitter.accepted)
        wait_until(lambda: _all_finished(accepted), 300, "every accepted job to finish")
        new_leader = cluster.leader_of("default")

        finished = _jobs(accepted)
        completions: collections.Counter[str] = collections.Counter()
        for worker in workers:
            completions.update(worker.completions())
        states = collections.Counter(job.state for job in finished.values())
        attempts = collections.Counter(job.attempts for job in finished.values())
        redelivered = _redelivered(accepted, workers)
        _report(
            "killed the leader of 'default'",
            {
                "accepted": len(accepted),
                "refused": dict(submitter.refused),
                "killed_after": killed_at,
                "leader": f"{leader} -> {new_leader}",
                "states": dict(states),
                "attempts": dict(sorted(attempts.items())),
                "redelivered": len(redelivered),
                "ran_twice": sum(1 for n in completions.values() if n > 1),
                "lost": len(accepted) - states["succeeded"],
            },
        )
        assert len(accepted) + sum(submitter.refused.values()) == jobs
        assert len(finished) == len(accepted)
        assert states == {"succeeded": len(accepted)}  # lost = 0
        assert max(attempts) <= 2
        assert all(completions[job_id] == 1 for job_id in accepted)  # none ran twice
        assert new_leader != leader

        cluster.start(leader)  # It restarts and rejoins; the queue has 3 members again.
        assert set(cluster.online("default")) == set(cluster.node_names)

        # Dead-lettering still works on the cluster, and a re-drive too.
        status, _h, failing = api.call(
            "POST",
            "/v1/jobs",
            {"actor": "diagnostics.fail", "kwargs": {"times": 1}, "max_retries": 0},
            {"Authorization": f"Bearer {token}"},
        )
        assert status in (201, 202), failing
        wait_until(lambda: _jobs([failing["id"]])[failing["id"]].state == "failed", 30, "failure")
        wait_until(
            lambda: _depths(cluster, ("default.XQ",))["default.XQ"] == 1, 30, "the dead letter"
        )
        status, _h, redriven = api.call(
            "POST",
            "/v1/dead-letters/redrive",
            {"actor": "diagnostics.fail"},
            {"Authorization": f"Bearer {admin}"},
        )
        assert (status, redriven["count"]) == (200, 1), redriven
        wait_until(
            lambda: _jobs([failing["id"]])[failing["id"]].state == "succeeded", 30, "re-drive"
        )
        wait_until(
            lambda: set(_depths(cluster, ("default", "default.DQ", "default.XQ")).values()) == {0},
            30,
            "every queue empty",
        )
    finally:
        api.stop()
        for worker in workers:
            worker.stop()


def _database_url_inside(host: WorkerHost, database_url: str) -> str:
    """``database_url`` as a process in ``host`` reaches it (SQLite: the same file)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        return database_url
    forwarded = host.forward(url.port or 5432, url.host or "127.0.0.1")
    address, port = forwarded.rsplit(":", 1)
    return url.set(host=address, port=int(port)).render_as_string(hide_password=False)


def test_a_worker_host_cut_off_from_the_broker_loses_no_job_and_recovers(
    cluster: RabbitCluster, database_url: str, clean_db: str, tmp_path: Path
) -> None:
    available, why = netns_available()
    require(available, f"network namespaces ({why})")
    jobs, seconds, partition = 300, 0.5, 10.0
    with WorkerHost() as cut_host, WorkerHost() as other_host:
        workers: dict[str, Worker] = {}
        api = ServedApi(BIN, tmp_path / "api.log", _quorum_env(cluster.url_list(), database_url))
        token = create_token("acme", {"jobs:read", "jobs:write"})
        try:
            # Every job is queued before the workers start: the cut host then holds a full
            # prefetch when it is cut off, however fast submits go on this machine.
            submitter = Submitter(api, token, seconds=seconds)
            for thread in submitter.in_threads(jobs, threads=2):
                thread.join(120)
            for name, host in (("cut", cut_host), ("other", other_host)):
                # Heartbeats every 2 s: RabbitMQ drops a silent host's connections in ~4-6
                # s, within the partition, and hands its messages to the other host.
                env = _quorum_env(
                    cluster.url_list(host=host.broker_address, heartbeat=2),
                    _database_url_inside(host, database_url),
                )
                workers[name] = Worker(tmp_path / f"worker-{name}.log", env, host)
            wait_until(
                lambda: sum(workers["cut"].completions().values()) >= 10, 60, "the cut host at work"
            )
            cut_host.partition(broker=True, services=False)
            time.sleep(partition)
            cut_host.heal()
            healed_at = workers["cut"].log.stat().st_size
            accepted = list(submitter.accepted)
            wait_until(lambda: _all_finished(accepted), 300, "every accepted job to finish")

            # The healed host takes jobs again.
            later = Submitter(api, token, seconds=0.05)
            deadline = time.monotonic() + 120
            while not workers["cut"].completions(since=healed_at):
                assert time.monotonic() < deadline, "the healed host ran no job again"
                later.submit(8)
                time.sleep(1)
            wait_until(lambda: _all_finished(later.accepted), 60, "the later jobs to finish")

            finished = _jobs(accepted)
            states = collections.Counter(job.state for job in finished.values())
            redelivered = _redelivered(accepted, list(workers.values()))
            completions: collections.Counter[str] = collections.Counter()
            for worker in workers.values():
                completions.update(worker.completions())
            not_recorded = collections.Counter(NOT_RECORDED.findall(workers["cut"].log.read_text()))
            _report(
                "cut a worker host off for 10 s",
                {
                    "accepted": len(accepted),
                    "states": dict(states),
                    "attempts": dict(
                        sorted(collections.Counter(j.attempts for j in finished.values()).items())
                    ),
                    "redelivered": len(redelivered),
                    "ran_twice": sum(1 for job_id in accepted if completions[job_id] > 1),
                    "stale_outcomes_on_cut_host": sum(not_recorded.values()),
                    "lost": len(accepted) - states["succeeded"],
                },
            )
            assert len(accepted) == jobs
            assert states == {"succeeded": jobs}  # lost = 0
            # The cut host's unacked messages went to the other host, which ran none of
            # those the cut host had finished or was still running.
            assert workers["other"].delivered_again(), "no message of the cut host came back"
            assert all(finished[job_id].attempts <= 2 for job_id in redelivered)
            assert all(completions[job_id] == 1 for job_id in accepted)
        finally:
            api.stop()
            for worker in workers.values():
                worker.stop()
