"""The harnesses of the cluster scenarios work: a 3-node RabbitMQ cluster whose quorum queue
loses no message when its leader is SIGKILLed, and a worker host in a network namespace
whose unacked message goes to another consumer when the host is cut off.

Both tests share one cluster (three Erlang nodes take 20–30 s to boot and join). They
print what they measure (run with ``-s`` to see it).
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pika
import psycopg
import pytest

from tests.support.netns import WorkerHost, netns_available
from tests.support.rabbit_cluster import (
    ClusterError,
    RabbitCluster,
    remove_leftovers,
    scripts_dir,
)
from tests.support.services import in_ci, postgres_admin_url, reachable, require
from tests.support.waiting import wait_until

# Like the scenario tests: kept out of the default run, run by tox -e quorum.
pytestmark = [pytest.mark.cluster, pytest.mark.acceptance]

QUORUM = {"x-queue-type": "quorum"}
PERSISTENT = pika.BasicProperties(delivery_mode=2)


@pytest.fixture(scope="module")
def cluster() -> Iterator[RabbitCluster]:
    require(scripts_dir() is not None, "rabbitmq-server (the RabbitMQ package)")
    # Nodes of an earlier run that was SIGKILLed would hold memory and ports.
    remove_leftovers()
    with RabbitCluster() as started:
        print(f"\ncluster {started.node_names} up: {started.timings}")
        yield started


def connect(urls: list[str]) -> pika.BlockingConnection:
    """A connection to the first node of ``urls`` that answers (pika tries them in order)."""
    return pika.BlockingConnection([pika.URLParameters(url) for url in urls])


def publish_confirmed(urls: list[str], queue: str, bodies: list[str]) -> None:
    """Publish ``bodies`` persistently; returns once the cluster confirmed every one."""
    with connect(urls) as connection:
        channel = connection.channel()
        # With confirms on, basic_publish raises unless the broker confirms the message.
        channel.confirm_delivery()
        for body in bodies:
            channel.basic_publish("", queue, body.encode(), PERSISTENT, mandatory=True)


def drain(urls: list[str], queue: str) -> list[str]:
    """Every message in ``queue``, acked."""
    bodies: list[str] = []
    with connect(urls) as connection:
        channel = connection.channel()
        while True:
            method, _, body = channel.basic_get(queue, auto_ack=False)
            if method is None:
                return bodies
            bodies.append(body.decode())
            channel.basic_ack(method.delivery_tag)


def test_quorum_queue_survives_its_leader_killed(cluster: RabbitCluster) -> None:
    first, second, _ = cluster.node_names
    with connect([cluster.url(first)]) as connection:
        connection.channel().queue_declare("harness", durable=True, arguments=QUORUM)
    sent = [f"message {n}" for n in range(100)]
    publish_confirmed([cluster.url(second)], "harness", sent)
    assert sorted(cluster.members("harness")) == sorted(cluster.node_names)
    leader = cluster.leader_of("harness")
    survivors = [name for name in cluster.node_names if name != leader]

    killed_at = time.monotonic()
    cluster.kill(leader)
    assert not cluster.alive(leader)

    # Publishing through the survivors succeeds once a new leader is elected.
    def probe_confirmed() -> bool:
        try:
            publish_confirmed([cluster.url(name) for name in survivors], "harness", ["probe"])
        except pika.exceptions.AMQPError:
            return False
        return True

    wait_until(probe_confirmed, 60, "a confirmed publish through the survivors")
    publish_after = time.monotonic() - killed_at

    def elected() -> str | None:
        try:
            name = cluster.leader_of("harness")
        except ClusterError:  # between two leaders
            return None
        return name if name != leader else None

    new_leader = wait_until(elected, 60, "a new leader")
    leader_after = time.monotonic() - killed_at
    assert new_leader in survivors

    # Every URL, the dead node's first: pika skips it and connects to the next one.
    received = drain([cluster.url(leader), *[cluster.url(name) for name in survivors]], "harness")
    assert sorted(received) == sorted([*sent, "probe"])

    cluster.start(leader)
    assert sorted(cluster.running_nodes()) == sorted(cluster.node_names)
    info = cluster.queue_info("harness")
    assert leader in info["members"]
    assert leader in info["online"]
    print(
        f"\nkilled leader {leader}: gone after {cluster.timings['kill']:.1f}s; "
        f"publish confirmed after {publish_after:.1f}s; new leader {new_leader} seen after "
        f"{leader_after:.1f}s; restart + rejoin took {cluster.timings['restart']:.1f}s"
    )


#: Runs inside the worker host: consumes without acking, and reconnects whenever its
#: connection is lost, printing what happens.
CONSUMER = """
import sys, time
import pika

