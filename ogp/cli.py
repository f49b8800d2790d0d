"""`ogp`: the command line, and the composition root that names the components it drives.

Shared commands (migrations, topics) come from this package; the operator commands that belong to a service
(audit the ledger, rebuild a read model, create an admin) call into that service; the local stack's commands
come from ``infra.local.cli``. This module is the one place in ``ogp`` allowed to import a service
(the import contracts in pyproject.toml say so): everything else in ``ogp`` is shared and imports none.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Annotated

import typer
from sqlalchemy import create_engine

from command_api.identity.service import create_admin
from infra.local import cli as local_cli
from ledger_processor.audit import audit
from ogp.clients import async_engine
from ogp.console import console, err, friendly
from ogp.errors import ApiError
from ogp.provision import create_topics, migrate_database
from ogp.settings import get_settings
from projections.history.projector import rebuild

app = typer.Typer(
    help="One Gate Payment: local stack, services and operations.", no_args_is_help=True, pretty_exceptions_enable=False
)
# The local stack's commands (up, down, status, restart, logs, supervise, midtrans-sim, stack ...) at the top.
app.add_typer(local_cli.app)
admin_app = typer.Typer(help="Operator commands.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
projections_app = typer.Typer(help="Read models built from the ledger's events.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")


@app.command()
@friendly
def migrate(revision: Annotated[str, typer.Option(help="target revision")] = "head") -> None:
    """Apply database migrations (Alembic) to the configured database."""
    migrate_database(get_settings(), revision)


@app.command()
@friendly
def topics() -> None:
    """Create the Kafka topics (explicit partitions and configs); harmless when they exist."""
    create_topics(get_settings())


@app.command("audit")
@friendly
def audit_ledger(
    older_than: Annotated[
        int,
        typer.Option(
            help="seconds after which a transfer in flight, or a command or "
            "payment without a final state, fails the audit"
        ),
    ] = 600,
) -> None:
    """Check the ledger: double entry, balances equal their entries, none negative, nothing stranded."""
    settings = get_settings()
    engine = create_engine(settings.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            report = audit(
                conn, timedelta(seconds=older_than), timedelta(seconds=settings.payment_expiry_grace_seconds)
            )
    finally:
        engine.dispose()
    for line in report.lines():
        console.print(f"  {line}")
    console.print("[green]ledger OK[/green]" if report.ok else "[red]ledger INVARIANT VIOLATED[/red]")
    if not report.ok:
        raise typer.Exit(1)


@projections_app.command("rebuild")
@friendly
def projections_rebuild() -> None:
    """Empty historical_transactions and replay ogp.ledger-events.v1 from the start (stop the projector first)."""
    stats = asyncio.run(rebuild(get_settings()))
    console.print(f"  history rebuilt: {stats}")


@admin_app.command("create-user")
@friendly
def admin_create_user(
    username: Annotated[str, typer.Option(prompt=True)],
    email: Annotated[str, typer.Option(prompt=True)],
    phone: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[
        str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True, envvar="OGP_ADMIN_PASSWORD")
    ],
) -> None:
    """Create a user with the admin role (the only way to get it) and their wallet account."""

    async def create() -> int:
        engine = async_engine(get_settings().sqlalchemy_url)
        try:
            return await create_admin(engine, username, email, phone, password)
        finally:
            await engine.dispose()

    try:
        user_id = asyncio.run(create())
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    console.print(f"  admin {username} created (user id {user_id})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
