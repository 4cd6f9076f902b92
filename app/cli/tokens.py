"""``jobstack tokens``: API bearer tokens."""

from __future__ import annotations

import click

from app.tokens import TokenError, create_token


@click.group("tokens")
def tokens_group() -> None:
    """Manage REST API tokens."""


@tokens_group.command("create")
@click.option("--tenant", required=True, help="Tenant whose jobs the token reaches.")
@click.option(
    "--scopes",
    required=True,
    help="Comma-separated: jobs:read, jobs:write, admin (admin sees every tenant).",
)
@click.option("--description", default=None, help="What the token is for.")
def create_command(tenant: str, scopes: str, description: str | None) -> None:
    """Create a token and print it once: only its hash is stored."""
    try:
        token = create_token(
            tenant, {s.strip() for s in scopes.split(",") if s.strip()}, description
        )
    except TokenError as error:
        raise click.ClickException(str(error)) from None
    click.echo(token)
