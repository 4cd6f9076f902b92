"""The ``jobstack`` command: run the stack (``up``, ``api``), migrate (``db``), submit and
inspect jobs, manage tokens, webhook secrets and dead letters.

:mod:`gunicorn_conf` is the gunicorn configuration ``jobstack api`` starts the server with.
"""

from __future__ import annotations

import click

from app.cli.api import api_command
from app.cli.db import db_group
from app.cli.dlq import dlq_group
from app.cli.jobs import jobs_group, submit_command
from app.cli.tokens import tokens_group
from app.cli.up import up_command
from app.cli.webhooks import webhooks_group
from app.logs import configure_logging


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """jobstack: durable background jobs on Dramatiq and RabbitMQ."""
    configure_logging()


main.add_command(db_group)
main.add_command(submit_command)
main.add_command(jobs_group)
main.add_command(up_command)
main.add_command(tokens_group)
main.add_command(api_command)
main.add_command(dlq_group)
main.add_command(webhooks_group)
