"""The front door under real HTTP load: accepted commands/s and latency of pay, transfer, balance, history, webhook.

Usage: .venv/bin/python bench/http_load.py [--users 1000] [--duration 15] [--connections 64] [--workers 2]
       [--rate 1000] [--low-rate 30[,10...]] [--open-duration 15] [--only pay,balance] [--profile SECONDS]
       [--server uvicorn|granian]

Starts PostgreSQL, Kafka (full JIT) and Redis (bench/_stack.py), migrates a fresh database, seeds --users
funded wallets and mints an access token for each, routes top-up orders for the webhook, then runs the
ledger processor, the command API and the query API as ``ogp up`` does (uvicorn, --workers each; or, with
--server granian, under Granian with as many workers, to compare the two). Then:

* closed loop (``wrk``, --connections, scripts in bench/wrk/): the most each endpoint serves; a new
  Idempotency-Key per command, callers rotated over the seeded users. ``GET /health`` first, as the
  same-run baseline of what the server on this machine serves with no work behind it.
* open loop (P3 latency): ``POST /api/payment/pay`` at a fixed --rate from an asyncio + aiohttp driver that
  sends on schedule whether or not earlier answers came, and times each from when it was due (wrk has no
  fixed rate and wrk2 is not in Debian; a closed loop hides queueing behind its own back-pressure).
* the webhook (P7) at concurrency 8, as its target is stated.
* P4, accepted -> posted: the open loop runs first at each --low-rate (default 30/s, about what this stack's
  front door keeps up with), then at --rate, with the history projector running (the status resource,
  ``GET /api/payment/transactions/{id}``, reads its table). For every 202, the time from the command's
  append to the commands topic (its record's timestamp) to the commit of its SUCCESS row in
  historical_transactions (PostgreSQL's commit timestamps: ``track_commit_timestamp`` is on in this bench's
  PostgreSQL), read after the run, so measuring adds no request to the load; beside it the same to the
  ledger's own row, and to the 202's arrival at the driver. Before the timed runs, 20 payments one at a time
  are polled through the status resource every 5 ms, to show the commit timestamps agree with what a client
  sees.

Each figure is printed beside its target, with the load average and the command API's CPU per accepted
command. Finally it waits for the ledger and counts the accepted commands that reached it (SUCCESS), so the
rates measure real work, not answers to requests that were lost. The figures are written to
.ogp/bench/http_load.json for bench/report.py.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import aiohttp
import psycopg

from bench._stack import SERVERS, api_process, infrastructure, worker
from bench.cpu import tree_cpu_seconds
from bench.ledger_throughput import FUNDS, seed
from bench.report import Measurement, save
from bench.webhook_latency import SERVER_KEY, notification
from ledger_processor.sql import conninfo_from_url
from ogp.security.tokens import TokenService
from ogp.settings import Settings
from projections.replay import range_consumer, read_ranges, topic_partitions, whole_topic
from schemas.base import UnknownMessage, decode
from schemas.topics import COMMANDS

WRK_DIR = Path(__file__).resolve().parent / "wrk"


@dataclass
class Figure:
    name: str
    requests: int
    ok: int
    seconds: float
    non2xx: int
    socket_errors: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    load: str
    cpu_ms_per_ok: float | None = None  # the API's own CPU per 2xx answer
    stack_cpu_ms_per_ok: float | None = None  # the API, PostgreSQL, Kafka, Redis and the processor together
    parts_ms_per_ok: dict[str, float] = field(default_factory=dict)  # the same, process by process

    @property
    def ok_rate(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def line(self, target: str) -> str:
        def ms(v: float | None) -> str:
            return f"{v:6.2f}" if v is not None else "     -"

        capacity = f"{CORES * 1000 / self.stack_cpu_ms_per_ok:7.0f}/s" if self.stack_cpu_ms_per_ok else "        -"
        return (
            f"  {self.name:<22} {self.ok_rate:8.0f}/s {self.p50_ms:7.1f} {self.p95_ms:7.1f} {self.p99_ms:7.1f}"
            f"   {self.non2xx + self.socket_errors:6d}  {ms(self.cpu_ms_per_ok)} {ms(self.stack_cpu_ms_per_ok)}"
            f" {capacity}   {self.load:<15} {target}"
        ) + (
            "\n    CPU per 2xx, ms: " + ", ".join(f"{n} {v:.2f}" for n, v in self.parts_ms_per_ok.items())
            if self.parts_ms_per_ok
            else ""
        )


CORES = os.cpu_count() or 1
HEADER = (
    f"  {'endpoint':<22} {'2xx rate':>10} {'p50':>7} {'p95':>7} {'p99':>7}   {'errors':>6}  {'api ms':>6}"
    f" {'all ms':>6} {'capacity':>9}   {'loadavg 1m':<15} target"
)
LEGEND = (
    "  api ms / all ms: CPU per 2xx of the API / of the API, PostgreSQL, Kafka, Redis and the ledger processor\n"
    "  together; capacity: what this machine's cores would serve at that CPU if nothing else ran on them"
)


def loadavg() -> str:
    one, five, _ = Path("/proc/loadavg").read_text().split()[:3]
    return f"{one} ({five} 5m)"


@dataclass(frozen=True)
class Load:
    duration: int  # seconds
    connections: int
    threads: int


@dataclass(frozen=True)
class Watched:
    """Processes whose CPU a run reads: the API's, and the whole stack's (the API's included)."""

    api: int
    stack: tuple[int, ...]
    names: tuple[str, ...] = ()  # one per stack pid: the CPU per 2xx is printed per process too


def wrk(name: str, base: str, script: str, load: Load, watched: Watched | None = None, **env: str) -> Figure:
    """One closed-loop wrk run; its JSON summary line (bench/wrk/lib.lua) made a Figure."""
    duration, connections, threads = load.duration, load.connections, load.threads
    argv = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration}s", "--timeout", "10s"]
    argv += ["-s", str(WRK_DIR / script), base]
    full_env = {
        **os.environ,
        "OGP_WRK_DIR": str(WRK_DIR),
        "OGP_WRK_RUN": uuid.uuid4().hex[:8],
        "OGP_WRK_THREADS": str(threads),
        **env,
    }
    api_before = tree_cpu_seconds(watched.api) if watched else 0.0
    parts_before = [tree_cpu_seconds(p) for p in watched.stack] if watched else []
    out = subprocess.run(argv, env=full_env, capture_output=True, text=True, check=True).stdout
    api_cpu = tree_cpu_seconds(watched.api) - api_before if watched else None
    parts = [tree_cpu_seconds(p) - b for p, b in zip(watched.stack, parts_before, strict=True)] if watched else []
    stack_cpu = sum(parts) if watched else None
    line = next(x for x in out.splitlines() if x.startswith("OGP_WRK "))
    s = json.loads(line.removeprefix("OGP_WRK "))
    return Figure(
        name,
        s["requests"],
        s["ok"],
        s["duration_us"] / 1e6,
        s["non2xx"],
        s["socket_errors"],
        s["p50_us"] / 1000,
        s["p95_us"] / 1000,
        s["p99_us"] / 1000,
        loadavg(),
        api_cpu * 1000 / s["ok"] if api_cpu is not None and s["ok"] else None,
        stack_cpu * 1000 / s["ok"] if stack_cpu is not None and s["ok"] else None,
        {n: c * 1000 / s["ok"] for n, c in zip(watched.names, parts, strict=False)} if watched and s["ok"] else {},
    )


