"""Drain rate on a 3-node RabbitMQ cluster with quorum queues, against one node.

N no-op jobs (PostgreSQL), drained by 1 and by 2 worker processes of 8 threads each, on:
the node on 5672 with classic queues (jobstack's default), the same node with quorum
queues (in a vhost of their own), and a 3-node cluster started here (tests'
RabbitCluster: ports, data and cookie of its own) with quorum queues and all three URLs.
Rounds alternate the setups, so that the machine's drift hits each alike; the table gives
each setup's median and range.

    python -m bench.cluster [--jobs 5000] [--rounds 2]      (make bench-cluster)

Each run is a child process (``--one``): jobstack reads its broker settings at import.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from bench.services import BROKER_URL, ROOT, write_results

QUORUM_VHOST = "jobstack-bench-quorum"
PROCESSES = (1, 2)
THREADS = 8


def _one(broker_url: str, queue_type: str, jobs: int, processes: int) -> dict[str, Any]:
    """One drain, in this process (a child of :func:`main`)."""
    os.environ["JOBSTACK_BROKER_URL"] = broker_url
    os.environ["JOBSTACK_QUEUE_TYPE"] = queue_type
    from bench import drain, services

    # Queue depths are read through the first node; none fails during a bench.
    services.BROKER_URL = broker_url.split(";")[0]
    with tempfile.TemporaryDirectory() as work:
        return drain.jobstack("postgres", jobs, processes, THREADS, Path(work))


def _run(setup: str, url: str, queue_type: str, jobs: int, processes: int) -> dict[str, Any]:
    command = [sys.executable, "-m", "bench.cluster", "--one", url, queue_type]
    command += ["--jobs", str(jobs), "--processes", str(processes)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"{setup} with {processes} process(es) failed:\n{done.stderr[-3000:]}")
    row: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    print(f"  {setup:<26} -p {processes}: {row['per_second']:,.0f} jobs/s", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--processes", type=int, default=1, help=argparse.SUPPRESS)
    parser.add_argument("--one", nargs=2, metavar=("URL", "TYPE"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        row = _one(args.one[0], args.one[1], args.jobs, args.processes)
        print(json.dumps(row, default=str))
        return

    sys.path.insert(0, str(ROOT))
    from tests.support.rabbit_cluster import RabbitCluster
    from tests.support.vhost import ensure_vhost

    base = BROKER_URL.split("?")[0].rsplit("/", 1)[0]
    single_quorum = ensure_vhost(f"{base}/{QUORUM_VHOST}")
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    with RabbitCluster() as cluster:
        setups = [
            ("one node, classic queues", BROKER_URL, "classic"),
            ("one node, quorum queues", f"{base}/{single_quorum}", "quorum"),
            ("3-node cluster, quorum", cluster.url_list(), "quorum"),
        ]
        for round_number in range(args.rounds):
            print(f"round {round_number + 1} of {args.rounds}", flush=True)
            for processes in PROCESSES:
                for setup, url, queue_type in setups:
                    row = _run(setup, url, queue_type, args.jobs, processes)
                    runs.setdefault((setup, processes), []).append(row)

    table = []
    for (setup, processes), rows in runs.items():
        rates = [row["per_second"] for row in rows]
        table.append(
            {
                "setup": setup,
                "processes": processes,
                "threads": THREADS,
                "median_jobs_per_second": statistics.median(rates),
                "range": [min(rates), max(rates)],
                "worker_cpu_ms_per_job": statistics.median(
                    row["worker_cpu_ms_per_job"] for row in rows
                ),
            }
        )
    print(f"\n{'setup':<26} {'-p':>3} {'median jobs/s':>14} {'range':>16}")
    for line in table:
        low, high = line["range"]
        print(
            f"{line['setup']:<26} {line['processes']:>3} "
            f"{line['median_jobs_per_second']:>14,.0f} {low:>7,.0f}–{high:<7,.0f}"
        )
    write_results(
        "cluster", {"jobs": args.jobs, "rounds": args.rounds, "threads": THREADS}, {"rows": table}
    )


if __name__ == "__main__":
    main()
