"""`ogp`: run the local stack and the services, migrate, and operate the ledger."""

from __future__ import annotations

import asyncio
import functools
import subprocess
import sys
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from ogp.settings import get_settings
from ogp.stack.process import PrerequisiteMissing, StackError

app = typer.Typer(help="One Gate Payment: local stack, services and operations.", no_args_is_help=True,
                  pretty_exceptions_enable=False)
stack_app = typer.Typer(help="The local infrastructure only: Kafka, PostgreSQL, Redis.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")
admin_app = typer.Typer(help="Operator commands.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
projections_app = typer.Typer(help="Read models built from the ledger's events.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")

console = Console()
err = Console(stderr=True)


def friendly(fn):
    """Turn expected operational failures into one red line and exit code 1, never a traceback."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (PrerequisiteMissing, StackError) as exc:
            err.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper


def _stack():
    from ogp.stack.local import LocalStack

    return LocalStack(get_settings())


def _runner():
    from ogp.stack.services import ServiceRunner

    return ServiceRunner(get_settings())


def _status_table(title: str, rows) -> Table:
    table = Table(title=title)
    for col in ("component", "where", "pid", "state"):
        table.add_column(col)
    for row in rows:
        colour = {"healthy": "green", "stopped": "dim", "unhealthy": "red"}[row.state]
        table.add_row(row.name, row.where, str(row.pid or "-"), f"[{colour}]{row.state}[/{colour}]")
    return table


@stack_app.command("up")
@friendly
def stack_up() -> None:
    """Start Kafka (KRaft), PostgreSQL and Redis; harmless when already running."""
    _stack().up(report=lambda line: console.print(f"  {line}"))


@stack_app.command("fetch")
@friendly
def stack_fetch() -> None:
    """Resolve the Kafka jars from Maven Central into the cache (done by `stack up` when needed)."""
    from ogp.stack.kafka import ensure_jars

    settings = get_settings()
    libs = ensure_jars(settings.kafka_version, settings.kafka_cache_dir)
    console.print(f"  kafka {settings.kafka_version}: {len(list(libs.glob('*.jar')))} jars in {libs}")


@stack_app.command("down")
@friendly
def stack_down() -> None:
    """Stop the infrastructure this project started (by pid)."""
    _stack().down(report=lambda line: console.print(f"  {line}"))


@stack_app.command("status")
@friendly
def stack_status() -> None:
    """Show the infrastructure's processes and health."""
    rows = _stack().status()
    console.print(_status_table("stack", rows))
    if any(r.state != "healthy" for r in rows):
        raise typer.Exit(1)


@app.command()
@friendly
def migrate(revision: Annotated[str, typer.Option(help="target revision")] = "head") -> None:
    """Apply database migrations (Alembic) to the configured database."""
    from ogp.db.migrate import upgrade

    upgrade(get_settings().sqlalchemy_url, revision)
    console.print(f"  database migrated to {revision}")


@app.command()
@friendly
def topics() -> None:
    """Create the Kafka topics (explicit partitions and configs); harmless when they exist."""
    _ensure_topics()


def _ensure_topics() -> None:
    from ogp.stack.topics import ensure_topics, topic_specs

    settings = get_settings()
    created = asyncio.run(ensure_topics(settings.kafka_bootstrap, topic_specs(settings)))
    for spec in topic_specs(settings):
        mark = "created" if spec.name in created else "exists"
        console.print(f"  topic {spec.name} ({spec.partitions} partitions) {mark}")


def _seed_demo():
    from sqlalchemy import create_engine

    from ogp.db.seed import seed_demo

    settings = get_settings()
    engine = create_engine(settings.sqlalchemy_url)
    try:
        return seed_demo(engine, settings)
    finally:
        engine.dispose()


@app.command()
@friendly
def up() -> None:
    """Start everything: stack, migrations, topics, services and (in development) demo data."""
    settings = get_settings()
    console.print("[bold]infrastructure[/bold]")
    _stack().up(report=lambda line: console.print(f"  {line}"))
    console.print("[bold]database and topics[/bold]")
    migrate.__wrapped__("head")
    _ensure_topics()
    creds = _seed_demo() if settings.environment == "development" else None
    console.print("[bold]services[/bold]")
    runner = _runner()
    from ogp.stack.services import services

    for service in services(settings):
        runner.start(service)
        console.print(f"  {service.name:<16} {service.url or '(worker)'}"
                      + (f"   docs {service.url}/docs" if service.url else ""))
    # Last, so it never races the start-up above: from now on a dead or stuck service is restarted.
    runner.start_supervisor()
    console.print(f"  {'supervisor':<16} restarts a dead or stuck service (log: ogp logs supervisor)")
    if creds is not None:
        from ogp.demo import fund_demo_users

        funded = fund_demo_users(settings)
        _print_demo(creds)
        for username, balance in sorted(funded.items()):
            console.print(f"  wallet {username:<10} balance {balance:,.2f} IDR (topped up via Kafka)")
    console.print("\n[green]One Gate Payment is up.[/green] `ogp status` checks it; `ogp down` stops it.")


def _print_demo(creds) -> None:
    console.print("[bold]demo credentials (development only)[/bold]")
    for user in creds.users:
        console.print(f"  user   {user.username:<10} password {user.password}")
    for key in creds.api_keys:
        console.print(f"  apikey {key.company:<16} {key.plaintext}  ({key.rate_limit_per_minute} requests/minute)",
                      soft_wrap=True)


@app.command()
@friendly
def down() -> None:
    """Stop every service and the infrastructure this project started (by pid)."""
    runner = _runner()
    from ogp.stack.services import services

    # First, or it would start again what is being stopped.
    if runner.stop_supervisor():
        console.print("  supervisor stopped")
    for service in reversed(services(get_settings())):
        if runner.stop(service):
            console.print(f"  {service.name} stopped")
    _stack().down(report=lambda line: console.print(f"  {line}"))


@app.command()
@friendly
def status() -> None:
    """What runs where, and whether it is healthy (APIs probed on /ready, workers on their /health)."""
    stack_rows = _stack().status()
    service_rows = _runner().status()
    console.print(_status_table("infrastructure", stack_rows))
    console.print(_status_table("services", service_rows))
    if any(r.state != "healthy" for r in [*stack_rows, *service_rows]):
        raise typer.Exit(1)


@app.command()
@friendly
def restart(name: Annotated[str, typer.Argument(help="a service, the supervisor, or kafka, postgres, redis")]) -> None:
    """Restart one component (and only it): a service waits until its /health answers again."""
    stack = _stack()
    runner = _runner()
    components = {"kafka": stack.kafka, "postgres": stack.postgres, "redis": stack.redis}
    if name in components:
        component = components[name]
        component.stop()
        component.start()
        pid = component.process.pid()
    elif name == "supervisor":
        runner.stop_supervisor()
        pid = runner.start_supervisor()
    else:
        service = runner.get(name)
        runner.restart(service)
        pid = runner.process(service).pid()
    console.print(f"  {name} restarted (pid {pid})")


@app.command()
def supervise(
    interval: Annotated[float, typer.Option(help="seconds between checks")] = 2.0,
    unhealthy_after: Annotated[float, typer.Option(help="restart a service unhealthy for this long")] = 6.0,
) -> None:
    """Restart dead or stuck services until SIGTERM (`ogp up` runs this in the background)."""
    import signal
    import threading

    from ogp.logs import configure_logging
    from ogp.stack.supervisor import Supervisor

    configure_logging("supervisor")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Supervisor(_runner(), interval=interval, unhealthy_after=unhealthy_after).run(stop)


@app.command()
@friendly
def logs(
    service: Annotated[str, typer.Argument(help="a service or kafka, postgres, redis")],
    lines: Annotated[int, typer.Option("-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep following")] = False,
) -> None:
    """Tail a service's or a stack component's log."""
    stack = _stack()
    runner = _runner()
    components = {"kafka": stack.kafka.process, "postgres": stack.postgres.process, "redis": stack.redis.process,
                  "supervisor": runner.supervisor()}
    proc = components.get(service) or runner.process(runner.get(service))
    if not proc.log_file.exists():
        raise StackError(f"no log yet for {service} ({proc.log_file})")
    cmd = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(proc.log_file)]
    sys.exit(subprocess.call(cmd))