class Posted:
    """P4's notes of one open-loop run: when each accepted command's 202 reached the client, on this machine's
    wall clock (the clock PostgreSQL stamps its commits with)."""

    def __init__(self) -> None:
        self.accepted_at: dict[str, float] = {}

    def accepted(self, transaction_id: str) -> None:
        self.accepted_at[transaction_id] = time.time()


@dataclass
class PostedFigure:
    """P4 of one run, in ms from each accepted command's append to the commands topic."""

    rate: int
    sent: int
    accepted: int
    visible: list[float]  # to the commit of its settled history row (what the status resource reads), sorted
    ledger: list[float]  # to the commit of its ledger row, sorted
    answered: list[float]  # until its 202 reached the load driver, sorted
    not_posted: int  # accepted, but not settled SUCCESS on the status resource when the run was read
    load: str

    def line(self) -> str:
        v, led, a = self.visible, self.ledger, self.answered
        return (
            f"  {self.rate:>6}/s {self.sent:>7} {self.accepted:>8} {len(v):>7} {self.not_posted:>6}"
            f"  {pct(v, 0.5):7.1f} {pct(v, 0.95):7.1f} {pct(v, 0.99):7.1f} {pct(v, 1.0):7.1f}"
            f"  {pct(led, 0.5):7.1f} {pct(led, 0.99):7.1f}  {pct(a, 0.5):7.1f} {pct(a, 0.99):7.1f}"
            f"   {self.load:<15} P4 p99 < 100 ms at 1,000/s"
        )


