"""`ogp`: the command line, and the composition root that names the components it drives.

Shared commands (migrations, topics) come from this package; the operator commands that belong to a service
(audit the ledger, rebuild a read model, create an admin) call into that service; the local stack's commands
come from ``infra.local.cli``. This module is the one place in ``ogp`` allowed to import a service
(the import contracts in pyproject.toml say so): everything else in ``ogp`` is shared and imports none.
"""

from __future__ import annotations

import asyncio
import getpass
import json
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn
from rich.table import Table
from sqlalchemy import create_engine

from command_api import dead_letters
from command_api.identity.service import create_admin
from command_api.midtrans.adapter import MidtransGateway
from command_api.midtrans.reconcile import Report, reconcile
from infra.local import cli as local_cli
from ledger_processor.audit import audit, audit_databases
from ledger_processor.chain_audit import audit_chain, audit_chains, missing, published_checkpoints, read_checkpoints
from ogp.clients import KafkaProducerManager, async_engine
from ogp.console import console, err, friendly
from ogp.db.ledger_engines import LedgerEngines
from ogp.db.shards import LedgerShards
from ogp.errors import ApiError
from ogp.provision import create_topics, migrate_database
from ogp.settings import get_settings
from projections.access_logs.projector import rebuild as rebuild_access_logs
from projections.export.exporter import DEFAULT_CHUNK, ExportRequest, export, parse_offsets, parse_time, topic_name
from projections.history.projector import rebuild as rebuild_history
from projections.payments.projector import rebuild as rebuild_payments

app = typer.Typer(
    help="One Gate Payment: local stack, services and operations.", no_args_is_help=True, pretty_exceptions_enable=False
)
# The local stack's commands (up, down, status, restart, logs, supervise, midtrans-sim, stack ...) at the top.
app.add_typer(local_cli.app)
admin_app = typer.Typer(help="Operator commands.", no_args_is_help=True)
app.add_typer(admin_app, name="admin")
projections_app = typer.Typer(help="Read models built from the ledger's events.", no_args_is_help=True)
app.add_typer(projections_app, name="projections")
events_app = typer.Typer(help="The topics' records, for analysts.", no_args_is_help=True)
app.add_typer(events_app, name="events")
dlq_app = typer.Typer(help="Dead letters: what the ledger could not apply, and their redrive.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")


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
    chain: Annotated[
        bool,
        typer.Option(
            "--chain",
            help="also verify the tamper-evident chain: every partition's links, every transaction and entry "
            "against them, and the checkpoints published to Kafka",
        ),
    ] = False,
) -> None:
    """Check the ledger: double entry, balances equal their entries, none negative, nothing stranded."""
    settings = get_settings()
    shards = LedgerShards.from_settings(settings)
    if shards.sharded:
        _audit_ledger_databases(shards, older_than, chain)
        return
    # The checkpoints first: then every one read names a link already committed when the snapshot is taken.
    engine = create_engine(settings.sqlalchemy_url)
    try:
        checkpoints: list = []
        expected: set = set()
        if chain:
            # What the database had published first, then Kafka, then the snapshot: every checkpoint read names
            # a link already committed, and every one published before the read must have been read.
            with engine.connect() as conn:
                expected = published_checkpoints(conn)
            checkpoints = asyncio.run(read_checkpoints(settings.kafka_bootstrap))
            if missing(expected, checkpoints):
                # Read once more before calling any missing: a read that came back short is not a verdict.
                checkpoints = asyncio.run(read_checkpoints(settings.kafka_bootstrap))
        with engine.connect() as conn:
            report = audit(
                conn, timedelta(seconds=older_than), timedelta(seconds=settings.payment_expiry_grace_seconds)
            )
            chain_report = audit_chain(conn, checkpoints, expected) if chain else None
    finally:
        engine.dispose()
    for line in report.lines():
        console.print(f"  {line}")
    console.print("[green]ledger OK[/green]" if report.ok else "[red]ledger INVARIANT VIOLATED[/red]")
    if chain_report is not None:
        for line in chain_report.lines():
            # Unwrapped: a line names ids that a person (or a script) copies whole.
            console.print(f"  {line}", highlight=False, soft_wrap=True)
        console.print("[green]chain OK[/green]" if chain_report.ok else "[red]chain BROKEN[/red]")
    if not report.ok or (chain_report is not None and not chain_report.ok):
        raise typer.Exit(1)


