"""``make bench``: jobstack against bare Dramatiq, and the targets of its performance issue.

    python -m bench [-n 10000] [-p 1] [-t 8] [--posts 3000] [--clients 16]
                    [--batch-jobs 20000] [--rate 100] [--seconds 10]

Everything runs on the local RabbitMQ and PostgreSQL, in one invocation; the table goes
to stdout and the numbers to bench/results/bench-<time>.json.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import api_load, drain, observed
from bench.services import write_results

#: (what, key in the results, target, whether higher is better)
#: The targets of the performance issue (the drain against the peers: python -m bench.peers).
TARGETS = [
    ("drain, PostgreSQL vs bare", "drain_ratio_postgres", 0.5, True),
    ("traces+metrics slowdown", "observability_cost", 0.15, False),
    ("batch submission (jobs/s)", "batch_per_second", 8000, True),
    ("single POST (jobs/s)", "single_per_second", 800, True),
    ("submit-to-start p50 (ms)", "latency_p50_ms", 5, False),
    ("submit-to-start p99 (ms)", "latency_p99_ms", 25, False),
    ("worker peak RSS (MiB)", "worker_rss_mib", 80, False),
    ("commits per job", "commits_per_job", 3, False),
]


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("-n", type=int, default=10000, help="messages per drain run")
    parser.add_argument("-p", type=int, default=1, help="worker processes")
    parser.add_argument("-t", type=int, default=8, help="worker threads")
    parser.add_argument("--posts", type=int, default=3000, help="jobs sent by single POSTs")
    parser.add_argument("--clients", type=int, default=16, help="concurrent API clients")
    parser.add_argument("--batch-jobs", type=int, default=20000, help="jobs sent by batch")
    parser.add_argument("--rate", type=float, default=100, help="jobs/s for the latency run")
    parser.add_argument("--seconds", type=float, default=10, help="length of the latency run")
    parser.add_argument(
        "--observed-rounds", type=int, default=3, help="rounds of off/on runs compared"
    )
    parser.add_argument(
        "--metrics-port", type=int, default=19191, help="worker metrics port (observed run)"
    )
    return parser.parse_args()


def main() -> None:
    args = _arguments()
    with tempfile.TemporaryDirectory(prefix="jobstack-bench-") as scratch:
        work = Path(scratch)
        drains = [drain.bare(args.n, args.p, args.t, work)]
        for backend in ("postgres", "sqlite"):
            drains.append(drain.jobstack(backend, args.n, args.p, args.t, work))
        # The PostgreSQL run again with traces and metrics on: their cost, same run.
        observing = observed.compare(
            args.n,
            args.p,
            args.t,
            work,
            first_off=drains[1],
            rounds=args.observed_rounds,
            metrics_port=args.metrics_port,
        )
        drains.append(observing.pop("first_on"))
        with api_load.Api(work) as api:
            single = api_load.single_posts(api, args.posts, args.clients)
            batch = api_load.batch_posts(api, args.batch_jobs, 2)
            latency = api_load.latency(api, args.rate, args.seconds, args.p, args.t)

    baseline = drains[0]["per_second"]
    for row in drains:
        row["ratio_vs_bare"] = row["per_second"] / baseline
    postgres = drains[1]
    summary = {
        "drain_ratio_postgres": postgres["ratio_vs_bare"],
        "observability_cost": observing["slowdown"]["traces+metrics"],
        "batch_per_second": batch["per_second"],
        "single_per_second": single["per_second"],
        "latency_p50_ms": latency["p50_ms"],
        "latency_p99_ms": latency["p99_ms"],
        "worker_rss_mib": postgres["worker_peak_rss_mib"],
        "commits_per_job": single["commits_per_job"] + postgres["worker_commits_per_job"],
    }
    results = Results(args, drains, observing, single, batch, latency, summary)
    _print(results)
    _write(results)


@dataclass(frozen=True)
class Results:
    args: argparse.Namespace
    drains: list[dict[str, Any]]
    observability: dict[str, Any]
    single: dict[str, Any]
    batch: dict[str, Any]
    latency: dict[str, Any]
    summary: dict[str, float]


def _print(results: Results) -> None:
    args, drains, single, batch, latency, summary = (
        results.args,
        results.drains,
        results.single,
        results.batch,
        results.latency,
        results.summary,
    )
    print(f"\n{os.cpu_count()} cores, dramatiq -p {args.p} -t {args.t}\n")
    print(f"drain of {args.n} no-op jobs (worker start-up excluded)")
    print(
        f"  {'system':<36} {'seconds':>8} {'jobs/s':>8} {'vs bare':>8} {'peak RSS':>9}"
        f" {'CPU/job':>8}"
    )
    for row in drains:
        cpu = row.get("worker_cpu_ms_per_job")
        print(
            f"  {row['system']:<36} {row['seconds']:>8.2f} {row['per_second']:>8.0f} "
            f"{row['ratio_vs_bare']:>7.2f}x {row['worker_peak_rss_mib']:>6.0f} MiB"
            f" {f'{cpu:.2f} ms' if cpu is not None else '':>8}"
        )
    seen = results.observability
    print(
        f"\nobservability on vs off (PostgreSQL, {len(seen['per_second']['off'])} rounds, medians)"
    )
    print(f"  {'worker':<20} {'drain jobs/s (each run)':<28} {'CPU ms/job (each run)':<24} cost")
    for label, rates in seen["per_second"].items():
        cpus = seen["cpu_ms_per_job"][label]
        each_rate = ", ".join(f"{value:.0f}" for value in rates)
        each_cpu = ", ".join(f"{value:.2f}" for value in cpus)
        cost = (
            f"{100 * seen['slowdown'][label]:.1f} % slower,"
            f" {100 * seen['cpu_increase'][label]:+.1f} % CPU"
            if label in seen["slowdown"]
            else ""
        )
        print(f"  {label:<20} {each_rate:<28} {each_cpu:<24} {cost}")
    print("\nsubmission through the API (gunicorn, PostgreSQL)")
    for row in (single, batch):
        print(
            f"  {row['system']:<44} {row['per_second']:>7.0f} jobs/s  "
            f"{row['commits_per_job']:.2f} commits/job"
        )
    print(
        f"\n{latency['system']}: p50 {latency['p50_ms']:.1f} ms, p99 {latency['p99_ms']:.1f} ms,"
        f" max {latency['max_ms']:.1f} ms ({latency['jobs']} jobs)"
    )
    print(
        f"commits per job, PostgreSQL: {single['commits_per_job']:.2f} to submit (single POST)"
        f" + {drains[1]['worker_commits_per_job']:.2f} in the worker"
    )
    print(f"\n  {'target':<28} {'measured':>10} {'goal':>8}")
    for label, key, goal, higher in TARGETS:
        value = summary[key]
        met = value >= goal if higher else value <= goal
        sign = ">=" if higher else "<="
        print(f"  {label:<28} {value:>10.2f} {sign}{goal:>6} {'met' if met else 'MISSED'}")


def _write(results: Results) -> None:
    write_results(
        "bench",
        vars(results.args),
        {
            "drain": results.drains,
            "observability": results.observability,
            "submission": [results.single, results.batch],
            "latency": results.latency,
            "summary": results.summary,
        },
    )


if __name__ == "__main__":
    main()