@app.command("audit")
@friendly
def audit_ledger(
    older_than: Annotated[int, typer.Option(help="seconds after which a transfer in flight, or a command or "
                                                 "payment without a final state, fails the audit")] = 600,
) -> None:
    """Check the ledger: double entry, balances equal their entries, none negative, nothing stranded."""
    from datetime import timedelta

    from sqlalchemy import create_engine

    from ledger_processor.audit import audit

    engine = create_engine(get_settings().sqlalchemy_url)
    try:
        with engine.connect() as conn:
            report = audit(conn, timedelta(seconds=older_than),
                           timedelta(seconds=get_settings().payment_expiry_grace_seconds))
    finally:
        engine.dispose()
    for line in report.lines():
        console.print(f"  {line}")
    console.print("[green]ledger OK[/green]" if report.ok else "[red]ledger INVARIANT VIOLATED[/red]")
    if not report.ok:
        raise typer.Exit(1)


@app.command("midtrans-sim")
def midtrans_sim(port: Annotated[int | None, typer.Option(help="default: OGP_MIDTRANS_SIM_PORT")] = None) -> None:
    """Run the Midtrans simulator (Snap, payment page, Core API, signed notifications) in the foreground."""
    import uvicorn

    from ogp.logs import configure_logging
    from ogp.midtrans_sim.app import create_app

    settings = get_settings()
    configure_logging("midtrans-sim")
    port = port or settings.midtrans_sim_port
    console.print(f"Midtrans simulator on http://{settings.host}:{port}; notifications to {settings.midtrans_webhook}")
    uvicorn.run(create_app(settings), host=settings.host, port=port, access_log=False)


@projections_app.command("rebuild")
@friendly
def projections_rebuild() -> None:
    """Empty historical_transactions and replay ogp.ledger-events.v1 from the start (stop the projector first)."""
    from projections.runner import rebuild

    stats = asyncio.run(rebuild(get_settings()))
    console.print(f"  history rebuilt: {stats}")


@admin_app.command("create-user")
@friendly
def admin_create_user(
    username: Annotated[str, typer.Option(prompt=True)],
    email: Annotated[str, typer.Option(prompt=True)],
    phone: Annotated[str, typer.Option(prompt=True)],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True,
                                          envvar="OGP_ADMIN_PASSWORD")],
) -> None:
    """Create a user with the admin role (the only way to get it) and their wallet account."""
    from sqlalchemy import update

    from command_api.identity import service
    from ogp.clients import async_engine
    from ogp.db.tables import users
    from ogp.errors import ApiError

    async def create() -> int:
        engine = async_engine(get_settings().sqlalchemy_url)
        try:
            registered = await service.register(engine, username, email, phone, password)
            async with engine.begin() as conn:
                await conn.execute(update(users).where(users.c.id == registered.user_id).values(is_admin=True))
            return registered.user_id
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
