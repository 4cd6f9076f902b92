"""``jobstack dlq``: list and re-drive dead letters."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click

from app.operations.dead_letters import DeadLetterFilter, process


def _filter_options(command: Any) -> Any:
    for option in reversed(
        [
            click.option("--actor", help="Only this actor's messages."),
            click.option("--queue", help="Only this queue's dead letters."),
            click.option("--error-type", help="Only jobs that failed with this error type."),
            click.option(
                "--failed-after", type=click.DateTime(), help="UTC, e.g. 2026-11-22T10:00"
            ),
            click.option("--failed-before", type=click.DateTime(), help="UTC."),
            click.option(
                "--limit", type=click.IntRange(1, 100_000), default=1000, show_default=True
            ),
        ]
    ):
        command = option(command)
    return command


def _utc(moment: datetime | None) -> datetime | None:
    from datetime import UTC

    return None if moment is None else moment.replace(tzinfo=UTC)


def _run(redrive: bool, **options: Any) -> None:
    import actors  # noqa: F401  (declares the queues)
    from app.broker import broker

    wanted = DeadLetterFilter(
        actor=options["actor"],
        queue=options["queue"],
        error_type=options["error_type"],
        failed_after=_utc(options["failed_after"]),
        failed_before=_utc(options["failed_before"]),
    )
    found = process(broker, wanted, redrive=redrive, limit=options["limit"])
    for letter in found:
        click.echo(json.dumps(letter.as_dict(), default=str))
    verb = "re-drove" if redrive else "found"
    click.echo(f"{verb} {len(found)} dead letter(s)", err=True)


@click.group("dlq")
def dlq_group() -> None:
    """Dead-letter queues (<queue>.XQ)."""


@dlq_group.command("list")
@_filter_options
def list_command(**options: Any) -> None:
    """Print the matching dead letters as JSON lines (nothing is changed)."""
    _run(False, **options)


@dlq_group.command("redrive")
@_filter_options
@click.option("--dry-run", is_flag=True, help="Only print what would be re-driven.")
def redrive_command(dry_run: bool, **options: Any) -> None:
    """Queue the matching dead letters' jobs again, as new attempts."""
    _run(not dry_run, **options)