POSTED_HEADER = (
    f"  {'offered':>8} {'sent':>7} {'accepted':>8} {'posted':>7} {'errors':>6}"
    f"  {'visible on the status resource':<31}  {'ledger commit':<15}  {'202 at client':<15}"
    f"   {'loadavg 1m':<15} target\n"
    f"  {'':>8} {'':>7} {'':>8} {'':>7} {'':>6}  {'p50':>7} {'p95':>7} {'p99':>7} {'max':>7}"
    f"  {'p50':>7} {'p99':>7}  {'p50':>7} {'p99':>7}"
)
POSTED_METHOD = (
    "  accepted -> posted, for every command answered 202: from its append to the commands topic (the record's\n"
    "  timestamp, stamped by the command API's producer at send; acks=all) to the commit of the row the status\n"
    "  resource reads (GET /api/payment/transactions/{id} reads historical_transactions, the history projector's\n"
    "  table; posted = SUCCESS there), from PostgreSQL's commit timestamps (track_commit_timestamp). Both are read\n"
    "  after the run (same machine, same clock): measuring adds no request to the load. 'ledger commit': to the\n"
    "  commit of the ledger's own row. '202 at client': until the answer reached the load driver, the front door's\n"
    "  own delay after the append (P3), not part of P4. errors: accepted, not SUCCESS there 60 s after the run."
)


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile of sorted ``values`` (nearest rank), or NaN when there are none."""
    return values[min(len(values) - 1, int(q * len(values)))] if values else float("nan")


async def appended_at(settings: Settings, ids: set[str]) -> dict[str, float]:
    """When the command API appended each of ``ids`` to the commands topic (epoch seconds): its record's
    timestamp, which the API's producer stamps at send (CreateTime; the API sets none of its own)."""
    consumer = range_consumer(settings, "ogp-bench-p4")
    tps = await topic_partitions(settings, COMMANDS)
    await consumer.start()
    found: dict[str, float] = {}
    try:
        async for chunk in read_ranges(consumer, COMMANDS, await whole_topic(consumer, tps)):
            for record in chunk.records:
                with contextlib.suppress(UnknownMessage):
                    transaction_id = getattr(decode(record.value), "transaction_id", None)
                    if transaction_id in ids:
                        found[transaction_id] = record.timestamp / 1000
    finally:
        await consumer.stop()
    return found


@dataclass(frozen=True)
class Committed:
    """An accepted command's status on the status resource, and when its rows were committed (epoch seconds)."""

    status: str
    visible: float | None  # its history row's current version
    ledger: float | None


def commit_times(settings: Settings, ids: list[str]) -> dict[str, Committed]:
    """For each of ``ids`` in the history: its status there, and when that row's version and the ledger's row
    were committed, from PostgreSQL's commit timestamps."""
    assert settings.database_url is not None
    with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
        rows = conn.execute(
            "SELECT h.transaction_id, h.transaction_status::text, "
            "extract(epoch FROM pg_xact_commit_timestamp(h.xmin))::float8, "
            "extract(epoch FROM pg_xact_commit_timestamp(l.xmin))::float8 "
            "FROM historical_transactions h LEFT JOIN ledger_transactions l USING (transaction_id) "
            "WHERE h.transaction_id = ANY(%s)",
            (ids,),
        ).fetchall()
    return {r[0]: Committed(*r[1:]) for r in rows}


