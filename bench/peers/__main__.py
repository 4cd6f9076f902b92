"""jobstack against its peers on the same machine and servers, in one table.

    python -m bench.peers [-n 5000] [--repeat 3] [--only jobstack-postgres,oban,...]

The rows: bare Dramatiq (no record: the ceiling), jobstack on PostgreSQL and on SQLite,
and the peers that keep a record of every job — Oban for Python, Celery (database result
backend, ``track_started``), Procrastinate. Each peer gets its own venv under
bench/.venvs/<peer> (made once, pinned versions); jobstack and bare Dramatiq run in the
project's. Every runner (bench/peers/runners/<runner>.py) runs as a subprocess: a fresh
database, N no-op jobs filled first, the worker started, the time from the first job
started to the last job recorded finished (worker start-up excluded), the CPU that the
worker, PostgreSQL and RabbitMQ used meanwhile (from /proc), and a check that the
system's own table holds a finished row per job. The project's venv never imports a
peer. The table (median and range over the repetitions, interleaved) goes to stdout,
the numbers to bench/results/peers-<time>.json.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.services import write_results

ROOT = Path(__file__).resolve().parents[2]
VENVS = ROOT / "bench" / ".venvs"
RUN_TIMEOUT = 1800


@dataclass(frozen=True)
class Peer:
    name: str
    #: Its runner: bench/peers/runners/<runner>.py, and the arguments it is given.
    runner: str
    #: Pinned requirements, installed into bench/.venvs/<name>; none: the project's venv.
    requirements: tuple[str, ...] = ()
    runner_arguments: tuple[str, ...] = ()
    #: The smallest Python the peer installs on.
    min_python: tuple[int, int] = (3, 11)


PEERS = {
    peer.name: peer
    for peer in (
        Peer("bare-dramatiq", "bare_runner"),
        Peer("jobstack-postgres", "jobstack_runner", runner_arguments=("--backend", "postgres")),
        Peer("jobstack-sqlite", "jobstack_runner", runner_arguments=("--backend", "sqlite")),
        Peer(
            "oban",
            "oban_runner",
            ("oban==0.7.0", "psycopg[binary]==3.3.9"),
            min_python=(3, 12),
        ),
        Peer(
            "celery",
            "celery_runner",
            ("celery==5.7.0", "sqlalchemy==2.1.9", "psycopg[binary]==3.3.9"),
        ),
        Peer(
            "procrastinate",
            "procrastinate_runner",
            ("procrastinate==3.10.0", "psycopg[binary]==3.3.9"),
        ),
    )
}

#: The drain targets of the performance issue: (row, compared with, at least).
TARGETS = (("jobstack-postgres", "oban", 1.5), ("jobstack-postgres", "bare-dramatiq", 0.5))


def _arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.peers", description=__doc__)
    parser.add_argument("-n", type=int, default=5000, help="jobs per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per peer")
    parser.add_argument(
        "--only", default=",".join(PEERS), help=f"comma-separated, of {', '.join(PEERS)}"
    )
    args = parser.parse_args()
    args.only = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in args.only if name not in PEERS]
    if unknown:
        parser.error(f"unknown peer(s): {', '.join(unknown)}")
    return args


def _python_version(python: str) -> tuple[int, int] | None:
    try:
        out = subprocess.run(
            [python, "-c", "import sys; print(*sys.version_info[:2])"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.split()
    except (OSError, subprocess.SubprocessError):
        return None  # A pyenv shim for a version not selected fails here, say.
    return int(out[0]), int(out[1])


def find_python(peer: Peer) -> str | None:
    """The Python a peer's venv is made with: the project's own (3.11) for most, the
    ``python3.12`` found on PATH or under pyenv for Oban; ``None`` when there is none."""
    if peer.min_python <= sys.version_info[:2]:
        return str(getattr(sys, "_base_executable", sys.executable))
    wanted = f"python{peer.min_python[0]}.{peer.min_python[1]}"
    candidates = [shutil.which(wanted)]
    candidates += sorted(glob.glob(os.path.expanduser(f"~/.pyenv/versions/*/bin/{wanted}")))
    for candidate in candidates:
        if candidate and _python_version(candidate) == peer.min_python:
            return candidate
    return None


def ensure_venv(peer: Peer, python: str) -> Path:
    """bench/.venvs/<peer> with the pinned requirements; made once, re-installed only
    when the pins change. Its Python (the project's own for jobstack and bare Dramatiq)."""
    if not peer.requirements:
        return Path(sys.executable)
    venv = VENVS / peer.name
    bin_python = venv / "bin" / "python"
    pins = venv / ".bench-pins"
    wanted = "\n".join(peer.requirements)
    if bin_python.exists() and pins.exists() and pins.read_text() == wanted:
        return bin_python
    print(f"{peer.name}: making {venv.relative_to(ROOT)} with {python}", flush=True)
    if not bin_python.exists():
        subprocess.run([python, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(bin_python), "-m", "pip", "install", "--quiet", *peer.requirements], check=True
    )
    pins.write_text(wanted)
    return bin_python


def ensure_celery_vhost() -> dict[str, str]:
    """Celery's broker: a vhost of its own (``bench-celery``) when rabbitmqctl can make
    one, else the default vhost with a queue name of its own."""
    vhost = "bench-celery"
    try:
        listed = subprocess.run(
            ["rabbitmqctl", "-q", "list_vhosts"], capture_output=True, text=True, timeout=60
        )
        if vhost not in listed.stdout.split():
            subprocess.run(["rabbitmqctl", "add_vhost", vhost], check=True, timeout=60)
        subprocess.run(
            ["rabbitmqctl", "set_permissions", "-p", vhost, "guest", ".*", ".*", ".*"],
            check=True,
            capture_output=True,
            timeout=60,
        )
    except (OSError, subprocess.SubprocessError):
        return {
            "BENCH_CELERY_BROKER": "amqp://guest:guest@127.0.0.1:5672/%2F",
            "BENCH_CELERY_QUEUE": "bench-celery-peer",
        }
    return {"BENCH_CELERY_BROKER": f"amqp://guest:guest@127.0.0.1:5672/{vhost}"}


def run_once(peer: Peer, python: Path, jobs: int, env: dict[str, str]) -> dict[str, Any]:
    """One run of the peer's runner; its JSON line, with ``ok`` false when it failed or
    did not find a finished row per job."""
    process = subprocess.run(
        [
            str(python),
            "-m",
            f"bench.peers.runners.{peer.runner}",
            "-n",
            str(jobs),
            *peer.runner_arguments,
        ],
        cwd=ROOT,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=RUN_TIMEOUT,
    )
    lines = [line for line in process.stdout.splitlines() if line.startswith("{")]
    if process.returncode != 0 or not lines:
        tail = (process.stderr or process.stdout).strip().splitlines()[-5:]
        return {"peer": peer.name, "ok": False, "error": " | ".join(tail)}
    row: dict[str, Any] = json.loads(lines[-1])
    row["ok"] = row["rows_checked"] == jobs
    if not row["ok"]:
        row["error"] = f"{row['rows_checked']} finished rows for {jobs} jobs"
    return row


def summarise(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    good = [run for run in runs if run["ok"]]
    summary: dict[str, Any] = {"peer": name, "runs": runs}
    if len(good) != len(runs) or not good:
        summary["status"] = "failed: " + "; ".join(
            str(run.get("error")) for run in runs if not run["ok"]
        )
    else:
        rates = [run["jobs_per_second"] for run in good]
        cpu = {
            part: statistics.median(run["cpu_ms_per_job"][part] for run in good)
            for part in good[0]["cpu_ms_per_job"]
        }
        summary.update(
            status="ok",
            version=good[0]["version"],
            python=good[0]["python"],
            median=statistics.median(rates),
            min=min(rates),
            max=max(rates),
            cpu_ms_per_job=cpu,
            peak_rss_mib=max(run["peak_rss_mib"] for run in good),
        )
    return summary


def main() -> None:
    args = _arguments()
    rows: dict[str, dict[str, Any]] = {}
    ready: dict[str, Path] = {}
    env: dict[str, str] = {}
    for name in args.only:
        peer = PEERS[name]
        python = find_python(peer)
        if python is None:
            wanted = f"python{peer.min_python[0]}.{peer.min_python[1]}"
            print(f"{name}: skipped, no {wanted} found", flush=True)
            rows[name] = {"peer": name, "status": f"skipped: no {wanted}", "runs": []}
            continue
        ready[name] = ensure_venv(peer, python)
        if name == "celery":
            env.update(ensure_celery_vhost())
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ready}
    # Repetitions interleaved (celery, procrastinate, oban, celery, …): a drift in the
    # machine's load spreads over every peer rather than landing on one.
    for repetition in range(args.repeat):
        for name, venv_python in ready.items():
            run = run_once(PEERS[name], venv_python, args.n, env)
            runs[name].append(run)
            rate = f"{run['jobs_per_second']:.0f} jobs/s" if run["ok"] else run["error"]
            print(f"{name} run {repetition + 1}/{args.repeat}: {rate}", flush=True)
    for name in ready:
        rows[name] = summarise(name, runs[name])
    ordered = [rows[name] for name in args.only]
    _print(ordered, args)
    _write(ordered, args)


def _print(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    print(f"\n{os.cpu_count()} cores, {args.n} no-op jobs, {args.repeat} runs each (interleaved)")
    print(
        f"  {'system':<18} {'version':<8} {'median jobs/s':>13} {'min–max':>12}"
        f" {'CPU ms/job: worker':>19} {'PostgreSQL':>10} {'RabbitMQ':>9} {'all':>6}"
        f" {'peak RSS':>9}"
    )
    for row in rows:
        if row["status"] != "ok":
            print(f"  {row['peer']:<18} {row['status']}")
            continue
        spread = f"{row['min']:.0f}–{row['max']:.0f}"
        cpu = row["cpu_ms_per_job"]
        print(
            f"  {row['peer']:<18} {row['version']:<8} {row['median']:>13.0f} {spread:>12}"
            f" {cpu['worker']:>19.3f} {cpu['postgres']:>10.3f} {cpu['rabbitmq']:>9.3f}"
            f" {sum(cpu.values()):>6.3f} {row['peak_rss_mib']:>5.0f} MiB"
        )
    medians = {row["peer"]: row["median"] for row in rows if row["status"] == "ok"}
    for subject, other, goal in TARGETS:
        if subject in medians and other in medians:
            ratio = medians[subject] / medians[other]
            verdict = "met" if ratio >= goal else "MISSED"
            print(f"  {subject} / {other}: {ratio:.2f}x (target >= {goal}x) {verdict}")


def _write(rows: list[dict[str, Any]], args: argparse.Namespace) -> None:
    arguments = {"n": args.n, "repeat": args.repeat, "only": args.only}
    medians = {row["peer"]: row["median"] for row in rows if row["status"] == "ok"}
    ratios = {
        f"{subject} / {other}": medians[subject] / medians[other]
        for subject, other, _goal in TARGETS
        if subject in medians and other in medians
    }
    write_results("peers", arguments, {"peers": rows, "ratios": ratios})


if __name__ == "__main__":
    main()
