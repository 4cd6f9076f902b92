"""``jobstack webhooks``: the secrets webhooks are signed with."""

from __future__ import annotations

import click

from app import db
from app.webhooks import secret_for


@click.group("webhooks")
def webhooks_group() -> None:
    """Webhook signing secrets."""


@webhooks_group.command("secret")
@click.option("--tenant", required=True)
@click.option("--rotate", is_flag=True, help="Replace the secret (old signatures stop verifying).")
def secret_command(tenant: str, rotate: bool) -> None:
    """Print the tenant's secret: verify X-Jobstack-Signature as sha256=HMAC(secret, body)."""
    with db.session_scope() as session:
        click.echo(secret_for(session, tenant, rotate=rotate))