def posted_figure(settings: Settings, rate: int, sent: int, posted: Posted, timeout: float = 60) -> PostedFigure:
    """Wait (up to ``timeout`` s) until every accepted command is settled on the status resource, then read when
    each was appended and when it became visible."""
    ids = list(posted.accepted_at)
    deadline = time.monotonic() + timeout
    while True:
        found = commit_times(settings, ids)
        settled = sum(1 for c in found.values() if c.status != "PENDING")
        if settled >= len(ids) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    appended = asyncio.run(appended_at(settings, set(ids)))
    visible, ledger, answered = [], [], []
    for transaction_id, at in appended.items():
        answered.append((posted.accepted_at[transaction_id] - at) * 1000)
        c = found.get(transaction_id)
        if c is None or c.status != "SUCCESS" or c.visible is None:
            continue
        visible.append((c.visible - at) * 1000)
        if c.ledger is not None:
            ledger.append((c.ledger - at) * 1000)
    return PostedFigure(
        rate, sent, len(ids), sorted(visible), sorted(ledger), sorted(answered), len(ids) - len(visible), loadavg()
    )


async def polled_check(
    command_url: str, query_url: str, users: list[tuple[str, str, str]], n: int
) -> tuple[Posted, Posted]:
    """The method checked against the status resource itself: ``n`` payments one at a time, each polled through
    ``GET /api/payment/transactions/{id}`` every 5 ms until it answers SUCCESS: when each 202 arrived, and when
    each SUCCESS answer arrived (to compare with the commit timestamps)."""
    posted, seen = Posted(), Posted()
    timeout = aiohttp.ClientTimeout(total=10)
    async with (
        aiohttp.ClientSession(command_url, timeout=timeout) as commands,
        aiohttp.ClientSession(query_url, timeout=timeout) as queries,
    ):
        for i in range(n):
            token = users[i % len(users)][0]
            auth = {"Authorization": f"Bearer {token}"}
            async with commands.post(
                "/api/payment/pay",
                json={"amount": "1000.00", "merchant_reference": f"check-{i}"},
                headers={**auth, "Idempotency-Key": f"check-{uuid.uuid4().hex}"},
            ) as reply:
                if reply.status != 202:
                    continue
                transaction_id = (await reply.json())["transaction_id"]
                posted.accepted(transaction_id)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                async with queries.get(f"/api/payment/transactions/{transaction_id}", headers=auth) as answer:
                    if answer.status == 200 and (await answer.json())["status"] == "SUCCESS":
                        seen.accepted(transaction_id)
                        break
                await asyncio.sleep(0.005)
    return posted, seen


def print_polled_check(settings: Settings, posted: Posted, seen: Posted) -> None:
    """The polled answers beside the commit timestamps of the same payments, both from the 202's arrival."""
    found = commit_times(settings, list(seen.accepted_at))
    polled, committed = [], []
    for transaction_id, seen_at in seen.accepted_at.items():
        arrived = posted.accepted_at[transaction_id]
        polled.append((seen_at - arrived) * 1000)
        if (c := found.get(transaction_id)) is not None and c.visible is not None:
            committed.append((c.visible - arrived) * 1000)
    polled.sort()
    committed.sort()
    print(
        f"  method check: {len(polled)} payments one at a time, the status resource polled every 5 ms from the\n"
        f"  202's arrival: it answered SUCCESS after p50 {pct(polled, 0.5):.1f}, max {pct(polled, 1.0):.1f} ms;"
        f" the commit timestamps of the\n  same rows say p50 {pct(committed, 0.5):.1f}, max"
        f" {pct(committed, 1.0):.1f} ms (the difference: the poll's interval and round trip)"
    )


