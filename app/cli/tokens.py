"""``jobstack tokens``: API bearer tokens."""

from __future__ import annotations

import click

from app.tokens import TokenError, create_token, list_tokens, revoke_token


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


@tokens_group.command("list")
@click.option("--tenant", default=None, help="Only this tenant's tokens.")
def list_command(tenant: str | None) -> None:
    """List tokens: id, tenant, scopes, created, revoked (never the token itself)."""
    for token in list_tokens(tenant):
        revoked = token.revoked_at.isoformat(timespec="seconds") if token.revoked_at else "-"
        click.echo(
            f"{token.id}  {token.tenant}  {token.scopes}  "
            f"created {token.created_at.isoformat(timespec='seconds')}  revoked {revoked}  "
            f"{token.description or ''}".rstrip()
        )


@tokens_group.command("revoke")
@click.argument("token_id")
def revoke_command(token_id: str) -> None:
    """Revoke the token TOKEN_ID (from 'jobstack tokens list'); its streams end too."""
    try:
        revoke_token(token_id)
    except TokenError as error:
        raise click.ClickException(str(error)) from None
    click.echo(f"revoked {token_id}")