def _audit_ledger_databases(shards: LedgerShards, older_than: int, chain: bool) -> None:
    """``ogp audit`` past one database: each ledger database's part, then all of them together."""
    settings = get_settings()
    engines = {shard.url: create_engine(shard.url) for shard in shards.shards()}
    try:
        checkpoints: list = []
        expected: set = set()
        if chain:
            # As with one database: what each database had published, then Kafka, then the snapshots.
            for engine in engines.values():
                with engine.connect() as conn:
                    expected |= published_checkpoints(conn)
            checkpoints = asyncio.run(read_checkpoints(settings.kafka_bootstrap))
            if missing(expected, checkpoints):
                checkpoints = asyncio.run(read_checkpoints(settings.kafka_bootstrap))
        with ExitStack() as stack:
            databases = [(shard, stack.enter_context(engines[shard.url].connect())) for shard in shards.shards()]
            report = audit_databases(
                databases,
                shards,
                timedelta(seconds=older_than),
                timedelta(seconds=settings.payment_expiry_grace_seconds),
            )
            chain_reports = audit_chains(databases, shards, checkpoints, expected) if chain else []
    finally:
        for engine in engines.values():
            engine.dispose()
    for line in report.lines():
        console.print(f"  {line}", highlight=False, soft_wrap=True)
    console.print("[green]ledger OK[/green]" if report.ok else "[red]ledger INVARIANT VIOLATED[/red]")
    for label, chain_report in chain_reports:
        console.print(f"  chain of {label if label != 'all' else 'all ledger databases together'}:")
        for line in chain_report.lines():
            console.print(f"    {line}", highlight=False, soft_wrap=True)
    if chain_reports:
        chain_ok = chain_reports[-1][1].ok
        console.print("[green]chain OK[/green]" if chain_ok else "[red]chain BROKEN[/red]")
    if not report.ok or (chain_reports and not chain_reports[-1][1].ok):
        raise typer.Exit(1)


class _Bar:
    """A rich progress task as the ``Progress`` a rebuild or an export reports to (``projections.replay``)."""

    def __init__(self, progress: Progress, what: str):
        self.progress = progress
        self.what = what
        self.task = progress.add_task(what, total=None)

    def start(self, total: int, done: int = 0) -> None:
        self.progress.update(self.task, total=total, completed=done)

    def advance(self, count: int) -> None:
        self.progress.advance(self.task, count)


@contextmanager
def _progress_bar(what: str) -> Iterator[_Bar]:
    """A progress bar on stderr (records done of the range, elapsed, remaining); results go to stdout."""
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*columns, TimeRemainingColumn(), console=err) as progress:
        yield _Bar(progress, what)


class ReadModel(StrEnum):
    history = "history"
    payments = "payments"
    access_logs = "access-logs"


@projections_app.command("rebuild")
@friendly
def projections_rebuild(
    name: Annotated[ReadModel, typer.Argument(help="the read model to rebuild", case_sensitive=False)],
) -> None:
    """Rebuild a read model from its topic: history and payments are emptied and replayed from offset 0;
    access-logs replays the 30 days its topic keeps over the table. Safe while the projector runs."""
    settings = get_settings()
    with _progress_bar(f"rebuilding {name.value}") as bar:
        if name is ReadModel.history:
            stats: object = asyncio.run(rebuild_history(settings, progress=bar))
        elif name is ReadModel.payments:
            stats = asyncio.run(rebuild_payments(settings, progress=bar))
        else:
            stats = asyncio.run(rebuild_access_logs(settings, progress=bar))
    console.print(f"  {name.value} rebuilt: {stats}", highlight=False)