async def paced(
    base: str,
    name: str,
    rate: int,
    duration: int,
    send: Callable[[aiohttp.ClientSession, int], Any],
    max_in_flight: int = 1000,
    answered: Callable[[int, bytes], None] | None = None,
    headers: dict[str, str] | None = None,
) -> Figure:
    """Open loop: request ``i`` (``send(session, i)``, an aiohttp request context) due at ``i / rate`` seconds,
    sent on schedule whether or not earlier answers came; each latency counted from when it was due.

    A request due while ``max_in_flight`` are unanswered is not sent and counts as an error: a server that
    cannot keep up fails the run without a queue of timed-out requests burying the runs after it.
    ``answered(status, body)`` sees every answer."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    errors = 0
    in_flight = 0
    total = rate * duration
    connector = aiohttp.TCPConnector(limit=0, force_close=False)
    timeout = aiohttp.ClientTimeout(total=10)
    async with aiohttp.ClientSession(base, connector=connector, timeout=timeout, headers=headers) as http:

        async def one(i: int, due: float) -> None:
            nonlocal errors, in_flight
            in_flight += 1
            try:
                async with send(http, i) as reply:
                    body = await reply.read()
                    statuses[reply.status] = statuses.get(reply.status, 0) + 1
                    if answered is not None:
                        answered(reply.status, body)
            except (aiohttp.ClientError, TimeoutError):
                errors += 1
                return
            finally:
                in_flight -= 1
            latencies.append(time.perf_counter() - due)

        loop = asyncio.get_running_loop()
        tasks = []
        started = time.perf_counter()
        for i in range(total):
            due = started + i / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if in_flight >= max_in_flight:
                errors += 1
                continue
            tasks.append(loop.create_task(one(i, due)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - started
    latencies.sort()
    ok = sum(n for s, n in statuses.items() if 200 <= s < 300)
    ms = [v * 1000 for v in latencies]
    return Figure(
        name, total, ok, elapsed, total - ok - errors, errors, pct(ms, 0.5), pct(ms, 0.95), pct(ms, 0.99), loadavg()
    )


async def open_loop(
    base: str,
    users: list[tuple[str, str, str]],
    rate: int,
    duration: int,
    max_in_flight: int = 1000,
    posted: Posted | None = None,
) -> Figure:
    """``POST /api/payment/pay`` at ``rate``/s on schedule (``paced``). With ``posted``, each 202 is noted there
    (P4)."""
    run = uuid.uuid4().hex[:8]

    def send(http: aiohttp.ClientSession, i: int) -> Any:
        return http.post(
            "/api/payment/pay",
            data=f'{{"amount": "1000.00", "merchant_reference": "open-{i}"}}',
            headers={
                "Authorization": f"Bearer {users[i % len(users)][0]}",
                "Content-Type": "application/json",
                "Idempotency-Key": f"{run}-{i}",
            },
        )

    def answered(status: int, body: bytes) -> None:
        if posted is not None and status == 202:
            posted.accepted(json.loads(body)["transaction_id"])

    return await paced(base, f"pay @ {rate}/s open loop", rate, duration, send, max_in_flight, answered)


def seed_users(settings: Settings, n: int, data: Path) -> list[tuple[str, str, str]]:
    """``n`` funded wallets; one line per user in ``data``: access token, account id, a peer's account id."""
    assert settings.database_url is not None
    accounts = seed(settings.database_url, n, FUNDS)
    tokens = TokenService.from_settings(settings)
    users = [
        (tokens.issue_access(user_id, False).token, account_id, accounts[(i + 1) % n][1])
        for i, (user_id, account_id) in enumerate(accounts)
    ]
    data.write_text("".join("\t".join(u) + "\n" for u in users))
    return users


def route_orders(settings: Settings, users: list[tuple[str, str, str]], n: int, data: Path) -> None:
    """``n`` routed top-up orders into the seeded wallets, and a signed settlement of each in ``data``."""
    orders = [str(uuid.uuid4()) for _ in range(n)]
    assert settings.database_url is not None
    with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO midtrans_orders (order_id, payment_id, kind, account_id, amount) "
                "VALUES (%s, %s, 'TOPUP', %s, 150000)",
                [(o, o, users[i % len(users)][1]) for i, o in enumerate(orders)],
            )
    data.write_text("".join(notification(o).decode() + "\n" for o in orders))


def accepted_and_posted(settings: Settings) -> tuple[int, int]:
    """Commands the command API accepted (their Idempotency-Key answered 202), and how many the ledger posted."""
    assert settings.database_url is not None
    with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
        row = conn.execute(
            "SELECT count(*), count(t.transaction_id) FROM idempotency_keys k LEFT JOIN ledger_transactions t "
            "ON t.transaction_id = k.transaction_id AND t.status = 'SUCCESS' "
            "WHERE k.state = 'DONE' AND k.response_status = 202"
        ).fetchone()
    assert row is not None, "an aggregate returns one row"
    return int(row[0]), int(row[1])


