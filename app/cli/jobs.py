"""``jobstack submit`` and ``jobstack jobs``: creating and inspecting jobs."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

import click

from app.errors import JobNotFound, SubmitError
from app.states import TERMINAL_STATES, JobState


def _json_option(value: str | None, name: str, kind: type) -> Any:
    if value is None:
        return kind()
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as error:
        raise click.BadParameter(f"not valid JSON: {error}", param_hint=name) from None
    if not isinstance(parsed, kind):
        raise click.BadParameter(f"must be a JSON {kind.__name__}", param_hint=name)
    return parsed


def _print_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, sort_keys=True, default=str))


@click.command("submit")
@click.argument("actor")
@click.option("--args", "args_json", help="Positional arguments as a JSON list, e.g. '[1, \"a\"]'.")
@click.option(
    "--kwargs", "kwargs_json", help="Keyword arguments as a JSON object, e.g. '{\"x\": 1}'."
)
@click.option("--wait", is_flag=True, help="Wait for a final state and print the job as JSON.")
@click.option("--timeout", type=float, default=None, help="With --wait: give up after SECONDS.")
def submit_command(
    actor: str,
    args_json: str | None,
    kwargs_json: str | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Submit a job for ACTOR (e.g. diagnostics.echo) and print its id.

    With --wait the exit status is 0 when the job succeeded, 1 when it failed or was
    cancelled, 2 when the wait timed out.
    """
    args = _json_option(args_json, "--args", list)
    kwargs = _json_option(kwargs_json, "--kwargs", dict)
    import actors  # noqa: F401  (registers the actors on the broker)
    from app.jobs import get_job, submit

    try:
        job = submit(actor, args, kwargs)
    except SubmitError as error:
        raise click.ClickException(str(error)) from None
    if not wait:
        click.echo(job.id)
        return
    deadline = None if timeout is None else time.monotonic() + timeout
    while JobState(job.state) not in TERMINAL_STATES:
        if deadline is not None and time.monotonic() > deadline:
            _print_json(job.to_dict())
            click.echo(f"timed out waiting for job {job.id}", err=True)
            sys.exit(2)
        time.sleep(0.2)
        job = get_job(job.id)
    _print_json(job.to_dict())
    sys.exit(0 if job.state == JobState.SUCCEEDED else 1)


@click.group("jobs")
def jobs_group() -> None:
    """Inspect jobs."""


@jobs_group.command("show")
@click.argument("job_id")
@click.option("--events", is_flag=True, help="Include the job's event history.")
def show_command(job_id: str, events: bool) -> None:
    """Print job JOB_ID as JSON."""
    from app.jobs import get_job, list_events

    try:
        job = get_job(job_id)
    except JobNotFound as error:
        raise click.ClickException(str(error)) from None
    data = job.to_dict()
    if events:
        data["events"] = [event.to_dict() for event in list_events(job_id)]
    _print_json(data)


@jobs_group.command("list")
@click.option("--state", type=click.Choice([state.value for state in JobState]), default=None)
@click.option("--limit", type=click.IntRange(1, 1000), default=20, show_default=True)
def list_command(state: str | None, limit: int) -> None:
    """List the newest jobs, one per line: id, state, actor, attempts, created."""
    from app.jobs import list_jobs

    for job in list_jobs(JobState(state) if state else None, limit):
        click.echo(
            f"{job.id}  {job.state:<9}  {job.actor:<28}  "
            f"attempts={job.attempts}  {job.created_at.isoformat()}"
        )