@events_app.command("export")
@friendly
def events_export(
    out: Annotated[Path, typer.Option(help="folder for the Parquet part files and _manifest.json; a rerun resumes")],
    topic: Annotated[str, typer.Option(help="ledger-events or commands")] = "ledger-events",
    since: Annotated[
        str | None, typer.Option("--from", help="RFC 3339 time: records whose Kafka timestamp is at or after it")
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="RFC 3339 time: records before it (exclusive)")] = None,
    from_offset: Annotated[
        list[str] | None, typer.Option(help="first offset: OFFSET for every partition, or PARTITION:OFFSET (repeat)")
    ] = None,
    to_offset: Annotated[
        list[str] | None, typer.Option(help="end offset, exclusive: OFFSET, or PARTITION:OFFSET (repeat)")
    ] = None,
    chunk_size: Annotated[int, typer.Option(min=1, help="records per part file")] = DEFAULT_CHUNK,
) -> None:
    """Write a range of a topic's records to Parquet, one row per record (docs/architecture.md, "Export for
    analysts"); without bounds, everything up to the end now. Killed, the same command resumes."""
    request = ExportRequest(
        topic_name(topic),
        parse_time(since) if since else None,
        parse_time(until) if until else None,
        parse_offsets(from_offset or []),
        parse_offsets(to_offset or []),
    )
    with _progress_bar(f"exporting {request.topic}") as bar:
        result = asyncio.run(export(get_settings(), request, out, chunk_size=chunk_size, progress=bar))
    console.print(
        f"  exported {result.records} records ({result.offsets} offsets in range) of {result.topic} into "
        f"{result.parts} part file(s) in {result.out}, {result.parts_written} written by this run",
        highlight=False,
    )
    if result.records != result.offsets:
        console.print("  [yellow]fewer records than offsets[/yellow]: transaction markers or deleted records")


@app.command("reconcile")
@friendly
def reconcile_orders(
    since: Annotated[
        str | None, typer.Option("--from", help="RFC 3339 time: orders created at or after it (default: all)")
    ] = None,
    until: Annotated[str | None, typer.Option("--to", help="RFC 3339 time: orders created before it")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="the report as JSON on stdout, for machines")] = False,
    heal: Annotated[
        bool, typer.Option(help="append statuses Midtrans has that the ledger lacks; fix read-model rows")
    ] = True,
) -> None:
    """Compare the ledger with Midtrans's status API and the read models for every order of a range; heal what is
    safe, list the rest. Exit status 1 while money differences remain (or Midtrans could not be asked)."""
    settings = get_settings()
    start, end = (parse_time(since) if since else None), (parse_time(until) if until else None)

    async def run(bar: _Bar) -> Report:
        engine = async_engine(settings.sqlalchemy_url, pool_size=2, max_overflow=2)
        ledger = LedgerEngines(LedgerShards.from_settings(settings), engine, async_engine)  # each order's ledger row
        kafka = KafkaProducerManager(settings.kafka_bootstrap, "ogp-reconcile", settings.kafka_append_timeout_seconds)
        if heal:
            await kafka.start(wait=10.0)
        try:
            return await reconcile(
                engine,
                MidtransGateway(settings),
                kafka if heal else None,
                start,
                end,
                heal=heal,
                progress=bar,
                ledger=ledger,
            )
        finally:
            await kafka.close()
            await ledger.dispose()
            await engine.dispose()

    with _progress_bar("reconciling orders") as bar:
        report = asyncio.run(run(bar))
    if as_json:
        typer.echo(json.dumps(report.as_dict(), indent=2))
    else:
        _print_reconcile(report)
    if not report.clean:
        raise typer.Exit(1)


def _print_reconcile(report: Report) -> None:
    table = Table(title=f"{report.orders} orders reconciled", title_justify="left")
    for column in ("order", "difference", "detail", "outcome"):
        table.add_column(column, overflow="fold")
    for d in report.differences:
        outcome = (
            "[green]healed[/green]" if d.healed else ("[red]flagged[/red]" if d.money else "[yellow]flagged[/yellow]")
        )
        table.add_row(d.order_id, d.kind, d.detail, outcome)
    for order_id in report.unverified:
        table.add_row(order_id, "unverified", "Midtrans's status API did not answer", "[red]retry[/red]")
    if table.rows:
        console.print(table)
    money = len(report.unresolved_money)
    if report.clean:
        console.print(f"[green]reconciled[/green]: {len(report.differences)} difference(s), no money difference left")
    else:
        console.print(
            f"[red]{money} money difference(s) left, {len(report.unverified)} order(s) unverified[/red]: "
            'see docs/operations.md, "Reconcile found differences"'
        )