def settle(settings: Settings, timeout: float = 600) -> tuple[int, int]:
    """Wait until the ledger has posted every accepted command, or stops moving for 30 s; (accepted, posted)."""
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while True:
        accepted, posted = accepted_and_posted(settings)
        if posted >= accepted or time.monotonic() > deadline or still >= 30:
            return accepted, posted
        still = still + 1 if posted == last else 0
        last = posted
        time.sleep(1)


def projected(settings: Settings, timeout: float = 600) -> None:
    """Wait until the history projector has caught up with the ledger (its rows stop lagging the ledger's)."""
    assert settings.database_url is not None
    deadline = time.monotonic() + timeout
    last, still = -1, 0
    while time.monotonic() < deadline and still < 10:
        with psycopg.connect(conninfo_from_url(settings.database_url)) as conn:
            row = conn.execute(
                "SELECT (SELECT count(*) FROM ledger_transactions WHERE partition >= 0), "
                "(SELECT count(*) FROM historical_transactions)"
            ).fetchone()
        assert row is not None, "a SELECT without FROM returns one row"
        if row[1] >= row[0]:
            return
        still = still + 1 if row[1] == last else 0
        last = row[1]
        time.sleep(1)


@contextlib.contextmanager
def profiled(pid: int, seconds: int, out: str) -> Iterator[None]:
    """py-spy (raw, collapsed stacks, subprocesses too) on ``pid`` for ``seconds`` of what runs inside."""
    if not seconds:
        yield
        return
    # Beside this interpreter when not on PATH: the venv's bin is where `pip install py-spy` puts it.
    spy_binary = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    argv = [spy_binary, "record", "-d", str(seconds), "-r", "200", "-s", "-f", "raw", "-o", out, "-p", str(pid)]
    spy = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        spy.wait(120)
    print(f"py-spy profile: {out}", flush=True)


