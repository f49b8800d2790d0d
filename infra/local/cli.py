"""The local stack's commands: start, watch, restart and stop Kafka, PostgreSQL, Redis and every service.

``ogp/cli.py`` mounts these on the ``ogp`` command; the services are named once, in ``infra/local/services.py``.
"""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from typing import Annotated

import typer
import uvicorn
from rich.table import Table
from sqlalchemy import create_engine

from infra.local.demo import fund_demo_users
from infra.local.kafka import ensure_jars
from infra.local.monitoring import PROMETHEUS, LocalPrometheus
from infra.local.process import StackError, require
from infra.local.seed import seed_demo
from infra.local.services import ServiceRunner, services
from infra.local.stack import Component, ComponentStatus, LocalStack
from infra.local.supervisor import Supervisor
from infra.midtrans_sim.app import create_app as create_simulator
from ogp.console import console, friendly
from ogp.logs import configure_logging
from ogp.provision import create_topics, migrate_database
from ogp.settings import get_settings

app = typer.Typer(help="The local stack and services.", no_args_is_help=True)
stack_app = typer.Typer(help="The local infrastructure only: Kafka, PostgreSQL, Redis.", no_args_is_help=True)
app.add_typer(stack_app, name="stack")


def _stack() -> LocalStack:

    return LocalStack(get_settings())


def _runner() -> ServiceRunner:

    return ServiceRunner(get_settings())


def _prometheus() -> LocalPrometheus:
    return LocalPrometheus(get_settings())


def _start_monitoring() -> None:
    prometheus = _prometheus()
    prometheus.start(s.name for s in services(get_settings()) if s.serves_metrics)
    url = prometheus.url
    console.print(f"  {PROMETHEUS:<16} {url}   targets {url}/targets, alerts {url}/alerts")


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


def _seed_demo():
    settings = get_settings()
    engine = create_engine(settings.sqlalchemy_url)
    try:
        return seed_demo(engine, settings)
    finally:
        engine.dispose()


@app.command()
@friendly
def up(
    monitoring: Annotated[
        bool, typer.Option("--monitoring", help="also run Prometheus, scraping every service and evaluating the alerts")
    ] = False,
) -> None:
    """Start everything: stack, migrations, topics, services and (in development) demo data."""
    settings = get_settings()
    if monitoring:
        require(PROMETHEUS)  # before anything starts: a missing program is one line, not a half-started stack
    console.print("[bold]infrastructure[/bold]")
    _stack().up(report=lambda line: console.print(f"  {line}"))
    console.print("[bold]database and topics[/bold]")
    migrate_database(settings)
    create_topics(settings)
    creds = _seed_demo() if settings.environment == "development" else None
    console.print("[bold]services[/bold]")
    runner = _runner()
    for service in services(settings):
        runner.start(service)
        console.print(
            f"  {service.name:<16} {service.url or '(worker)'}" + (f"   docs {service.url}/docs" if service.url else "")
        )
    # Last, so it never races the start-up above: from now on a dead or stuck service is restarted.
    runner.start_supervisor()
    console.print(f"  {'supervisor':<16} restarts a dead or stuck service (log: ogp logs supervisor)")
    # Not supervised: an observer, not part of the payment path; `ogp status` shows it stopped if it dies.
    if monitoring:
        _start_monitoring()
    if creds is not None:
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
        console.print(
            f"  apikey {key.company:<16} {key.plaintext}  ({key.rate_limit_per_minute} requests/minute)", soft_wrap=True
        )


@app.command()
@friendly
def down() -> None:
    """Stop every service and the infrastructure this project started (by pid)."""
    runner = _runner()
    # First, or it would start again what is being stopped.
    if runner.stop_supervisor():
        console.print("  supervisor stopped")
    if _prometheus().stop():
        console.print(f"  {PROMETHEUS} stopped")
    for service in reversed(services(get_settings())):
        if runner.stop(service):
            console.print(f"  {service.name} stopped")
    _stack().down(report=lambda line: console.print(f"  {line}"))


@app.command()
@friendly
def status() -> None:
    """What runs where, whether it is healthy (APIs on /ready, workers on /health), and the key figures."""
    stack_rows = _stack().status()
    service_rows = _runner().status()
    prometheus = _prometheus()
    if prometheus.started():  # listed once `ogp up --monitoring` started it, until `ogp down`
        pid = prometheus.process.pid()
        service_rows.append(ComponentStatus(PROMETHEUS, prometheus.url, pid, pid is not None and prometheus.healthy()))
    console.print(_status_table("infrastructure", stack_rows))
    console.print(_status_table("services", service_rows))
    figures = Table(title="figures")
    figures.add_column("figure")
    figures.add_column("value", justify="right")
    for name, value in _runner().figures():
        figures.add_row(name, value)
    console.print(figures)
    if any(r.state != "healthy" for r in [*stack_rows, *service_rows]):
        raise typer.Exit(1)


@app.command()
@friendly
def restart(
    name: Annotated[str, typer.Argument(help="a service, the supervisor, prometheus, or kafka, postgres, redis")],
) -> None:
    """Restart one component (and only it): a service waits until its /health answers again."""
    stack = _stack()
    runner = _runner()
    components: dict[str, Component] = {"kafka": stack.kafka, "postgres": stack.postgres, "redis": stack.redis}
    if name in components:
        component = components[name]
        component.stop()
        component.start()
        pid = component.process.pid()
    elif name == "supervisor":
        runner.stop_supervisor()
        pid = runner.start_supervisor()
    elif name == PROMETHEUS:
        _prometheus().stop()
        _start_monitoring()
        pid = _prometheus().process.pid()
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
    configure_logging("supervisor")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    Supervisor(_runner(), interval=interval, unhealthy_after=unhealthy_after).run(stop)


@app.command()
@friendly
def logs(
    service: Annotated[str, typer.Argument(help="a service, the supervisor, prometheus, or kafka, postgres, redis")],
    lines: Annotated[int, typer.Option("-n", help="lines to show")] = 50,
    follow: Annotated[bool, typer.Option("-f", "--follow", help="keep following")] = False,
) -> None:
    """Tail a service's or a stack component's log."""
    stack = _stack()
    runner = _runner()
    components = {
        "kafka": stack.kafka.process,
        "postgres": stack.postgres.process,
        "redis": stack.redis.process,
        "supervisor": runner.supervisor(),
        PROMETHEUS: _prometheus().process,
    }
    proc = components.get(service) or runner.process(runner.get(service))
    if not proc.log_file.exists():
        raise StackError(f"no log yet for {service} ({proc.log_file})")
    cmd = ["tail", "-n", str(lines), *(["-F"] if follow else []), str(proc.log_file)]
    sys.exit(subprocess.call(cmd))


@app.command("midtrans-sim")
def midtrans_sim(port: Annotated[int | None, typer.Option(help="default: OGP_MIDTRANS_SIM_PORT")] = None) -> None:
    """Run the Midtrans simulator (Snap, payment page, Core API, signed notifications) in the foreground."""
    settings = get_settings()
    configure_logging("midtrans-sim")
    port = port or settings.midtrans_sim_port
    console.print(f"Midtrans simulator on http://{settings.host}:{port}; notifications to {settings.midtrans_webhook}")
    uvicorn.run(create_simulator(settings), host=settings.host, port=port, access_log=False)