def _dead_letter_line(letter: dead_letters.DeadLetter) -> str:
    state = (
        f"redriven to {letter.redrive.appended_partition}/{letter.redrive.appended_offset}"
        if letter.redrive
        else "FAILED outcome recorded"
        if letter.outcome_recorded
        else "[yellow]waiting for a person[/yellow]"
    )
    return (
        f"  {letter.partition}/{letter.offset}  {letter.at:%Y-%m-%d %H:%M:%S}  {letter.command_type or '?'}  "
        f"{letter.transaction_id or '-'}  {letter.reason}  {state}"
        + (f"  (in {letter.database})" if letter.database else "")
    )


@dlq_app.command("list")
@friendly
def dlq_list(
    waiting: Annotated[bool, typer.Option(help="only those a person still has to act on")] = False,
    limit: Annotated[int, typer.Option(min=1, max=10_000)] = 100,
) -> None:
    """The newest dead letters first: partition/offset, when, type, transaction, reason, state."""

    async def read() -> list[dead_letters.DeadLetter]:
        settings = get_settings()
        engine = async_engine(settings.sqlalchemy_url)
        ledger = LedgerEngines(LedgerShards.from_settings(settings), engine, async_engine)  # every ledger database
        try:
            return await dead_letters.list_dead_letters(engine, waiting_only=waiting, limit=limit, ledger=ledger)
        finally:
            await ledger.dispose()
            await engine.dispose()

    letters = asyncio.run(read())
    for letter in letters:
        console.print(_dead_letter_line(letter), highlight=False)
    console.print(f"  {len(letters)} dead letter(s)")


@dlq_app.command("show")
@friendly
def dlq_show(partition: int, offset: int) -> None:
    """One dead letter: why it failed, its original command, whether it can be redriven."""

    async def read() -> dead_letters.DeadLetter:
        settings = get_settings()
        engine = async_engine(settings.sqlalchemy_url)
        ledger = LedgerEngines(LedgerShards.from_settings(settings), engine, async_engine)  # the partition's database
        try:
            return await dead_letters.get_dead_letter(engine, partition, offset, ledger)
        finally:
            await ledger.dispose()
            await engine.dispose()

    try:
        letter = asyncio.run(read())
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    console.print(_dead_letter_line(letter), highlight=False)
    console.print(f"  reason: {letter.reason}: {letter.detail}", highlight=False)
    console.print(f"  redrivable: {letter.why_not_redrivable or 'yes'}", highlight=False)
    console.print_json(data={"command": letter.command()})


@dlq_app.command("redrive")
@friendly
def dlq_redrive(
    partition: int,
    offset: int,
    note: Annotated[str, typer.Option(help="why it is redriven now (the fix, the ticket)")] = "",
) -> None:
    """Append a dead letter's command to the commands topic again, once its fault is fixed (at most once)."""
    settings = get_settings()

    async def run() -> tuple[dead_letters.DeadLetter, bool]:
        engine = async_engine(settings.sqlalchemy_url)
        ledger = LedgerEngines(LedgerShards.from_settings(settings), engine, async_engine)  # the partition's database
        kafka = KafkaProducerManager(settings.kafka_bootstrap, "ogp-cli-dlq", settings.kafka_append_timeout_seconds)
        await kafka.start(wait=10.0)
        try:
            return await dead_letters.redrive(
                engine, kafka, partition, offset, actor=f"cli:{getpass.getuser()}", note=note, ledger=ledger
            )
        finally:
            await kafka.close()
            await ledger.dispose()
            await engine.dispose()

    try:
        letter, appended = asyncio.run(run())
    except ApiError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from None
    assert letter.redrive is not None, "redrive() returns the dead letter with its redrive"
    where = f"{letter.redrive.appended_partition}/{letter.redrive.appended_offset}"
    console.print(f"  {'redriven' if appended else 'already redriven'}: appended at {where}", highlight=False)


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
        settings = get_settings()
        engine = async_engine(settings.sqlalchemy_url)
        # The admin's wallet account gets its ledger row in its partition's database (OGP_LEDGER_DATABASES).
        ledger = LedgerEngines(LedgerShards.from_settings(settings), engine, async_engine)
        try:
            return await create_admin(engine, username, email, phone, password, ledger)
        finally:
            await ledger.dispose()
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