def measurements(figures: list[tuple[Figure, str]], posted: list[PostedFigure], rate: int) -> list[Measurement]:
    """The run's figures for bench/report.py, each with the same run's baseline: the server's ``GET /health``."""
    health = next((f for f, _ in figures if f.name.startswith("GET /health")), None)
    baseline = f"GET /health {health.ok_rate:,.0f}/s" if health else ""
    # By name (see run()): figure, key, what, what the value is, target (op, bound).
    closed: dict[str, tuple[str, str, str, str | None, float | None]] = {
        "POST pay": ("P3", "pay", "accepted/s, POST pay (wrk closed loop)", ">=", 2000),
        "POST transfer": ("P3", "transfer", "accepted/s, POST transfer (wrk closed loop)", None, None),
        "GET balance": ("P6", "balance", "balance reads/s (wrk closed loop)", ">=", 3000),
        "GET history (20)": ("P6", "history", "history reads/s, 20 rows (wrk closed loop)", None, None),
    }
    out = []
    for f, _ in figures:
        errors = f.non2xx + f.socket_errors
        cpu = f"; API CPU {f.cpu_ms_per_ok:.1f} ms per 2xx" if f.cpu_ms_per_ok is not None else ""
        if f.name in closed:
            figure, key, what, op, bound = closed[f.name]
            what += f", p99 {f.p99_ms:,.0f} ms, {errors} errors"
            out.append(Measurement(figure, what, f.ok_rate, "/s", op, bound, baseline + cpu, f.load, key))
        elif f.name.startswith("POST webhook"):
            what = f"webhook p99 at concurrency 8 ({f.ok_rate:,.0f}/s, {errors} errors)"
            out.append(Measurement("P7", what, f.p99_ms, "ms", "<", 50, baseline + cpu, f.load, "webhook"))
        elif f.name.startswith("pay @"):
            what = f"{f.name}: p99 from due ({f.ok_rate:,.0f}/s accepted, {errors} errors of {f.requests:,})"
            at = f.name == f"pay @ {rate}/s open loop"  # P3's latency target is stated at --rate
            key = f"open@{f.name.split()[2]}"
            out.append(
                Measurement("P3", what, f.p99_ms, "ms", "<" if at else None, 20 if at else None, baseline, f.load, key)
            )
            if at:
                out.append(Measurement("P3", f"{f.name}: errors", errors, "", "==", 0, "", f.load, key + ":errors"))
    for p in posted:
        what = f"accepted -> visible p99, pay offered at {p.rate:,}/s ({p.accepted:,} accepted of {p.sent:,})"
        limit = (
            f"p50 {pct(p.visible, 0.5):.1f}, max {pct(p.visible, 1.0):.1f} ms; ledger commit p99 "
            f"{pct(p.ledger, 0.99):.1f} ms; 202 at client p99 {pct(p.answered, 0.99):,.0f} ms; "
            f"{p.not_posted} not posted"
        )
        value = pct(p.visible, 0.99) if p.visible else None
        out.append(Measurement("P4", what, value, "ms", "<", 100, limit, p.load, f"posted@{p.rate}"))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--duration", type=int, default=15, help="seconds per closed-loop run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="server workers per API (default: the cores)")
    parser.add_argument("--server", choices=SERVERS, default="uvicorn", help="the APIs' HTTP server")
    parser.add_argument("--rate", type=int, default=1000, help="open-loop requests/s for P3's latency")
    parser.add_argument("--open-duration", type=int, default=15, help="seconds per open-loop run")
    parser.add_argument(
        "--low-rate",
        default="30",
        help="open-loop runs at these rates first, comma-separated (P4 where the API keeps up); 0: none",
    )
    parser.add_argument("--only", default="health,pay,transfer,balance,history,webhook,open")
    parser.add_argument("--profile", type=int, default=0, help="py-spy the API for N s of each endpoint's run")
    parser.add_argument("--profile-out", default="/tmp/ogp-http-load", help="py-spy's raw output: PREFIX-pay.txt...")
    parser.add_argument("--no-processor", action="store_true", help="accept only (the ledger is not run)")
    args = parser.parse_args()
    only = set(args.only.split(","))
    tmp = Path(tempfile.mkdtemp(prefix="ogp-bench-http-"))
    try:
        return run(args, only, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def run(args: argparse.Namespace, only: set[str], tmp: Path) -> int:
    users_file, hooks_file = tmp / "users.tsv", tmp / "webhooks.tsv"
    figures: list[tuple[Figure, str]] = []
    with infrastructure("http", commit_timestamps=True, midtrans_confirm_status=False) as infra:
        settings = infra.settings
        # INFO, as `ogp up` runs them: each accepted command writes its JSON log line, a cost of every answer.
        logged = {"OGP_LOG_LEVEL": "INFO"}
        env = {"MIDTRANS_SERVER_KEY": SERVER_KEY, "OGP_MIDTRANS_CONFIRM_STATUS": "false", **logged}
        users = seed_users(settings, args.users, users_file)
        route_orders(settings, users, 60_000 if "webhook" in only else 0, hooks_file)
        print(f"seeded {len(users)} wallets; load average {loadavg()}; {CORES} cores", flush=True)
        with contextlib.ExitStack() as stack:
            pids = list(infra.pids.values())
            if not args.no_processor:
                processor = stack.enter_context(
                    worker("ledger_processor", settings, tmp / "run", OGP_EMONEY_LIMITS_ENABLED="false")
                )
                pids.append(processor.process.pid() or 0)

            def api(app: str, log: str, **app_env: str):  # as `ogp up` runs it, under --server
                served = api_process(app, settings, workers=args.workers, log=tmp / log, server=args.server, **app_env)
                return stack.enter_context(served)

            commands = api("command_api.app:create_app", "cmd.log", **env)
            queries = api("query_api.app:create_app", "query.log", **logged)
            data = str(users_file)
            w = Load(args.duration, args.connections, args.threads)
            names = (*infra.pids, *(() if args.no_processor else ("processor",)))
            on_commands = Watched(commands.pid, (*pids, commands.pid), (*names, "API"))
            on_queries = Watched(queries.pid, (*pids, queries.pid), (*names, "API"))
            # Warm-up: connection pools filled, the producer's metadata, the first request of every route.
            warm = Load(3, args.connections, args.threads)
            wrk("warm-up", commands.url, "pay.lua", warm, OGP_WRK_DATA=data)
            wrk("warm-up", queries.url, "read.lua", warm, OGP_WRK_DATA=data, OGP_WRK_PATH="/api/payment/balance")
            if "health" in only:
                f = wrk("GET /health (command)", commands.url, "health.lua", w, on_commands)
                figures.append((f, f"baseline: {args.server} with no work"))

            def spied(api, name: str):  # --profile: py-spy on the API while it serves this endpoint's run
                return profiled(api.pid, args.profile, f"{args.profile_out}-{name}.txt")

            if "pay" in only:
                with spied(commands, "pay"):
                    f = wrk("POST pay", commands.url, "pay.lua", w, on_commands, OGP_WRK_DATA=data)
                figures.append((f, "P3 >= 2,000/s accepted"))
            if "transfer" in only:
                with spied(commands, "transfer"):
                    f = wrk("POST transfer", commands.url, "transfer.lua", w, on_commands, OGP_WRK_DATA=data)
                figures.append((f, "(as pay)"))
            if "balance" in only:
                path = "/api/payment/balance"
                with spied(queries, "balance"):
                    f = wrk("GET balance", queries.url, "read.lua", w, on_queries, OGP_WRK_DATA=data, OGP_WRK_PATH=path)
                figures.append((f, "P6 >= 3,000/s"))
            if "history" in only:
                path = "/api/payment/transactions?limit=20"
                with spied(queries, "history"):
                    f = wrk(
                        "GET history (20)", queries.url, "read.lua", w, on_queries, OGP_WRK_DATA=data, OGP_WRK_PATH=path
                    )
                figures.append((f, "(P6 names no figure)"))
            if "webhook" in only:
                c8 = Load(args.duration, 8, 2)
                with spied(commands, "webhook"):
                    f = wrk(
                        "POST webhook (c=8)",
                        commands.url,
                        "webhook.lua",
                        c8,
                        on_commands,
                        OGP_WRK_DATA=str(hooks_file),
                    )
                figures.append((f, "P7 p99 < 50 ms at concurrency 8"))
            posted_figures: list[PostedFigure] = []
            if "open" in only:  # last: a server that cannot keep up leaves a queue behind
                measure_posted = not args.no_processor
                if measure_posted:  # P4: the status resource reads the history projector's table
                    settle(settings)
                    stack.enter_context(worker("projections.history", settings, tmp / "run"))
                    projected(settings)
                    check = asyncio.run(polled_check(commands.url, queries.url, users, 20))
                low = [int(r) for r in args.low_rate.split(",") if int(r)]
                for rate in [*low, args.rate]:
                    notes = Posted() if measure_posted else None
                    f = asyncio.run(open_loop(commands.url, users, rate, args.open_duration, posted=notes))
                    target = f"P3 p99 < 20 ms at {args.rate:,}/s, no errors" if rate == args.rate else "(P4's low rate)"
                    figures.append((f, target))
                    if notes is not None:
                        posted_figures.append(posted_figure(settings, rate, f.requests, notes))
            print(
                f"\nfront door: {args.workers} {args.server} worker(s) per API; closed loop wrk -t{args.threads}"
                f" -c{args.connections}, {args.duration} s a run; latencies in ms"
            )
            print(HEADER)
            for f, target in figures:
                print(f.line(target))
            print(LEGEND)
            if posted_figures:
                print(f"\nP4 accepted -> posted, open loop of POST pay, {args.open_duration} s a rate; ms")
                print(POSTED_HEADER)
                for p in posted_figures:
                    print(p.line())
                print(POSTED_METHOD)
                print_polled_check(settings, *check)
            # Another server's figures apart: bench/report.py's http_load figures are the ones `ogp up` serves with.
            name = "http_load" if args.server == SERVERS[0] else f"http_load-{args.server}"
            save(name, measurements(figures, posted_figures, args.rate))
            if not args.no_processor:
                accepted, posted = settle(settings)
                verdict = "every one" if posted == accepted else f"{accepted - posted} NOT POSTED"
                print(f"\nledger: of {accepted} commands the API accepted, {posted} are posted SUCCESS: {verdict}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