urls, queue = sys.argv[1].split(";"), sys.argv[2]
while True:
    try:
        connection = pika.BlockingConnection([pika.URLParameters(url) for url in urls])
    except Exception as error:
        print("connect failed", type(error).__name__, flush=True)
        time.sleep(0.5)
        continue
    print("connected", flush=True)
    try:
        channel = connection.channel()
        channel.basic_qos(prefetch_count=1)
        for method, _, body in channel.consume(queue, inactivity_timeout=0.5):
            if method is not None:
                print("got", body.decode(), flush=True)
    except Exception as error:
        print("lost", type(error).__name__, flush=True)
"""


class Output:
    """A subprocess's stdout lines, collected by a thread as they come."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.lines: list[str] = []
        assert process.stdout is not None
        stream = process.stdout
        threading.Thread(target=self._read, args=(stream,), daemon=True).start()

    def _read(self, stream: IO[str]) -> None:
        # Closed here, at the end of the output, not by the host: no one reads it then.
        with stream:
            self.lines.extend(stream)

    def count(self, prefix: str) -> int:
        return sum(line.startswith(prefix) for line in list(self.lines))


def test_partitioned_worker_host_gives_its_message_back(
    cluster: RabbitCluster, tmp_path: Path
) -> None:
    available, why = netns_available()
    require(available, f"network namespaces ({why})")
    postgres = reachable(postgres_admin_url(), 5432)
    if in_ci():
        require(postgres, f"PostgreSQL at {postgres_admin_url()}")
    with connect(cluster.urls()) as connection:
        channel = connection.channel()
        channel.queue_declare("harness-netns", durable=True, arguments=QUORUM)
        channel.queue_purge("harness-netns")
    publish_confirmed(cluster.urls(), "harness-netns", ["held"])
    script = tmp_path / "consumer.py"
    script.write_text(CONSUMER)

    with WorkerHost() as host:
        # Small heartbeats so that both ends notice the partition within seconds;
        # short socket timeouts so that reconnection attempts do not hang for long.
        urls = cluster.url_list(host.broker_address, heartbeat=2, socket_timeout=2)
        consumer = host.popen(
            [sys.executable, "-u", str(script), urls, "harness-netns"],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        output = Output(consumer)
        wait_until(lambda: output.count("got held"), 30, "the worker host to get the message")
        # The broker sees the host's own address: the connection crossed the veth link.
        # (JSON gives addresses as Erlang tuples; the table gives "::ffff:10.231.N.2".)
        peers = cluster.rabbitmqctl(
            cluster.node_names[0], "list_connections", "peer_host", "--silent"
        ).split()
        assert {host.address, f"::ffff:{host.address}"} & set(peers), peers

        # The broker path only: the database stays reachable from the host.
        host.partition(broker=True, services=False)
        partitioned_at = time.monotonic()
        if postgres:
            database = host.forward(5432)
            admin = postgres_admin_url().replace("127.0.0.1:5432", database)
            check = host.run(
                sys.executable, "-c", f"import psycopg; psycopg.connect({admin!r}).close()"
            )
            assert check.returncode == 0, check.stderr
            with psycopg.connect(postgres_admin_url()):
                pass

        def redelivered() -> bool:
            with connect(cluster.urls()) as connection:
                channel = connection.channel()
                method, _, body = channel.basic_get("harness-netns", auto_ack=False)
                if method is None:
                    return False
                assert body == b"held" and method.redelivered
                channel.basic_ack(method.delivery_tag)
                return True

        wait_until(redelivered, 60, "the broker to give the host's message to another consumer")
        redelivered_after = time.monotonic() - partitioned_at

        host.heal()
        healed_at = time.monotonic()
        wait_until(lambda: output.count("connected") >= 2, 60, "the host to reconnect")
        reconnected_after = time.monotonic() - healed_at
        assert consumer.poll() is None
        assert output.count("got") == 1, output.lines
    print(
        f"\npartitioned host's message redelivered after {redelivered_after:.1f}s "
        f"(heartbeat 2s); host reconnected {reconnected_after:.1f}s after the heal"
    )
